"""The plan: exactly who gets what and when, computed by the code that sends.

``project`` runs one reader's future through the clock's own decisions, in the clock's order:
each sequence's next step by ``sequences.decide_step`` (delay, send window in the reader's zone,
condition), each campaign run at its time, each new email through ``cadence.release``, and each
email assumed sent when it is first tried (as the clock then counts the next step from it). At
one moment, sent emails are counted first, then sequences by name, then campaigns by time: the
order of the clock's tick. The deliveries already waiting in the outbox are in the plan as they
are.

``plan`` runs ``project`` for every reader with something ahead, by keyset batches of readers;
``simulate`` (``scheduler/simulate.py``) and ``explain`` run it for one reader.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Text, func, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from campaigns.sequence import Sequence
from newsletter.db import Database
from newsletter.settings import Settings
from scheduler import cadence
from scheduler.cadence import Caps
from scheduler.campaigns import CampaignRun, RunState, reader_due, readers_of
from scheduler.deliveries import PENDING, STOPPED_RUN_STATES, Delivery
from scheduler.sequences import (
    Action,
    Enrolment,
    EnrolmentState,
    after_delay,
    decide_step,
    read_sequences,
    reader_zone,
)
from subscribers.models import SUPPRESSED_STATUSES, Status, Subscriber, SubscriberTag
from subscribers.segments import parse_segment

CONFIRMED = Status.CONFIRMED.value
# The order of work at one moment: what was sent, then sequences, then campaigns.
SENT, SEQUENCE, CAMPAIGN = 0, 1, 2


@dataclass
class Reader:
    """A snapshot of a reader: what the decisions read (``sequences.ReaderFacts``)."""

    id: int
    email: str
    status: str
    timezone: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    @property
    def tag_names(self) -> list[str]:
        return self.tags


@dataclass(frozen=True)
class Known:
    """A delivery the outbox already holds for the reader."""

    message: str
    state: str
    at: datetime  # sent, or set to be tried
    sent_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Place:
    """A reader's place in one sequence (from ``sequence_enrolments``)."""

    sequence: str
    state: str
    enrolled_at: datetime
    anchor_at: datetime
    waiting_message: str | None = None


@dataclass(frozen=True)
class Run:
    """A scheduled campaign run the plan sends."""

    id: int
    name: str
    message: str
    send_at: datetime
    caps: Caps
    reader_time: str | None = None  # the wall-clock time in each reader's zone, if so


class PlannedSend(NamedTuple):
    """One email the plan expects: to whom, what, when, and why then. Tuples sort by time,
    then message, then reader: the plan's order."""

    at: datetime  # when it is first tried
    message: str
    subscriber_id: int
    email: str
    zone: str
    due: datetime  # when it fell due, before any cadence cap
    reason: str | None = None  # why ``at`` is later than ``due``
    queued: bool = False  # already in the outbox (else still to be decided by the clock)
    ready: datetime | None = None  # a step's delay over, before its send window

    def row(self) -> dict[str, Any]:
        local = self.at.astimezone(reader_zone(self.zone))
        return {
            "at": self.at.isoformat(),
            "local_at": local.isoformat(),
            "message": self.message,
            "email": self.email,
            "zone": self.zone,
            "due": self.due.isoformat(),
            "deferred": self.reason or "",
            "queued": self.queued,
        }


@dataclass
class _Track:
    """One sequence while a reader's future is projected."""

    sequence: Sequence
    passed: set[str]
    enrolled_at: datetime
    anchor_at: datetime


