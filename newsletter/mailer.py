"""The shell's answer to the store's events: render the system emails and send them.

Runs one background thread per process so that a signup request never waits on SMTP.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import smtplib
import threading
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import unquote, urlsplit

from newsletter.db import Database, utcnow
from newsletter.settings import Settings
from subscribers.models import Subscriber
from subscribers.tokens import Purpose, signed_url

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
            message = self._build(kind, subscriber_id)
            if message is None:
                continue
            for attempt in range(1, SEND_ATTEMPTS + 1):
                try:
                    connection = connection or open_smtp(self.settings)
                    connection.send_message(message)
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

    def _build(self, kind: str, subscriber_id: int) -> EmailMessage | None:
        with self.database.session() as session:
            subscriber = session.get(Subscriber, subscriber_id)
            if subscriber is None:
                return None
            return self._system_email(kind, subscriber)

    def _system_email(self, kind: str, subscriber: Subscriber) -> EmailMessage:
        def link(purpose: Purpose) -> str:
            return signed_url(self.settings.base_url, self.secret_key, purpose, subscriber.key)

        greeting = f"Hello {subscriber.name}," if subscriber.name else "Hello,"
        if kind == "confirmation":
            subject = "Confirm your subscription to get your free report"
            body = (
                f"{greeting}\n\nPlease confirm your subscription to the Gut Health Letter:\n\n"
                f"{link(Purpose.CONFIRM)}\n\nIf you did not ask for this, ignore this email.\n"
            )
        else:
            subject = "Your free report: The 7 Core Strategies to Heal the Gut Lining"
            body = (
                f"{greeting}\n\nThank you for confirming. Download your report here:\n\n"
                f"{link(Purpose.REPORT)}\n"
            )
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = subscriber.email
        message["Subject"] = subject
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = make_msgid(domain=self.settings.sender_address.split("@")[-1])
        message["List-Unsubscribe"] = f"<{link(Purpose.UNSUBSCRIBE)}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(
            body + f"\n--\n{self.settings.postal_address}\n"
            f"Unsubscribe: {link(Purpose.UNSUBSCRIBE)}\n"
        )
        return message
