"""The real clock on simulated time, moved from one event to the next: each tick runs the
clock's own work (due sequence steps, then due campaign runs) and "sends" every delivery at
exactly the time it is first tried, as ``sequence_helpers.deliver_due`` does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from newsletter.db import Database
from scheduler import campaigns
from scheduler.cadence import NO_CAPS, Caps
from scheduler.campaigns import CampaignRun, RunState
from scheduler.deliveries import Delivery, State
from scheduler.sequences import Enrolment, EnrolmentState, enqueue_due_steps
from subscribers.models import Status, Subscriber, SubscriberTag
from tests.scheduler.sequence_helpers import deliver_due

HOUR = timedelta(hours=1)


def tick(
    database: Database, now: datetime, *, caps: Caps, root: Path | None, default_zone: str | None
) -> None:
    """What the clock does at ``now``, with sending at once, until nothing more falls due."""
    for _ in range(4):
        deliver_due(database, now)
        enqueue_due_steps(database, now, root=root, default_zone=default_zone, caps=caps)
        for run_id in campaigns.due_runs(database, now):
            campaigns.start_run(
                database, run_id, grace=HOUR, now=now, caps=caps, default_zone=default_zone
            )
        if not deliver_due(database, now):
            return


def next_event(database: Database, after: datetime) -> datetime | None:
    """The next moment anything falls due: a step, a delivery's try, a campaign's time."""
    with database.session() as session:
        times = [
            session.scalar(
                select(func.min(Enrolment.next_due_at)).where(
                    Enrolment.state == EnrolmentState.ACTIVE,
                    Enrolment.waiting_message.is_(None),
                    Enrolment.next_due_at > after,
                )
            ),
            session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.state == State.QUEUED, Delivery.next_attempt_at > after
                )
            ),
            session.scalar(
                select(func.min(CampaignRun.send_at)).where(
                    CampaignRun.state == RunState.SCHEDULED, CampaignRun.send_at > after
                )
            ),
        ]
    found = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times if t is not None]
    return min(found) if found else None


def drive(
    database: Database,
    start: datetime,
    end: datetime,
    *,
    caps: Caps = NO_CAPS,
    root: Path | None = None,
    default_zone: str | None = None,
) -> int:
    """Run the clock at every event from ``start`` to ``end``; returns the ticks taken."""
    now: datetime | None = start
    ticks = 0
    while now is not None and now <= end:
        tick(database, now, caps=caps, root=root, default_zone=default_zone)
        ticks += 1
        now = next_event(database, now)
    return ticks


def add_readers(
    database: Database,
    readers: list[tuple[str, str | None, datetime, tuple[str, ...]]],
    sequences: list[str],
) -> dict[str, int]:
    """Confirmed readers ``(email, zone, confirmed at, tags)`` who enter ``sequences`` at their
    confirmation (their enrolment is planned by the clock's next tick, as a file edit is)."""
    with database.session() as session:
        ids = {}
        for email, zone, confirmed_at, tags in readers:
            reader = Subscriber(
                email=email,
                status=Status.CONFIRMED,
                timezone=zone,
                confirmed_at=confirmed_at,
                tags=[SubscriberTag(tag=tag) for tag in tags],
            )
            session.add(reader)
            session.flush()
            ids[email] = reader.id
        enrolments = [
            {
                "sequence": name,
                "subscriber_id": ids[email],
                "state": EnrolmentState.ACTIVE,
                "version": "",
                "enrolled_at": confirmed_at,
                "anchor_at": confirmed_at,
                "next_due_at": confirmed_at,
                "updated_at": confirmed_at,
            }
            for email, _, confirmed_at, _ in readers
            for name in sequences
        ]
        if enrolments:
            session.execute(insert(Enrolment), enrolments)
    return ids


def add_run(
    database: Database,
    name: str,
    send_at: datetime,
    *,
    segment: str | None = None,
    state: str = RunState.SCHEDULED,
    cadence: str | None = None,
    reader_time: str | None = None,
) -> None:
    """A campaign run as ``campaign schedule`` records it (its preflight is tested elsewhere)."""
    with database.session() as session:
        session.add(
            CampaignRun(
                name=name,
                message=f"campaign:{name}",
                state=state,
                send_at=send_at,
                zone="UTC",
                segment=segment,
                created_at=send_at - timedelta(days=7),
                state_changed_at=send_at - timedelta(days=7),
                cadence=cadence,
                reader_time=reader_time,
            )
        )


def sent_between(
    database: Database, start: datetime, end: datetime
) -> set[tuple[str, int, datetime]]:
    """Every ``(message, reader, sent at)`` sent after ``start`` up to ``end``."""
    with database.session() as session:
        rows = session.execute(
            select(Delivery.message, Delivery.subscriber_id, Delivery.sent_at).where(
                Delivery.state == State.SENT, Delivery.sent_at > start, Delivery.sent_at <= end
            )
        ).all()
    return {(message, int(reader), at) for message, reader, at in rows}
