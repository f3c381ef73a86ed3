"""Campaign runs: a campaign sent once, to a segment, at a time the marketer sets.

A run moves through these states (``campaign_runs.state``)::

    scheduled ──its time, within the grace period──▶ sending ──all delivered──▶ done
        │  └──its time passed more than the grace period ago──▶ held ──resume──▶ sending
        ├──pause──▶ paused ──resume──▶ scheduled (or sending, if it had started)
        └──cancel──▶ cancelled      (paused, held and sending runs may be cancelled too)

*Pause* takes effect on the next claim: the sender never claims a queued delivery of a paused
or cancelled run (``scheduler.deliveries`` filters them out), so at most the batch already in a
worker's hands still goes out. *Cancel* marks every delivery not yet sent ``skipped`` (reason
"campaign cancelled"), so ``status`` still adds up and nothing is left waiting; a cancelled run
is final (to send the content after all, copy it to a new campaign name).

Sending a run means enqueueing its deliveries: the segment's readers by keyset batches
(``deliveries.enqueue``), which the worker then sends. Enqueueing is idempotent, so a run whose
process died half-way is simply enqueued again.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Index, String, Text, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from campaigns.content import load_campaign
from campaigns.preflight import SPAMASSASSIN, check
from newsletter.db import Base, Database, utcnow
from newsletter.errors import NotFoundError, PreflightError, SchedulingError
from newsletter.settings import Settings
from scheduler import cadence
from scheduler.cadence import Caps
from scheduler.deliveries import (
    PENDING,
    Delivery,
    State,
    _insert,
    deliveries,
    delivery_counts,
    enqueue,
    retry_failed,
)
from scheduler.sequences import reader_zone
from subscribers.models import Status, Subscriber
from subscribers.segments import parse_segment, validate_segment

log = logging.getLogger("scheduler.campaigns")

WHEN_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


class RunState(enum.StrEnum):
    """Where a campaign run stands."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    DONE = "done"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    HELD = "held"


# Runs whose queued deliveries the sender must not claim.
STOPPED = (RunState.PAUSED, RunState.CANCELLED)


class CampaignRun(Base):
    """One campaign scheduled to one segment; a campaign is sent at most once."""

    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=RunState.SCHEDULED)
    send_at: Mapped[datetime]
    zone: Mapped[str] = mapped_column(String(64))
    segment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Paused before it started, or why it is held.
    note: Mapped[str | None] = mapped_column(Text)
    # The campaign file's own cadence caps (JSON: min_gap, quiet), read when it was scheduled.
    cadence: Mapped[str | None] = mapped_column(Text)
    # "2026-12-01T09:00": sent at that wall-clock time in each reader's zone; ``send_at`` is then
    # the earliest such moment (UTC+14), when the run starts.
    reader_time: Mapped[str | None] = mapped_column(String(32))

    def caps(self, defaults: Caps) -> Caps:
        """The cadence caps for this run: the settings', with the campaign file's in front."""
        if not self.cadence:
            return defaults
        own = json.loads(self.cadence)
        return defaults.for_campaign(own.get("min_gap"), own.get("quiet"))

    __table_args__ = (Index("ix_campaign_runs_state_send_at", "state", "send_at"),)


def message_key(name: str) -> str:
    """The deliveries' message key of campaign ``name``."""
    return f"campaign:{name}"


# ---------------------------------------------------------------- scheduling


def parse_when(at: str | datetime, zone: str) -> datetime:
    """``at`` (``2026-12-01 09:00``, wall-clock time in ``zone``) as an aware UTC datetime.

    A wall-clock time that does not exist in ``zone`` (skipped by a daylight-saving change) is
    refused; one that happens twice (the hour repeated in autumn) means the first of the two.
    """
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SchedulingError(
            f"unknown time zone {zone!r}: use an IANA name such as America/New_York or UTC"
        ) from None
    if isinstance(at, datetime):
        local = at if at.tzinfo is not None else at.replace(tzinfo=tz)
    else:
        for form in WHEN_FORMATS:
            try:
                local = datetime.strptime(at.strip(), form).replace(tzinfo=tz)
                break
            except ValueError:
                continue
        else:
            raise SchedulingError(f"--at {at!r}: expected a time such as 2026-12-01 09:00")
        # A time in a daylight-saving gap does not survive the round trip through UTC.
        back = local.astimezone(UTC).astimezone(tz)
        if back.replace(tzinfo=None) != local.replace(tzinfo=None):
            raise SchedulingError(
                f"--at {at!r} does not exist in {zone} (the clocks skip it); pick another time"
            )
    return local.astimezone(UTC)


