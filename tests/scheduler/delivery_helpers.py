"""Helpers for the delivery tests: readers in bulk, a renderer, and an SMTP server that
misbehaves on purpose."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from typing import Any

from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import insert

from newsletter.db import Database, utcnow
from scheduler.deliveries import ClaimedDelivery, Recipient
from scheduler.rendering import plain_render
from scheduler.worker import Render, WorkerOptions
from subscribers.models import Status, Subscriber
from tests.conftest import RecordingHandler

SENDER = "Gut Health Letter <news@example.org>"
# Short times, so that retries and lease expiries happen within a test.
FAST = WorkerOptions(
    lease=timedelta(seconds=2),
    poll_interval=0.02,
    retry_base=0.01,
    retry_cap=0.2,
    commit_interval=0.01,
    until_idle=True,
)


def reader_address(n: int) -> str:
    return f"reader{n}@example.com"


def add_readers(
    database: Database, count: int, *, status: str = Status.CONFIRMED, start: int = 0
) -> list[int]:
    """Insert ``count`` readers in one statement; returns their ids in order."""
    now = utcnow()
    rows = [
        {
            "email": reader_address(n),
            "key": f"k{n}",
            "status": status,
            "attributes": {},
            "created_at": now,
            "status_changed_at": now,
        }
        for n in range(start, start + count)
    ]
    with database.session() as session:
        session.execute(insert(Subscriber), rows)
        ids = session.scalars(
            Subscriber.__table__.select()
            .with_only_columns(Subscriber.id)
            .where(Subscriber.email.in_([row["email"] for row in rows]))
            .order_by(Subscriber.id)
        ).all()
    return list(ids)


def make_render() -> Render:
    def render(delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        return plain_render(delivery, subscriber, sender=SENDER)

    return render


def message_id_of(raw: bytes) -> str:
    return str(message_from_bytes(raw)["Message-ID"])


@dataclass
class SlowHandler(RecordingHandler):
    """Takes ``delay`` seconds over each message and counts how many it is taking at once."""

    delay: float = 0.2
    taking: int = 0
    most_at_once: int = 0

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.taking += 1
            self.most_at_once = max(self.most_at_once, self.taking)
        await asyncio.sleep(self.delay)
        with self.lock:
            self.taking -= 1
        return await super().handle_DATA(server, session, envelope)


# ---------------------------------------------------------------- servers that offer PIPELINING


class Pipelining:
    """Mixed into an aiosmtpd handler: offers PIPELINING (RFC 2920), as postfix and real relays
    do, and counts what the client sent ahead of the replies (aiosmtpd reads in order anyway).

    ``envelopes_ahead``: MAIL commands whose RCPT had already arrived; ``messages_ahead``:
    messages followed, in the same burst, by the next MAIL (one round trip a message).
    """

    envelopes_ahead = 0
    messages_ahead = 0

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    def count_ahead(self, server: Any, command: bytes) -> bool:
        """True when ``command`` is already waiting in the server's read buffer."""
        return bytes(server._reader._buffer).startswith(command)


@dataclass
class PipeliningHandler(Pipelining, RecordingHandler):
    """A well-behaved server that offers PIPELINING and keeps every message."""

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.envelopes_ahead += self.count_ahead(server, b"RCPT TO:")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.messages_ahead += self.count_ahead(server, b"MAIL FROM:")
        return await super().handle_DATA(server, session, envelope)


# ---------------------------------------------------------------- a misbehaving SMTP server


@dataclass
class FaultyHandler(Pipelining):
    """Answers at random (seeded): 421 or 451 now and then, 550 for some recipients, dropped
    connections before and after taking the message, slow replies. Logs what it decided.
    Offers PIPELINING unless ``pipelining`` is False."""

    seed: int = 5
    temporary: float = 0.06  # each of MAIL, RCPT and DATA: 421 or 451
    bounce: float = 0.03  # RCPT: 550, for a recipient who has not received the message
    drop: float = 0.03  # drop the connection instead of answering the message
    drop_after_accept: float = 0.01  # take the message, then drop before the 250
    slow: float = 0.02  # answer RCPT after 50 to 200 ms
    pipelining: bool = True
    received: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        if self.pipelining:
            return await super().handle_EHLO(server, session, envelope, hostname, responses)
        session.host_name = hostname
        return responses

    def _temporary(self, server: Any, session: Session) -> str | None:
        if self.random.random() < self.temporary:
            reply = self.random.choice(["421 4.3.2 Try again later", "451 4.3.0 Busy"])
            if reply.startswith("421"):  # as real servers do: close, answer nothing more
                self._close(server, session, abort=False)
            return reply
        return None

    def _close(self, server: Any, session: Session, *, abort: bool) -> None:
        """End the session: commands a pipelining client sent ahead are never acted on."""
        session.closed = True  # type: ignore[attr-defined]
        if abort:
            server.transport.abort()
        else:
            asyncio.get_running_loop().call_soon(server.transport.close)

    @staticmethod
    def _ended(session: Session) -> bool:
        return getattr(session, "closed", False)

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._ended(session):
            return "421 4.3.2 Closing"
        self.envelopes_ahead += self.count_ahead(server, b"RCPT TO:")
        reply = self._temporary(server, session)
        if reply:
            return reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._ended(session):
            return "421 4.3.2 Closing"
        if self.random.random() < self.slow:
            await asyncio.sleep(self.random.uniform(0.05, 0.2))
        reply = self._temporary(server, session)
        if reply:
            with self.lock:
                self.refused[address].append(int(reply[:3]))
            return reply
        with self.lock:
            if self.random.random() < self.bounce and not self.received[address]:
                self.refused[address].append(550)
                return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self._ended(session):
            return "421 4.3.2 Closing"
        self.messages_ahead += self.count_ahead(server, b"MAIL FROM:")
        roll = self.random.random()
        if roll < self.drop:
            self._close(server, session, abort=True)
            return "451 never seen"
        reply = self._temporary(server, session)
        if reply:
            for address in envelope.rcpt_tos:
                with self.lock:
                    self.refused[address].append(int(reply[:3]))
            return reply
        message_id = message_id_of(envelope.original_content or b"")
        with self.lock:
            for address in envelope.rcpt_tos:
                self.received[address].append(message_id)
        if roll < self.drop + self.drop_after_accept:
            self._close(server, session, abort=True)
        return "250 OK"
