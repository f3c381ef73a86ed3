"""Finding readers for the marketer: one by address, many by status, tag or a search term.

Every filter is a bound parameter (a search term's ``%`` and ``_`` match themselves), so nothing a
marketer types ever becomes SQL. ``reader_filter()`` is shared by ``list`` and ``export``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session, selectinload

from newsletter.errors import NotFoundError, ValidationError
from subscribers.addresses import address_hash, normalise_address
from subscribers.models import Status, Subscriber, SubscriberTag, Suppression

DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class ReaderFilter:
    """Which readers a listing or an export covers; every field is optional."""

    status: Status | None = None
    tag: str | None = None
    search: str | None = None

    @classmethod
    def parse(
        cls, status: str | None = None, tag: str | None = None, search: str | None = None
    ) -> ReaderFilter:
        """The filter for options as typed; raises ``ValidationError`` for an unknown status."""
        chosen = None
        if status:
            try:
                chosen = Status(status.strip().lower())
            except ValueError:
                names = ", ".join(member.value for member in Status)
                raise ValidationError(
                    {"status": f"{status!r} is not a status; use one of {names}"}
                ) from None
        return cls(chosen, (tag or "").strip() or None, (search or "").strip() or None)

    def condition(self) -> ColumnElement[bool]:
        """The WHERE clause, every value bound as a parameter."""
        condition: ColumnElement[bool] = true()
        if self.status is not None:
            condition = condition & (Subscriber.status == self.status.value)
        if self.tag is not None:
            tagged = select(SubscriberTag.subscriber_id).where(SubscriberTag.tag == self.tag)
            condition = condition & Subscriber.id.in_(tagged)
        if self.search is not None:
            term = self.search.lower()
            condition = condition & (
                func.lower(Subscriber.email).contains(term, autoescape=True)
                | func.lower(func.coalesce(Subscriber.name, "")).contains(term, autoescape=True)
            )
        return condition


def find_subscriber(session: Session, email: str) -> Subscriber:
    """The reader with this address (in any case or spelling the store normalises to it).

    Raises ``ValidationError`` for something that is not an address and ``NotFoundError`` when no
    reader has it (saying so when the address was erased).
    """
    address = normalise_address(email)
    reader = session.scalar(
        select(Subscriber)
        .where(Subscriber.email == address)
        .options(selectinload(Subscriber.history), selectinload(Subscriber.consents))
    )
    if reader is None:
        if is_suppressed(session, address):
            raise NotFoundError(f"{address} was erased; only a suppression hash of it is kept")
        raise NotFoundError(
            f"no reader has the address {address}; "
            "try `newsletter subscribers list --search` with part of it"
        )
    return reader


def is_suppressed(session: Session, address: str) -> bool:
    """True when this normalised address was erased and must never be added again."""
    return session.get(Suppression, address_hash(address)) is not None


def count_subscribers(session: Session, where: ReaderFilter) -> int:
    """How many readers match."""
    return session.scalar(select(func.count(Subscriber.id)).where(where.condition())) or 0


def list_subscribers(
    session: Session, where: ReaderFilter, *, limit: int | None = DEFAULT_LIMIT
) -> list[Subscriber]:
    """The matching readers, oldest first, at most ``limit`` of them (None: all)."""
    query = select(Subscriber).where(where.condition()).order_by(Subscriber.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def iso(moment: datetime | None) -> str | None:
    """A stored time as ISO 8601 in UTC, ``Z``-suffixed; None stays None."""
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def reader_summary(reader: Subscriber) -> dict[str, Any]:
    """The reader as a JSON-ready mapping, for ``list --json``."""
    return {
        "email": reader.email,
        "name": reader.name,
        "status": reader.status,
        "tags": reader.tag_names,
        "timezone": reader.timezone,
        "attributes": dict(reader.attributes or {}),
        "form": reader.form,
        "created_at": iso(reader.created_at),
        "status_changed_at": iso(reader.status_changed_at),
        "confirmed_at": iso(reader.confirmed_at),
    }


def reader_details(reader: Subscriber) -> dict[str, Any]:
    """Everything the store keeps about a reader, for ``show``: the summary, history, consents."""
    return {
        **reader_summary(reader),
        "history": [
            {
                "at": iso(change.at),
                "from": change.old_status,
                "to": change.new_status,
                "source": change.source,
            }
            for change in reader.history
        ],
        "consents": [
            {
                "kind": consent.kind,
                "at": iso(consent.at),
                "form": consent.form,
                "ip": consent.ip,
                "user_agent": consent.user_agent,
                "consent_text": consent.consent_text,
            }
            for consent in reader.consents
        ],
    }
