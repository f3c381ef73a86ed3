"""The shell's answer to the store's events: render the system emails and send them.

Runs one background thread per process so that a signup request never waits on SMTP.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import smtplib
import threading
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from campaigns import system_email
from newsletter.db import Database
from newsletter.settings import Settings
from subscribers.models import Subscriber
from subscribers.tokens import Purpose, signed_url
from templates import Links, Reader, render

log = logging.getLogger("newsletter.mailer")
SEND_ATTEMPTS = 3


def open_smtp(settings: Settings, timeout: float = 30) -> smtplib.SMTP:
    """A connection to ``NEWSLETTER_SMTP_URL``, or to the capture inbox when none is set."""
    if settings.smtp_url is None:
        return smtplib.SMTP("127.0.0.1", settings.capture_port, timeout=timeout)
    url = urlsplit(settings.smtp_url)
    host = url.hostname or "localhost"
    if url.scheme == "smtps":
        connection: smtplib.SMTP = smtplib.SMTP_SSL(host, url.port or 465, timeout=timeout)
    else:
        connection = smtplib.SMTP(host, url.port or 25, timeout=timeout)
        if url.scheme == "smtp+starttls":
            connection.starttls()
    if url.username:
        connection.login(unquote(url.username), unquote(url.password or ""))
    return connection


class Mailer:
    """Implements ``SubscriberEvents``: queues system emails and sends them in the background."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.secret_key = database.secret_key(settings)
        self.jobs: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="mailer", daemon=True)
        self.thread.start()

    def confirmation_requested(self, subscriber_id: int) -> None:
        self.jobs.put(("confirmation", subscriber_id))

    def confirmed(self, subscriber_id: int) -> None:
        self.jobs.put(("welcome", subscriber_id))

    def unsubscribed(self, subscriber_id: int) -> None:
        """Nothing is sent: an unsubscribed reader gets no more email, not even a goodbye."""

    def close(self, timeout: float = 10) -> None:
        """Send what is queued, then stop the thread."""
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join(timeout)

    def _run(self) -> None:
        connection: smtplib.SMTP | None = None
        while (job := self.jobs.get()) is not None:
            kind, subscriber_id = job
            prepared = self._build(kind, subscriber_id)
            if prepared is None:
                continue
            recipient, raw = prepared
            for attempt in range(1, SEND_ATTEMPTS + 1):
                try:
                    connection = connection or open_smtp(self.settings)
                    connection.sendmail(self.settings.sender_address, [recipient], raw)
                    log.info("sent system email kind=%s subscriber=%s", kind, subscriber_id)
                    break
                except (smtplib.SMTPException, OSError) as error:
                    connection = None
                    log.warning(
                        "system email failed kind=%s subscriber=%s attempt=%s error=%s",
                        kind,
                        subscriber_id,
                        attempt,
                        error,
                    )
        if connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()

    def _build(self, kind: str, subscriber_id: int) -> tuple[str, bytes] | None:
        with self.database.session() as session:
            subscriber = session.get(Subscriber, subscriber_id)
            if subscriber is None:
                return None
            return subscriber.email, self._system_email(kind, subscriber)

    def _system_email(self, kind: str, subscriber: Subscriber) -> bytes:
        def link(purpose: Purpose) -> str:
            return signed_url(self.settings.base_url, self.secret_key, purpose, subscriber.key)

        reader = Reader(
            email=subscriber.email,
            name=subscriber.name,
            attributes=dict(subscriber.attributes or {}),
            tags=tuple(subscriber.tag_names),
            timezone=subscriber.timezone,
        )
        links = Links(
            unsubscribe=link(Purpose.UNSUBSCRIBE),
            preferences=link(Purpose.PREFERENCES),
            report=link(Purpose.REPORT),
            confirm=link(Purpose.CONFIRM),
        )
        domain = self.settings.sender_address.rsplit("@", 1)[-1]
        return render(
            system_email(kind),
            reader,
            links,
            message_id=make_msgid(domain=domain),
            settings=self.settings,
        )