@dataclass(frozen=True)
class RunInfo:
    """A run as read from its row, detached from any session."""

    id: int
    name: str
    message: str
    state: str
    send_at: datetime
    zone: str
    segment: str | None
    started_at: datetime | None
    enqueued_at: datetime | None
    finished_at: datetime | None
    note: str | None

    @classmethod
    def of(cls, run: CampaignRun) -> RunInfo:
        return cls(
            run.id,
            run.name,
            run.message,
            run.state,
            run.send_at,
            run.zone,
            run.segment,
            run.started_at,
            run.enqueued_at,
            run.finished_at,
            run.note,
        )

    @property
    def local_send_at(self) -> datetime:
        return self.send_at.astimezone(ZoneInfo(self.zone))


def create_run(
    database: Database,
    settings: Settings,
    name: str,
    at: str | datetime,
    zone: str = "UTC",
    segment: str | None = None,
    *,
    now: datetime | None = None,
    content_root: Path | None = None,
    spamassassin: str | None = SPAMASSASSIN,
    reader_time: bool = False,
) -> RunInfo:
    """Record campaign ``name`` as scheduled at ``at`` (wall-clock time in ``zone``).

    Refuses, with a message saying what to do: an unknown campaign (``NotFoundError``), one that
    fails its preflight check (``PreflightError`` listing the problems), an unknown zone, a time
    in the past, a bad segment (``ValidationError``), or a campaign already scheduled or sent.
    """
    now = now or utcnow()
    send_at = parse_when(at, zone)
    wall = None
    if reader_time:  # the same wall-clock time in every reader's zone: it starts in UTC+14
        wall = send_at.astimezone(ZoneInfo(zone)).replace(tzinfo=None).isoformat(timespec="minutes")
        send_at = reader_due(send_at, wall, EARLIEST_ZONE)
    if send_at <= now:
        shown = send_at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
        where = " in the first zone to reach it (UTC+14)" if reader_time else ""
        raise SchedulingError(f"{shown}{where} is in the past; pick a time from now on")
    segment = validate_segment(segment) if segment and segment.strip() else None
    campaign = load_campaign(name, content_root)
    report = check(campaign, settings, spamassassin=spamassassin)
    if not report.ok:
        count = len(report.problems)
        problems = "; ".join(str(problem) for problem in report.problems)
        raise PreflightError(
            f"campaign {name!r} fails its check ({count} problem{'s' if count > 1 else ''}): "
            f"{problems}; fix them and run `newsletter campaign check {name}`",
            [str(problem) for problem in report.problems],
        )
    message = message_key(name)
    with database.session() as session:
        existing = session.scalar(select(CampaignRun).where(CampaignRun.message == message))
        if existing is not None:
            started = session.scalar(
                select(Delivery.id).where(Delivery.message == message).limit(1)
            )
            if existing.state != RunState.CANCELLED or started is not None:
                raise SchedulingError(_already(existing))
            session.delete(existing)
            session.flush()
        run = CampaignRun(
            name=name,
            message=message,
            state=RunState.SCHEDULED,
            send_at=send_at,
            zone=zone,
            segment=segment,
            created_at=now,
            state_changed_at=now,
            cadence=_campaign_cadence(campaign.cadence_min_gap, campaign.cadence_quiet),
            reader_time=wall,
        )
        session.add(run)
        session.flush()
        info = RunInfo.of(run)
    log.info("event=campaign_scheduled campaign=%s at=%s", name, send_at.isoformat())
    return info


EARLIEST_ZONE = ZoneInfo("Etc/GMT-14")  # UTC+14 (POSIX signs are inverted)


def reader_due(send_at: datetime, reader_time: str | None, zone: ZoneInfo) -> datetime:
    """When a run is due for a reader in ``zone``: its time, or with ``reader_time`` that
    wall-clock time in the reader's zone."""
    if reader_time is None:
        return send_at
    return datetime.fromisoformat(reader_time).replace(tzinfo=zone).astimezone(UTC)


