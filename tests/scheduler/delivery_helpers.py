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


# ---------------------------------------------------------------- a misbehaving SMTP server


@dataclass
class FaultyHandler:
    """Answers at random (seeded): 421 or 451 now and then, 550 for some recipients, dropped
    connections before and after taking the message, slow replies. Logs what it decided."""

    seed: int = 5
    temporary: float = 0.06  # each of MAIL, RCPT and DATA: 421 or 451
    bounce: float = 0.03  # RCPT: 550, for a recipient who has not received the message
    drop: float = 0.03  # drop the connection instead of answering the message
    drop_after_accept: float = 0.01  # take the message, then drop before the 250
    slow: float = 0.02  # answer RCPT after 50 to 200 ms
    received: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def _temporary(self) -> str | None:
        if self.random.random() < self.temporary:
            return self.random.choice(["421 4.3.2 Try again later", "451 4.3.0 Busy"])
        return None

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._temporary()
        if reply:
            return reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.random.random() < self.slow:
            await asyncio.sleep(self.random.uniform(0.05, 0.2))
        reply = self._temporary()
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
        roll = self.random.random()
        if roll < self.drop:
            server.transport.abort()
            return "451 never seen"
        reply = self._temporary()
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
            server.transport.abort()
        return "250 OK"
