"""The capture inbox: a local SMTP server that keeps every message it receives in the database.

Used when no SMTP relay is configured (``make run``) and by the preview server. It accepts mail
from any program, not only from this one, and never relays anything.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import JSON, LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, Database, utcnow

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class CapturedMessage(Base):
    """One message the capture inbox received, kept byte for byte."""

    __tablename__ = "captured_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    mail_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(998))
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class CaptureHandler:
    """aiosmtpd handler: store each message, answer 250."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        store_message(self.database, str(envelope.mail_from), list(envelope.rcpt_tos), raw)
        return "250 Message captured"


def store_message(database: Database, mail_from: str, recipients: list[str], raw: bytes) -> int:
    """Keep one received message; returns its id."""
    parsed = message_from_bytes(raw, policy=policy.default)
    subject = str(parsed.get("Subject", "") or "")[:998]
    with database.session() as session:
        message = CapturedMessage(
            mail_from=mail_from, recipients=recipients, subject=subject, raw=raw
        )
        session.add(message)
        session.flush()
        return message.id


def list_messages(database: Database, limit: int = 200) -> list[CapturedMessage]:
    """The newest captured messages first."""
    with database.session() as session:
        query = select(CapturedMessage).order_by(CapturedMessage.id.desc()).limit(limit)
        return list(session.scalars(query))


def get_message(database: Database, message_id: int) -> CapturedMessage | None:
    with database.session() as session:
        return session.get(CapturedMessage, message_id)


def clear_messages(database: Database) -> None:
    with database.session() as session:
        session.execute(delete(CapturedMessage))


class CaptureInbox:
    """The capture inbox's SMTP server, started and stopped with its host process."""

    def __init__(self, database: Database, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.controller = Controller(
            CaptureHandler(database),
            hostname=host,
            port=port,
            data_size_limit=MAX_MESSAGE_BYTES,
        )

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