def _campaign_cadence(min_gap: float | None, quiet: dict[str, float] | None) -> str | None:
    if min_gap is None and quiet is None:
        return None
    return json.dumps({"min_gap": min_gap, "quiet": quiet})


def _already(run: CampaignRun) -> str:
    name = run.name
    when = run.send_at.astimezone(ZoneInfo(run.zone)).strftime("%Y-%m-%d %H:%M %Z")
    advice = {
        RunState.SCHEDULED: f"scheduled for {when}; `newsletter campaign cancel {name}` first "
        "to change it",
        RunState.PAUSED: f"paused; `newsletter campaign resume {name}` or `cancel {name}`",
        RunState.HELD: f"held (it was late); `newsletter campaign resume {name}` to send it now",
        RunState.SENDING: f"sending; see `newsletter campaign status {name}`",
        RunState.DONE: "sent already; a campaign is sent once: copy it under a new name to "
        "send it again",
        RunState.CANCELLED: "cancelled after it started sending; copy it under a new name to "
        "send it",
    }[RunState(run.state)]
    return f"campaign {name!r} is {advice}"


# ---------------------------------------------------------------- the marketer's controls


def _run(session: Session, name: str) -> CampaignRun:
    run = session.scalar(select(CampaignRun).where(CampaignRun.message == message_key(name)))
    if run is None:
        raise NotFoundError(
            f"campaign {name!r} is not scheduled; `newsletter campaign schedule {name} --at …`"
        )
    return run


def get_run(database: Database, name: str) -> RunInfo:
    with database.session() as session:
        return RunInfo.of(_run(session, name))


def pause(database: Database, name: str, *, now: datetime | None = None) -> RunInfo:
    """Stop sending ``name``: no more of its deliveries are claimed until ``resume``."""
    now = now or utcnow()
    with database.session() as session:
        run = _run(session, name)
        if run.state not in (RunState.SCHEDULED, RunState.SENDING):
            raise SchedulingError(
                f"campaign {name!r} is {run.state}: only a scheduled or "
                "sending campaign can be paused"
            )
        run.note = f"paused while {run.state}"
        run.state = RunState.PAUSED
        run.state_changed_at = now
        session.flush()
        return RunInfo.of(run)


def resume(database: Database, name: str, *, now: datetime | None = None) -> RunInfo:
    """Go on sending a paused campaign, or send a held one now."""
    now = now or utcnow()
    with database.session() as session:
        run = _run(session, name)
        if run.state == RunState.PAUSED:
            run.state = RunState.SENDING if run.started_at else RunState.SCHEDULED
        elif run.state == RunState.HELD:
            # The marketer confirms the late campaign: it goes out at the next tick.
            run.state = RunState.SCHEDULED
            run.send_at = now
        else:
            raise SchedulingError(
                f"campaign {name!r} is {run.state}: only a paused or held campaign can be resumed"
            )
        run.note = None
        run.state_changed_at = now
        session.flush()
        return RunInfo.of(run)


def cancel(database: Database, name: str, *, now: datetime | None = None) -> tuple[RunInfo, int]:
    """Cancel ``name`` for good: its unsent deliveries become ``skipped``; returns how many."""
    now = now or utcnow()
    with database.session() as session:
        run = _run(session, name)
        if run.state in (RunState.DONE, RunState.CANCELLED):
            raise SchedulingError(f"campaign {name!r} is {run.state} already")
        run.state = RunState.CANCELLED
        run.state_changed_at = now
        run.finished_at = now
        skipped = skip_unsent(session, run.message)
        session.flush()
        return RunInfo.of(run), skipped


def skip_unsent(session: Session, message: str) -> int:
    """Mark ``message``'s queued and uncertain deliveries skipped (claimed ones finish)."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.message == message, Delivery.state.in_([State.QUEUED, State.UNCERTAIN]))
        .values(state=State.SKIPPED, last_error="campaign cancelled")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def retry_failed_run(database: Database, name: str) -> int:
    """Queue the campaign's failed deliveries again; its run goes back to sending."""
    with database.session() as session:
        run = _run(session, name)
        if run.state == RunState.CANCELLED:
            raise SchedulingError(f"campaign {name!r} is cancelled: nothing is retried")
        count = retry_failed(session, run.message)
        if count and run.state == RunState.DONE:
            run.state = RunState.SENDING
            run.finished_at = None
            run.state_changed_at = utcnow()
        return count