def project(
    reader: Reader,
    places: Iterable[Place],
    known: Mapping[str, Known],
    runs: Iterable[Run],
    sequences: Mapping[str, Sequence | None],
    *,
    now: datetime,
    until: datetime,
    caps: Caps,
    default_zone: str | None = None,
    stopped: frozenset[str] = frozenset(),
    skipped: list[tuple[str, datetime, str]] | None = None,
) -> list[PlannedSend]:
    """The emails ``reader`` is sent from ``now`` to ``until``, in time order.

    ``runs`` are the scheduled campaign runs whose segment the reader is in; ``stopped`` the
    messages of paused or cancelled runs (their waiting deliveries are not sent). Steps the
    reader will not get (a condition not met) are added to ``skipped`` when it is given.
    """
    zone = reader_zone(reader.timezone, default_zone)
    zone_name = zone.key
    places = list(places)
    out: list[PlannedSend] = []
    suppressed = reader.status in SUPPRESSED_STATUSES
    # A waiting step removed from its file is skipped by the clock, not sent.
    removed = {
        p.waiting_message
        for p in places
        if p.waiting_message
        and (seq := sequences.get(p.sequence)) is not None
        and p.waiting_message not in _keys(seq)
    }
    for item in known.values():
        if item.state in PENDING and not suppressed and item.message not in stopped | removed:
            out.append(
                PlannedSend(
                    item.at,
                    item.message,
                    reader.id,
                    reader.email,
                    zone_name,
                    item.at,
                    item.reason,
                    queued=True,
                )
            )
    if reader.status != Status.CONFIRMED:
        return _within(out, until)
    history = [
        (item.at, item.message)
        for item in known.values()
        if cadence.is_capped(item.message) and item.state in cadence.COUNTED_STATES
    ]
    entered: dict[str, datetime] = {}
    tracks: dict[str, _Track] = {}
    queue: list[tuple[datetime, int, str, int]] = []
    for place in places:
        entered[place.sequence] = place.enrolled_at
        sequence = sequences.get(place.sequence)
        if place.state != EnrolmentState.ACTIVE or sequence is None:
            continue
        prefix = f"sequence:{place.sequence}:"
        track = _Track(
            sequence,
            {m.removeprefix(prefix) for m in known if m.startswith(prefix)},
            place.enrolled_at,
            place.anchor_at,
        )
        tracks[place.sequence] = track
        waiting = known.get(place.waiting_message) if place.waiting_message else None
        if waiting is not None and waiting.state in PENDING and waiting.message not in removed:
            heapq.heappush(queue, (max(waiting.at, now), SENT, place.sequence, 0))
            continue
        if place.waiting_message is not None and place.waiting_message in _keys(sequence):
            track.anchor_at = (waiting.sent_at if waiting else None) or now
        heapq.heappush(queue, (now, SEQUENCE, place.sequence, 0))
    run_list = list(runs)
    for index, run in enumerate(run_list):
        heapq.heappush(queue, (max(run.send_at, now), CAMPAIGN, run.message, index))
    while queue:
        moment, kind, name, index = heapq.heappop(queue)
        if moment > until:
            break
        if kind == SENT:
            tracks[name].anchor_at = moment
            heapq.heappush(queue, (moment, SEQUENCE, name, 0))
        elif kind == SEQUENCE:
            track = tracks[name]
            while True:
                decision = decide_step(
                    track.sequence,
                    track.passed,
                    track.enrolled_at,
                    track.anchor_at,
                    zone,
                    reader,
                    moment,
                )
                if decision.step is None or decision.due is None:
                    break
                if decision.action == Action.WAIT:
                    heapq.heappush(queue, (decision.due, SEQUENCE, name, 0))
                    break
                track.passed.add(decision.step.id)
                if decision.action == Action.SKIP:
                    track.anchor_at = decision.due
                    if skipped is not None and decision.due <= until:
                        key = track.sequence.message_key(decision.step)
                        skipped.append((key, decision.due, decision.reason))
                    continue
                key = track.sequence.message_key(decision.step)
                released = cadence.release(key, decision.due, caps, history)
                history.append((released.at, key))
                step = decision.step
                base = track.enrolled_at if step.after_confirmation else track.anchor_at
                ready = after_delay(base, step.delay, zone)
                out.append(_send(reader, zone_name, key, decision.due, released, ready))
                heapq.heappush(queue, (released.at, SENT, name, 0))
                break
        else:
            run = run_list[index]
            if run.message in known:
                continue
            due = reader_due(run.send_at, run.reader_time, zone)
            released = cadence.release(run.message, due, run.caps, history, entered)
            history.append((released.at, run.message))
            out.append(_send(reader, zone_name, run.message, due, released))
    return _within(out, until)


def _keys(sequence: Sequence) -> set[str]:
    return {sequence.message_key(step) for step in sequence.steps}


def _send(
    reader: Reader,
    zone: str,
    message: str,
    due: datetime,
    released: cadence.Release,
    ready: datetime | None = None,
) -> PlannedSend:
    return PlannedSend(
        released.at, message, reader.id, reader.email, zone, due, released.reason, ready=ready
    )


def _within(sends: list[PlannedSend], until: datetime) -> list[PlannedSend]:
    return sorted(s for s in sends if s.at <= until)


# ---------------------------------------------------------------- reading the store


@dataclass(frozen=True)
class Scope:
    """What the plan covers and with which settings."""

    now: datetime
    until: datetime
    caps: Caps = cadence.NO_CAPS
    default_zone: str | None = None
    grace: timedelta = timedelta(hours=1)
    campaign: str | None = None  # only this campaign's emails
    sequences_root: Path | None = None


