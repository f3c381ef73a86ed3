"""The capture inbox: a local SMTP server that keeps every message it receives in the database.

Used when no SMTP relay is configured (``make run``) and by the preview server. It accepts mail
from any program, not only from this one: SMTPUTF8 and 8BITMIME, any ``AUTH PLAIN``/``LOGIN``
credentials (a program configured with a user and password still gets through), lines longer
than SMTP's 998 octets, a null sender, messages that do not parse. It never relays anything.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import JSON, LargeBinary, String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, Database, utcnow

log = logging.getLogger("scheduler.capture")
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024  # generous: the inbox shows what a program sends, mistakes included
MAX_ADDRESS = 320
MAX_SUBJECT = 998


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
        # The store may wait on a lock: never stall the SMTP loop (other clients) meanwhile.
        try:
            message_id = await asyncio.to_thread(
                store_message,
                self.database,
                str(envelope.mail_from or ""),
                [str(rcpt) for rcpt in envelope.rcpt_tos],
                raw,
            )
        except Exception:
            log.exception("capture inbox could not store a message")
            return "451 4.3.0 Could not store the message; try again"
        return f"250 2.0.0 Message captured as #{message_id}"


def subject_of(raw: bytes) -> str:
    """The decoded Subject of ``raw``, or "" when it has none or it does not parse."""
    try:
        parsed = message_from_bytes(raw, policy=policy.default)
        subject = str(parsed.get("Subject", "") or "")
    except Exception:  # a malformed header still gets the message captured
        try:
            legacy = message_from_bytes(raw)
            subject = str(make_header(decode_header(str(legacy.get("Subject", "") or ""))))
        except Exception:
            subject = ""
    return " ".join(subject.split())[:MAX_SUBJECT]


def store_message(database: Database, mail_from: str, recipients: list[str], raw: bytes) -> int:
    """Keep one received message; returns its id."""
    with database.session() as session:
        message = CapturedMessage(
            mail_from=mail_from[:MAX_ADDRESS],
            recipients=[recipient[:MAX_ADDRESS] for recipient in recipients],
            subject=subject_of(raw),
            raw=raw,
        )
        session.add(message)
        session.flush()
        return message.id


def list_messages(database: Database, limit: int = 200) -> list[CapturedMessage]:
    """The newest captured messages first."""
    with database.session() as session:
        query = select(CapturedMessage).order_by(CapturedMessage.id.desc()).limit(limit)
        return list(session.scalars(query))


def count_messages(database: Database) -> int:
    """How many messages the inbox holds."""
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(CapturedMessage)) or 0)


def latest_id(database: Database) -> int:
    """The id of the newest message, 0 when the inbox is empty: changes when mail arrives."""
    with database.session() as session:
        return int(session.scalar(select(func.max(CapturedMessage.id))) or 0)


def get_message(database: Database, message_id: int) -> CapturedMessage | None:
    with database.session() as session:
        return session.get(CapturedMessage, message_id)


def clear_messages(database: Database) -> None:
    with database.session() as session:
        session.execute(delete(CapturedMessage))


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """Any user name and password: the inbox only wants the mail a program sends."""
    user = auth_data.login if isinstance(auth_data, LoginPassword) else None
    return AuthResult(success=True, auth_data=user)


class CaptureSMTP(SMTP):
    """aiosmtpd's server with room for the over-long lines careless programs write."""

    line_length_limit = MAX_LINE_BYTES
    command_size_limit = 4096


class CaptureController(Controller):
    def factory(self) -> SMTP:
        return CaptureSMTP(self.handler, **self.SMTP_kwargs)


class CaptureInbox:
    """The capture inbox's SMTP server, started and stopped with its host process (and
    startable again after a stop: what it received is in the database, not in the server)."""

    def __init__(self, database: Database, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.database = database
        self.host = host
        self._port = port
        self.controller: Controller | None = None

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> None:
        self.controller = CaptureController(
            CaptureHandler(self.database),
            hostname=self.host,
            port=self._port,
            server_hostname="capture-inbox.localhost",  # no DNS lookup of this machine's name
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            decode_data=False,
            authenticator=_accept_any_login,
            auth_require_tls=False,  # loopback only, and nothing is checked anyway
            ident="newsletter capture inbox",
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