# ---------------------------------------------------------------- the clock's side


class _Stopped(Exception):
    """The run was paused or cancelled while its deliveries were being created."""


def start_run(
    database: Database,
    run_id: int,
    *,
    grace: timedelta,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    caps: Caps = cadence.NO_CAPS,
    default_zone: str | None = None,
) -> str:
    """Send run ``run_id`` if it is due: hold it if later than ``grace``, else enqueue it.

    Returns what happened: "held", "enqueued", "not due", or the run's state when there was
    nothing to do. Safe to call twice, and from two processes: one wins the state change.
    """
    now = now or utcnow()
    with database.session() as session:
        run = session.get(CampaignRun, run_id)
        if run is None:
            return "gone"
        if run.state == RunState.SENDING and run.enqueued_at is None:
            pass  # a process died while enqueueing: go on (enqueueing again is safe)
        elif run.state != RunState.SCHEDULED:
            return str(run.state)
        elif run.send_at > now:
            return "not due"
        elif now - run.send_at > grace:
            run.state = RunState.HELD
            run.state_changed_at = now
            late = now - run.send_at
            run.note = f"{_duration(late)} late (grace {_duration(grace)}) when the clock saw it"
            log.warning("event=campaign_held campaign=%s late=%s", run.name, late)
            return "held"
        else:
            changed = session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id, CampaignRun.state == RunState.SCHEDULED)
                .values(state=RunState.SENDING, started_at=now, state_changed_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if not changed:
                return "taken"
        message, segment, name = run.message, run.segment, run.name
        run_caps, send_at, wall = run.caps(caps), run.send_at, run.reader_time
    log.info("event=campaign_sending campaign=%s", name)
    condition = None if segment is None else parse_segment(segment)

    def batch_done(count: int) -> None:
        if progress is not None:
            progress(count)
        with database.session() as session:
            state = session.scalar(select(CampaignRun.state).where(CampaignRun.id == run_id))
        if state == RunState.CANCELLED:
            raise _Stopped

    try:
        if run_caps.off and wall is None:
            # First tried when it fell due (never later than the real now): plan's time too.
            created = enqueue(
                database,
                message,
                segment=None if condition is None else (lambda: condition),
                progress=batch_done,
                not_before=min(send_at, utcnow()),
            )
        else:
            created = enqueue_capped(
                database,
                message,
                send_at,
                run_caps,
                condition,
                progress=batch_done,
                reader_time=wall,
                default_zone=default_zone,
            )
    except _Stopped:
        with database.session() as session:
            skip_unsent(session, message)
        return "cancelled"
    with database.session() as session:
        session.execute(
            update(CampaignRun).where(CampaignRun.id == run_id).values(enqueued_at=utcnow())
        )
        if session.scalar(select(CampaignRun.state).where(CampaignRun.id == run_id)) == (
            RunState.CANCELLED
        ):
            skip_unsent(session, message)
    log.info("event=campaign_enqueued campaign=%s deliveries=%s", name, created)
    return "enqueued"


def readers_of(segment: ColumnElement[bool] | None) -> ColumnElement[bool]:
    """The readers a campaign goes to: confirmed ones, in its segment if it has one."""
    condition: ColumnElement[bool] = Subscriber.status == Status.CONFIRMED
    return condition if segment is None else condition & segment


def enqueue_capped(
    database: Database,
    message: str,
    due: datetime,
    caps: Caps,
    segment: ColumnElement[bool] | None,
    *,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
    reader_time: str | None = None,
    default_zone: str | None = None,
) -> int:
    """``enqueue`` under cadence caps: each reader's delivery is first tried at its
    ``cadence.release`` time, and says why when that is later than ``due``; with
    ``reader_time``, due at that wall-clock time in the reader's zone. Keyset batches by reader
    id, each in its own transaction; rows that exist are left alone."""
    after, created = 0, 0
    while True:
        with database.session() as session:
            found = session.execute(
                select(Subscriber.id, Subscriber.timezone)
                .where(readers_of(segment), Subscriber.id > after)
                .order_by(Subscriber.id)
                .limit(batch_size)
            ).all()
            if not found:
                return created
            ids = [reader for reader, _ in found]
            zones = dict(found)
            earlier = cadence.history(session, ids)
            entered = cadence.enrolments(session, ids, caps.quiet)
            now = utcnow()
            rows = []
            for reader in ids:
                own = reader_due(due, reader_time, reader_zone(zones[reader], default_zone))
                released = cadence.release(message, own, caps, earlier[reader], entered[reader])
                first = released.at if released.reason or reader_time else min(own, now)
                rows.append(
                    {
                        "message": message,
                        "subscriber_id": reader,
                        "state": State.QUEUED.value,
                        "attempts": 0,
                        "uncertain_count": 0,
                        "next_attempt_at": first,
                        "created_at": now,
                        "deferred_reason": released.reason,
                    }
                )
            insert = (
                _insert(session)(deliveries)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["message", "subscriber_id"])
            )
            created += len(session.execute(insert.returning(deliveries.c.id)).all())
            after = ids[-1]
        if progress is not None:
            progress(len(ids))