def scope_from(
    settings: Settings,
    now: datetime,
    ahead: timedelta,
    *,
    campaign: str | None = None,
    sequences_root: Path | None = None,
) -> Scope:
    return Scope(
        now=now,
        until=now + ahead,
        caps=Caps.from_settings(settings),
        default_zone=settings.timezone,
        grace=timedelta(seconds=settings.campaign_grace),
        campaign=campaign,
        sequences_root=sequences_root,
    )


def scheduled_runs(session: Session, scope: Scope) -> list[tuple[Run, str | None]]:
    """The runs the clock will start by ``scope.until`` (not held for being late), with their
    segments."""
    rows = session.scalars(
        select(CampaignRun)
        .where(CampaignRun.state == RunState.SCHEDULED, CampaignRun.send_at <= scope.until)
        .order_by(CampaignRun.send_at, CampaignRun.id)
    )
    return [
        (Run(r.id, r.name, r.message, r.send_at, r.caps(scope.caps), r.reader_time), r.segment)
        for r in rows
        if scope.now - r.send_at <= scope.grace
    ]


def stopped_messages(session: Session) -> frozenset[str]:
    return frozenset(
        session.scalars(
            select(CampaignRun.message).where(CampaignRun.state.in_(STOPPED_RUN_STATES))
        )
    )


def plan(database: Database, scope: Scope, *, batch_size: int = 10_000) -> Iterator[PlannedSend]:
    """Every email due from ``scope.now`` to ``scope.until``, reader batch by reader batch (each
    batch in time order; sort the whole if one order is needed)."""
    sequences = dict(read_sequences(scope.sequences_root))
    with database.session() as session:
        runs = scheduled_runs(session, scope)
        stopped = stopped_messages(session)
    segments = {run.message: (None if seg is None else parse_segment(seg)) for run, seg in runs}
    zones: dict[str | None, str] = {}
    # A reader with nothing in the outbox that a decision reads and no sequence to move on gets
    # each campaign at ``cadence.release`` of an empty history: the same for every reader of a
    # zone, so it is decided once per run and zone (most readers of a large list).
    alone: dict[tuple[str, str], tuple[cadence.Release, datetime]] = {}
    after = 0
    while True:
        with database.session() as session:
            batch = _Batch.read(session, after, batch_size, scope, [r for r, _ in runs], segments)
        if batch is None:
            return
        known, places, members = batch.known, batch.places, batch.runs
        for row in batch.rows:
            reader_id = row[0]
            if reader_id not in known and reader_id not in places:
                its_runs = members.get(reader_id)
                if not its_runs or row[2] != CONFIRMED:
                    continue
                zone = zones.get(row[3])
                if zone is None:
                    zone = zones[row[3]] = reader_zone(row[3], scope.default_zone).key
                for run in its_runs:
                    released, due = _alone(alone, run, zone)
                    if released.at <= scope.until:
                        yield PlannedSend(
                            released.at, run.message, reader_id, row[1], zone, due, released.reason
                        )
                continue
            sends = project(
                batch.reader(row),
                batch.places.get(reader_id, ()),
                batch.known.get(reader_id, {}),
                batch.runs.get(reader_id, ()),
                sequences,
                now=scope.now,
                until=scope.until,
                caps=scope.caps,
                default_zone=scope.default_zone,
                stopped=stopped,
            )
            for send in sends:
                if scope.campaign is None or send.message == f"campaign:{scope.campaign}":
                    yield send
        after = batch.last


