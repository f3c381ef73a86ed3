"""The renderer the worker calls: a message key and a reader to the bytes of their copy.

``Renderer`` turns ``campaign:NAME``, ``sequence:NAME:STEP_ID`` and ``system:KIND[:SUFFIX]`` into
content (read once per version of its file: the loaders cache it), builds the reader's signed
links from ``NEWSLETTER_BASE_URL`` and the instance secret, and calls ``templates.render`` with
the delivery's Message-ID. ``plain_render`` (a small text message) serves tests and benchmarks.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from campaigns import Sequence, load_campaign, load_sequence, system_email
from campaigns.sequence import SEQUENCES_DIR
from newsletter.db import Database
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler.deliveries import ClaimedDelivery, Recipient, State
from scheduler.smtp import SmtpReady
from subscribers.tokens import Purpose, signed_url
from templates import Content, Links, Reader, render

_FILLER = b"This line pads the message to the size a real newsletter has, for measurements.\r\n"


def plain_render(
    delivery: ClaimedDelivery, subscriber: Recipient, *, sender: str, size: int = 0
) -> bytes:
    """A plain-text message for ``subscriber``, padded with filler lines to about ``size`` bytes."""
    head = (
        f"From: {sender}\r\n"
        f"To: {subscriber.email}\r\n"
        f"Subject: {delivery.message}\r\n"
        f"Date: {_date_now()}\r\n"
        f"Message-ID: {delivery.message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"Hello, this is {delivery.message}.\r\n"
    ).encode()
    filler = _filler(max(0, size - len(head)))
    unpaired = head.replace(b"\r\n", b"")
    if b"\r" in unpaired or b"\n" in unpaired or b"\n." in head:
        return head + filler  # a value broke a line: the sender normalises it
    return SmtpReady(head + filler)  # CRLF lines, none starting with a dot: no scan needed


@functools.lru_cache(maxsize=64)
def _filler(missing: int) -> bytes:
    """Whole filler lines covering ``missing`` bytes (made once per size: it is the same text,
    CRLF lines none of which starts with a dot)."""
    return _FILLER * (missing // len(_FILLER) + (1 if missing else 0))


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The ``Date`` header's value, formatted once a second rather than once a message."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, localtime=False))
    return _date_cache[1]


def placeholder_render(
    settings: Settings, size: int = 0
) -> Callable[[ClaimedDelivery, Recipient], bytes]:
    """A ``plain_render`` callable, for benchmarks that measure the sender alone."""

    def render(delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        return plain_render(delivery, subscriber, sender=settings.sender, size=size)

    return render


# Deliveries that carry the free report: a reader who got one of them has the report.
REPORT_MESSAGES = ("system:welcome", "sequence:welcome:welcome-report")


_sequences: dict[str, tuple[int, Sequence]] = {}


def _sequence(name: str) -> Sequence:
    """``load_sequence(name)``, parsed once per version of its file (not once per reader)."""
    try:
        stamp = (SEQUENCES_DIR / f"{name}.yaml").stat().st_mtime_ns
    except OSError:
        return load_sequence(name)  # it raises the error that names the problem
    cached = _sequences.get(name)
    if cached is None or cached[0] != stamp:
        cached = (stamp, load_sequence(name))
        _sequences[name] = cached
    return cached[1]


def content_for(message: str, root: Path | None = None) -> Content:
    """The content of a message key; ``NotFoundError`` for a key of no known kind."""
    kind, _, rest = message.partition(":")
    if kind == "campaign" and rest:
        return load_campaign(rest, root).content
    if kind == "sequence" and rest.count(":") >= 1:
        name, _, step_id = rest.partition(":")
        return _sequence(name).step(step_id).content(root)
    if kind == "system" and rest:
        return system_email(rest.partition(":")[0], root)
    raise NotFoundError(
        f"message {message!r}: expected campaign:NAME, sequence:NAME:STEP or system:KIND"
    )


class Renderer:
    """The worker's ``Render``: each reader's real copy of each message."""

    def __init__(
        self, settings: Settings, database: Database, *, content_root: Path | None = None
    ) -> None:
        self.settings = settings
        self.database = database
        self.secret_key = database.secret_key(settings)
        self.content_root = content_root
        postgres = database.url.startswith("postgres")
        self._engine = create_engine(
            database.url,
            poolclass=NullPool,
            connect_args=(
                {"autocommit": True} if postgres else {"check_same_thread": False, "timeout": 60}
            ),
        )
        self._local = threading.local()
        self._connections: list[Any] = []  # DBAPI connections, one a sender thread
        messages = ", ".join(f"'{message}'" for message in REPORT_MESSAGES)
        self._report_sql = (
            f"SELECT 1 FROM deliveries WHERE subscriber_id = {'%s' if postgres else '?'} "
            f"AND message IN ({messages}) AND state = '{State.SENT.value}' LIMIT 1"
        )

    def __call__(self, delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        content = content_for(delivery.message, self.content_root)
        has_report = content.offer is not None and self.has_report(subscriber.id)
        reader = Reader(
            email=subscriber.email,
            name=subscriber.name,
            attributes=subscriber.attributes,
            tags=subscriber.tags,
            timezone=subscriber.timezone,
            has_report=has_report,
        )
        return render(
            content,
            reader,
            self.links(subscriber.key, content),
            message_id=delivery.message_id,
            settings=self.settings,
        )

    def links(self, key: str, content: Content) -> Links:
        def link(purpose: Purpose) -> str:
            return signed_url(self.settings.base_url, self.secret_key, purpose, key)

        return Links(
            unsubscribe=link(Purpose.UNSUBSCRIBE),
            preferences=link(Purpose.PREFERENCES),
            report=link(Purpose.REPORT),
            confirm=link(Purpose.CONFIRM),
            web_version=content.web_url,
        )

    def has_report(self, subscriber_id: int) -> bool:
        """True once a delivery carrying the free report was sent to the reader.

        Read outside any transaction, on a driver connection of the calling thread's own: on
        SQLite a session would take the write lock for each reader, and SQLAlchemy's execution
        around a point lookup costs ten times the lookup.
        """
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._engine.raw_connection()
            self._local.connection = connection
            self._connections.append(connection)
        cursor = connection.cursor()
        try:
            cursor.execute(self._report_sql, (subscriber_id,))
            return cursor.fetchone() is not None
        finally:
            cursor.close()

    def close(self) -> None:
        """Close the lookup connections (the worker's threads have stopped)."""
        for connection in self._connections:
            connection.close()
        self._connections.clear()
        self._engine.dispose()