def due_runs(database: Database, now: datetime) -> list[int]:
    """Runs the clock must look at: scheduled and due, or left half-enqueued by a crash."""
    with database.session() as session:
        return list(
            session.scalars(
                select(CampaignRun.id)
                .where(
                    ((CampaignRun.state == RunState.SCHEDULED) & (CampaignRun.send_at <= now))
                    | ((CampaignRun.state == RunState.SENDING) & CampaignRun.enqueued_at.is_(None))
                )
                .order_by(CampaignRun.send_at, CampaignRun.id)
            )
        )


def finish_runs(database: Database, now: datetime | None = None) -> list[str]:
    """Mark done every sending run whose deliveries are all enqueued and none is pending."""
    now = now or utcnow()
    finished = []
    with database.session() as session:
        runs = session.scalars(
            select(CampaignRun).where(
                CampaignRun.state == RunState.SENDING, CampaignRun.enqueued_at.is_not(None)
            )
        ).all()
        for run in runs:
            pending = session.scalar(
                select(Delivery.id)
                .where(Delivery.message == run.message, Delivery.state.in_(list(PENDING)))
                .limit(1)
            )
            if pending is None:
                run.state = RunState.DONE
                run.finished_at = now
                run.state_changed_at = now
                finished.append(run.name)
    for name in finished:
        log.info("event=campaign_done campaign=%s", name)
    return finished


# ---------------------------------------------------------------- status


def run_status(session: Session, run: CampaignRun, now: datetime | None = None) -> dict[str, Any]:
    """Counts by state (``delivery_counts``), the run's state and times, and time left."""
    now = now or utcnow()
    counts: dict[str, Any] = delivery_counts(session, run.message)
    window = timedelta(seconds=60)
    recent = int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.message == run.message,
                Delivery.state == State.SENT,
                Delivery.sent_at >= now - window,
            )
        )
        or 0
    )
    rate = recent / window.total_seconds()
    pending = counts["queued"] + counts["claimed"] + counts["uncertain"]
    eta = None
    if pending == 0 and run.state in (RunState.SENDING, RunState.DONE):
        eta = 0.0
    elif rate > 0 and run.state == RunState.SENDING:
        eta = round(pending / rate, 1)
    counts.update(
        campaign=run.name,
        state=run.state,
        send_at=run.send_at.isoformat(),
        zone=run.zone,
        local_send_at=run.send_at.astimezone(ZoneInfo(run.zone)).isoformat(),
        segment=run.segment,
        reader_time=run.reader_time,
        note=run.note,
        rate_per_second=round(rate, 2),
        seconds_left=eta,
    )
    return counts


def status(database: Database, name: str, now: datetime | None = None) -> dict[str, Any]:
    """``run_status`` of campaign ``name``."""
    with database.session() as session:
        return run_status(session, _run(session, name), now)


def all_statuses(database: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """``run_status`` of every run, the latest first."""
    with database.session() as session:
        runs = session.scalars(select(CampaignRun).order_by(CampaignRun.send_at.desc())).all()
        return [run_status(session, run, now) for run in runs]


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"