@dataclass
class _Batch:
    """What ``project`` needs for a batch of readers, read in a few queries."""

    rows: list[Any]  # (id, email, status, zone) per reader
    tags: dict[int, list[str]]  # of the readers moving through a sequence (for conditions)
    attributes: dict[int, dict[str, Any]]  # likewise
    places: dict[int, list[Place]]
    known: dict[int, dict[str, Known]]
    runs: dict[int, list[Run]]
    last: int

    @classmethod
    def read(
        cls,
        session: Session,
        after: int,
        size: int,
        scope: Scope,
        runs: list[Run],
        segments: Mapping[str, Any],
        *,
        everything: bool = False,
    ) -> _Batch | None:
        core = session.connection()  # plain rows: no ORM bookkeeping on a million of them
        rows: list[Any] = list(
            core.execute(
                select(Subscriber.id, Subscriber.email, Subscriber.status, Subscriber.timezone)
                .where(Subscriber.id > after)
                .order_by(Subscriber.id)
                .limit(size)
            ).all()
        )
        if not rows:
            return None
        low, high = rows[0][0], rows[-1][0]
        in_batch = Subscriber.id.between(low, high)
        tags: dict[int, list[str]] = {}
        attributes: dict[int, dict[str, Any]] = {}
        # Only what a decision from ``scope.now`` on can read: every row of a reader who is
        # moving through a sequence; for the others, what is still to be sent, and what was
        # sent recently enough to hold a campaign back (the gap before the oldest campaign the
        # clock still starts) or, for the quiet times, sequences entered as recently.
        horizon = (
            scope.now - scope.grace - max([scope.caps.min_gap, *(run.caps.min_gap for run in runs)])
        )
        quiet = max(
            [
                timedelta(0),
                *scope.caps.quiet.values(),
                *(q for r in runs for q in r.caps.quiet.values()),
            ]
        )
        enrolled = Enrolment.subscriber_id.between(low, high)
        moving = set(
            core.scalars(
                select(Enrolment.subscriber_id).where(
                    enrolled, Enrolment.state == EnrolmentState.ACTIVE
                )
            )
        )
        if moving:  # tags matter to steps' conditions only
            for reader_id, tag in core.execute(
                select(SubscriberTag.subscriber_id, SubscriberTag.tag).where(
                    SubscriberTag.subscriber_id.in_(moving)
                )
            ).all():
                tags.setdefault(reader_id, []).append(tag)
            attributes = {
                reader_id: _attributes(data)
                for reader_id, data in core.execute(
                    select(Subscriber.id, type_coerce(Subscriber.attributes, Text)).where(
                        Subscriber.id.in_(moving)
                    )
                ).all()
            }
        places: dict[int, list[Place]] = {}
        for row in core.execute(
            select(
                Enrolment.subscriber_id,
                Enrolment.sequence,
                Enrolment.state,
                Enrolment.enrolled_at,
                Enrolment.anchor_at,
                Enrolment.waiting_message,
            ).where(
                enrolled,
                (Enrolment.state == EnrolmentState.ACTIVE)
                | (Enrolment.enrolled_at > scope.now - scope.grace - quiet),
            )
        ).all():
            places.setdefault(row[0], []).append(Place(*row[1:]))
        when = func.coalesce(Delivery.sent_at, Delivery.next_attempt_at)
        wanted: ColumnElement[bool] = Delivery.subscriber_id.between(low, high)
        if not everything:
            wanted = wanted & (
                Delivery.subscriber_id.in_(moving)
                | Delivery.state.in_(list(PENDING))
                | (when > horizon)
            )
        known: dict[int, dict[str, Known]] = {}
        for delivered_to, message, state, at, sent_at, reason in core.execute(
            select(
                Delivery.subscriber_id,
                Delivery.message,
                Delivery.state,
                when,
                Delivery.sent_at,
                Delivery.deferred_reason,
            ).where(wanted)
        ).all():
            if delivered_to is None:
                continue
            known.setdefault(delivered_to, {})[message] = Known(
                message, state, cadence._aware(at), sent_at, reason
            )
        members: dict[int, list[Run]] = {}
        for run in runs:
            if scope.campaign is not None and run.name != scope.campaign:
                continue
            condition = readers_of(segments[run.message])
            single = [run]
            for reader_id in core.scalars(select(Subscriber.id).where(condition, in_batch)).all():
                found = members.get(reader_id)
                if found is None:
                    members[reader_id] = single  # shared until a second run joins
                else:
                    members[reader_id] = [*found, run]
        return cls(rows, tags, attributes, places, known, members, high)

    def reader(self, row: Any) -> Reader:
        id_, email, status, zone = row
        return Reader(
            id_, email, status, zone, self.attributes.get(id_, {}), self.tags.get(id_, [])
        )

    @property
    def readers(self) -> list[Reader]:
        return [self.reader(row) for row in self.rows]


def _alone(
    decided: dict[tuple[str, str], tuple[cadence.Release, datetime]], run: Run, zone: str
) -> tuple[cadence.Release, datetime]:
    """``cadence.release`` of a run for a reader of ``zone`` with nothing before it."""
    found = decided.get((run.message, zone))
    if found is None:
        due = reader_due(run.send_at, run.reader_time, reader_zone(zone))
        found = decided[(run.message, zone)] = (cadence.release(run.message, due, run.caps), due)
    return found


def _attributes(stored: Any) -> dict[str, Any]:
    if isinstance(stored, dict):
        return stored
    return {} if not stored or stored == "{}" else dict(json.loads(stored))
