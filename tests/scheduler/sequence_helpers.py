"""A simulated clock for sequences: readers confirmed at a given time, steps enqueued and
"sent" at exactly their due time, without SMTP (the SMTP path has its own tests)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from newsletter.db import Database
from scheduler.deliveries import Delivery, State
from scheduler.sequences import enqueue_due_steps, enrol
from subscribers.models import Status, Subscriber, SubscriberTag


def add_confirmed_reader(
    database: Database,
    email: str,
    confirmed_at: datetime,
    *,
    zone: str | None = None,
    tags: tuple[str, ...] = (),
    root: Path | None = None,
    default_zone: str | None = None,
) -> int:
    """A reader who confirmed at ``confirmed_at`` and entered the sequences then."""
    with database.session() as session:
        reader = Subscriber(
            email=email,
            status=Status.CONFIRMED,
            timezone=zone,
            confirmed_at=confirmed_at,
            tags=[SubscriberTag(tag=tag) for tag in tags],
        )
        session.add(reader)
        session.flush()
        enrol(session, reader.id, now=confirmed_at, root=root, default_zone=default_zone)
        return reader.id


def deliver_due(database: Database, now: datetime) -> int:
    """Every queued delivery due at ``now`` is sent, at exactly its due time."""
    with database.session() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.state == State.QUEUED, Delivery.next_attempt_at <= now)
            .values(state=State.SENT, sent_at=Delivery.next_attempt_at)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def run_clock(
    database: Database,
    start: datetime,
    end: datetime,
    *,
    tick: timedelta = timedelta(hours=6),
    root: Path | None = None,
    default_zone: str | None = None,
    deliver: bool = True,
) -> None:
    """The clock's job every ``tick`` from ``start`` to ``end``, with instant sending.

    Each delivery is "sent" at exactly its due time, whatever the tick: the times a test sees
    are the ones the scheduler computed, not the tick's."""
    now = start
    while now <= end:
        enqueue_due_steps(database, now, root=root, default_zone=default_zone)
        if deliver:
            deliver_due(database, now)
        now += tick


def timeline(database: Database, subscriber_id: int) -> dict[str, tuple[str, datetime | None]]:
    """A reader's sequence deliveries: step key -> (state, sent at)."""
    with database.session() as session:
        rows = session.execute(
            select(Delivery.message, Delivery.state, Delivery.sent_at).where(
                Delivery.subscriber_id == subscriber_id, Delivery.message.startswith("sequence:")
            )
        ).all()
    return {message: (state, sent_at) for message, state, sent_at in rows}
