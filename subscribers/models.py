"""The subscriber store: readers, their status history, their consent, and suppressed addresses."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, ForeignKey, Index, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, utcnow


class Status(enum.StrEnum):
    """Where a reader stands; only ``confirmed`` readers are mailed anything but a confirmation."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


# Readers in these states get nothing more, from the moment the change is committed.
SUPPRESSED_STATUSES = (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)


def new_subscriber_key() -> str:
    """The unguessable key that signed links carry instead of the reader's id or address."""
    return secrets.token_urlsafe(16)


class Subscriber(Base):
    """A reader, unique by normalised address."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    key: Mapped[str] = mapped_column(String(32), unique=True, default=new_subscriber_key)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timezone: Mapped[str | None] = mapped_column(String(64))
    form: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    confirmation_sent_at: Mapped[datetime | None]

    tags: Mapped[list[SubscriberTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="SubscriberTag.tag"
    )
    history: Mapped[list[StatusChange]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="StatusChange.id"
    )
    consents: Mapped[list[Consent]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Consent.id"
    )

    __table_args__ = (Index("ix_subscribers_status_id", "status", "id"),)

    @property
    def tag_names(self) -> list[str]:
        return [tag.tag for tag in self.tags]


class SubscriberTag(Base):
    """One tag on one reader, kept as a row so that segments can query it on any database."""

    __tablename__ = "subscriber_tags"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class StatusChange(Base):
    """One change of a reader's status, with its time and what caused it."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    old_status: Mapped[str | None] = mapped_column(String(16))
    new_status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(Base):
    """Evidence of consent: when, from which form and client, and the text the reader was shown."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # signup, confirmation or import
    at: Mapped[datetime] = mapped_column(default=utcnow)
    form: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    consent_text: Mapped[str | None] = mapped_column(Text)
    # For a confirmation: how long after the email was sent the reader confirmed. Link scanners
    # answer within seconds; a person rarely does.
    seconds_after_email: Mapped[float | None]


class Suppression(Base):
    """An erased address, kept only as a hash so that it is never mailed again by accident."""

    __tablename__ = "suppressions"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(default=utcnow)


# The tables themselves, for the hot paths that run plain SQL statements without the ORM.
subscribers_table = cast(Table, Subscriber.__table__)
status_changes_table = cast(Table, StatusChange.__table__)
consents_table = cast(Table, Consent.__table__)
