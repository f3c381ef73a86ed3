"""Sequences in the outbox: who is where in each sequence, and the deliveries of due steps.

A reader who confirms enters every sequence (``enrol``, called by the store's ``confirmed`` hook
in the confirmation's own transaction); one who unsubscribes leaves them all at once (``leave``).
``enqueue_due_steps(database, now)``, called by the clock every minute or so, moves each reader
on: it creates the delivery (``sequence:NAME:STEP_ID``) of every step that fell due.

When a step falls due: the previous step's *sent* time (or the confirmation, for the first step
and for steps ``from: confirmation``) plus the step's delay, then moved forward into the step's
send window in the reader's zone (the reader's own, else the publisher's ``NEWSLETTER_TIMEZONE``,
else UTC). Delays of whole days or weeks are counted on the reader's wall clock ("2d" after
Friday 18:30 is Sunday 18:30 there, whatever daylight saving did in between); other delays
are elapsed time (a step keeps its delay as a ``timedelta``, so "24h" counts as "1d"). Windows
are read with ``zoneinfo`` on the day in question, so 08:00 New York is 12:00 UTC before the
November change and 13:00 UTC after it.

What is stored, and what is derived:

- One ``Enrolment`` row per (sequence, reader) (table ``sequence_enrolments``, migration 0006):
  its state (active, completed, left), when the reader entered (``enrolled_at``), when the last
  step passed (``anchor_at``: sent, or its due time when skipped), the step that comes next and
  when (``next_step``, ``next_due_at``; no time while that step's delivery waits to be sent, in
  ``waiting_message``), and the version of the file (a hash of its steps) it was planned with.
- Which steps a reader already passed is *derived from the deliveries outbox*: every step that
  reached a reader has its row there, sent or not; a step skipped because the reader fails its
  ``when`` condition gets a row in state ``skipped`` with the reason in ``last_error``. A reader
  never gets a step twice, because a delivery is unique per (message, reader) and a step's key is
  its id, never its position.

The decision itself is ``decide_step`` (pure: no database): the clock's ``Mover`` applies it,
and ``plan``, ``explain`` and ``simulate`` call it for the readers they show. A step that falls
due becomes a delivery first tried at ``cadence.release`` (the cadence caps), with the reason
when that is later (``deliveries.deferred_reason``).

Editing a file: on the next run, enrolments planned with another version are planned again.
The steps of every version applied are kept (``sequence_versions``) for ``sequence diff``.
A reader's position is the last step, in the new file's order, that they passed; the next step
is the one after it. So a step inserted before a reader's position is never sent to them, one
inserted after it is; a removed step is not sent (a delivery of it still queued is skipped); a
changed delay or window applies to every reader not yet past that step.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from campaigns.sequence import SEQUENCES_DIR, SendWindow, Sequence, Step, parse_sequence
from newsletter.db import Base, Database, utcnow
from newsletter.errors import ContentError, NotFoundError
from scheduler import cadence
from scheduler.cadence import NO_CAPS, Caps
from scheduler.deliveries import PENDING, Delivery, State, _insert
from subscribers.models import Status, Subscriber

log = logging.getLogger("scheduler.sequences")

# Deliveries in these states will not change any more: the reader has passed that step.
FINAL = (State.SENT, State.FAILED, State.BOUNCED, State.SKIPPED)


class EnrolmentState(enum.StrEnum):
    """Where a reader stands in one sequence."""

    ACTIVE = "active"  # a step is still to come (or its delivery is waiting to be sent)
    COMPLETED = "completed"  # passed every step of the file as it was last read
    LEFT = "left"  # unsubscribed, bounced or complained: gets nothing more


class Enrolment(Base):
    """One reader's place in one sequence."""

    __tablename__ = "sequence_enrolments"

    id: Mapped[int] = mapped_column(primary_key=True)
    sequence: Mapped[str] = mapped_column(String(64))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=EnrolmentState.ACTIVE)
    version: Mapped[str] = mapped_column(String(16), default="")
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    anchor_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_step: Mapped[str | None] = mapped_column(String(64))
    next_due_at: Mapped[datetime | None]
    waiting_message: Mapped[str | None] = mapped_column(String(200))
    left_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("sequence", "subscriber_id", name="uq_sequence_enrolments_reader"),
        Index("ix_sequence_enrolments_due", "sequence", "state", "next_due_at", "id"),
        Index("ix_sequence_enrolments_subscriber_id", "subscriber_id"),
    )


class SequenceVersion(Base):
    """The steps of a sequence file as the clock applied them, kept by version so that
    ``sequence diff`` can compare the file on disk with what readers are on."""

    __tablename__ = "sequence_versions"

    sequence: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(16), primary_key=True)
    steps: Mapped[str] = mapped_column(Text)  # JSON, as ``steps_to_json`` writes it
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


enrolments = cast(Table, Enrolment.__table__)
deliveries = cast(Table, Delivery.__table__)
versions = cast(Table, SequenceVersion.__table__)


# ---------------------------------------------------------------- time


@functools.lru_cache(maxsize=1024)
def reader_zone(timezone: str | None, default: str | None = None) -> ZoneInfo:
    """The reader's zone, else the publisher's (``NEWSLETTER_TIMEZONE``), else UTC.

    Cached: ``ZoneInfo`` keeps only the last eight zones strongly, and a list cycling through
    more would read a zone file per reader."""
    for name in (timezone, default):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def after_delay(moment: datetime, delay: timedelta, zone: ZoneInfo) -> datetime:
    """``moment`` plus ``delay``: whole days on the reader's wall clock, else elapsed time."""
    if delay and delay % timedelta(days=1) == timedelta(0):
        wall = moment.astimezone(zone).replace(tzinfo=None) + delay
        return wall.replace(tzinfo=zone).astimezone(UTC)
    return (moment + delay).astimezone(UTC)


def into_window(moment: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The first time at or after ``moment`` inside ``window`` in ``zone`` (UTC, aware).

    The window's end is exclusive: a step due at 18:00 with a 08:00–18:00 window waits for the
    next allowed day's 08:00.
    """
    if window is None:
        return moment.astimezone(UTC)
    day = moment.astimezone(zone).date()
    for offset in range(8):
        date = day + timedelta(days=offset)
        if date.weekday() not in window.days:
            continue
        start = datetime.combine(date, window.start, tzinfo=zone).astimezone(UTC)
        end = datetime.combine(date, window.end, tzinfo=zone).astimezone(UTC)
        if moment < start:
            return start
        if moment < end:
            return moment.astimezone(UTC)
    raise ValueError(f"send window {window} has no allowed day")  # parse_sequence prevents it


def step_due(step: Step, enrolled_at: datetime, anchor_at: datetime, zone: ZoneInfo) -> datetime:
    """When ``step`` falls due for a reader who entered at ``enrolled_at`` and passed the
    previous step at ``anchor_at``."""
    base = enrolled_at if step.after_confirmation else anchor_at
    return into_window(after_delay(base, step.delay, zone), step.window, zone)


# ---------------------------------------------------------------- conditions


class ReaderFacts(Protocol):
    """What the decisions read of a reader: a ``Subscriber`` row, or a plain snapshot."""

    @property
    def status(self) -> str: ...

    @property
    def timezone(self) -> str | None: ...

    @property
    def tag_names(self) -> list[str]: ...

    @property
    def attributes(self) -> dict[str, Any]: ...


def condition_matches(when: str, reader: ReaderFacts) -> tuple[bool, str]:
    """Whether ``reader`` meets a step's ``when``, and why not.

    MINIMAL until ``subscribers/segments.py`` (the campaign branch) lands: ``tag:NAME``,
    ``not tag:NAME`` and ``attribute:KEY=VALUE``, joined with ``and``. Anything else is not
    understood, and the step is skipped with that reason (never sent by guess).
    """
    for part in when.split(" and "):
        term = part.strip()
        negate = term.startswith("not ")
        term = term.removeprefix("not ").strip()
        if term.startswith("tag:"):
            found = term.removeprefix("tag:") in reader.tag_names
        elif term.startswith("attribute:") and "=" in term:
            key, _, value = term.removeprefix("attribute:").partition("=")
            found = str((reader.attributes or {}).get(key.strip(), "")) == value.strip()
        else:
            return False, f"condition {when!r} is not understood"
        if found == negate:
            return False, f"condition {when!r} not met"
    return True, ""


# ---------------------------------------------------------------- files


def sequence_version(sequence: Sequence) -> str:
    """A short hash of the steps: an enrolment planned with another version is planned again."""
    text = repr(
        [
            (s.id, s.content_name, s.delay, s.after_confirmation, s.window, s.when)
            for s in sequence.steps
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_sequences(root: Path | None = None) -> list[tuple[str, Sequence | None]]:
    """Every sequence file under ``root`` by name, with None for a file that does not parse
    (logged): its readers still enter it, and move on once the file is fixed."""
    found: list[tuple[str, Sequence | None]] = []
    for path in sorted((root or SEQUENCES_DIR).glob("*.yaml")):
        found.append((path.stem, _parsed(path)))
    return found


# The clock reads every file every few seconds: each is parsed once per version (mtime, size).
_parsed_files: dict[Path, tuple[tuple[int, int], Sequence | None]] = {}


def _parsed(path: Path) -> Sequence | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _parsed_files.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    sequence: Sequence | None
    try:
        sequence = parse_sequence(path)
    except ContentError as error:
        log.warning("event=sequence_unreadable sequence=%s error=%r", path.stem, error.message)
        sequence = None
    _parsed_files[path] = (stamp, sequence)
    return sequence


def steps_to_json(sequence: Sequence) -> str:
    """The steps as plain data (their timing and conditions, not their content)."""
    return json.dumps(
        [
            {
                "id": s.id,
                "content": s.content_name,
                "delay": s.delay.total_seconds(),
                "after_confirmation": s.after_confirmation,
                "window": None
                if s.window is None
                else [list(s.window.days), f"{s.window.start:%H:%M}", f"{s.window.end:%H:%M}"],
                "when": s.when,
            }
            for s in sequence.steps
        ]
    )


def steps_from_json(name: str, text: str) -> Sequence:
    """A ``Sequence`` rebuilt from ``steps_to_json``: enough to decide when steps fall due."""
    steps = []
    for raw in json.loads(text):
        window = raw["window"]
        steps.append(
            Step(
                id=raw["id"],
                content_name=raw["content"],
                delay=timedelta(seconds=raw["delay"]),
                after_confirmation=raw["after_confirmation"],
                window=None
                if window is None
                else SendWindow(
                    tuple(window[0]), time.fromisoformat(window[1]), time.fromisoformat(window[2])
                ),
                when=raw["when"],
            )
        )
    return Sequence(name=name, path=Path(f"{name}.yaml"), description="", steps=tuple(steps))


def remember_version(session: Session, sequence: Sequence, now: datetime) -> str:
    """Keep the steps of ``sequence``'s current version (once); returns the version."""
    version = sequence_version(sequence)
    session.execute(
        _insert(session)(versions)
        .values(sequence=sequence.name, version=version, steps=steps_to_json(sequence), seen_at=now)
        .on_conflict_do_nothing(index_elements=["sequence", "version"])
    )
    return version


# ---------------------------------------------------------------- the decision


class Action(enum.StrEnum):
    """What the clock does next for one reader in one sequence."""

    WAIT = "wait"  # the next step is not due yet
    SEND = "send"  # the next step is due: create its delivery
    SKIP = "skip"  # the next step is due but the reader fails its condition
    LEAVE = "leave"  # a step is due but the reader is no longer confirmed
    COMPLETE = "complete"  # no step is left


@dataclass(frozen=True)
class StepDecision:
    action: Action
    step: Step | None = None
    due: datetime | None = None
    reason: str = ""


def next_step(sequence: Sequence, passed: set[str]) -> Step | None:
    """The step after the last one, in the file's order, that the reader passed."""
    steps = sequence.steps
    index = _positions(steps)
    last = max((index[step_id] for step_id in passed if step_id in index), default=-1)
    return steps[last + 1] if last + 1 < len(steps) else None


# Each step's position, per list of steps (looked up by identity: hashing steps costs more).
_step_positions: dict[int, tuple[tuple[Step, ...], dict[str, int]]] = {}


def _positions(steps: tuple[Step, ...]) -> dict[str, int]:
    found = _step_positions.get(id(steps))
    if found is None or found[0] is not steps:
        if len(_step_positions) > 256:
            _step_positions.clear()
        found = (steps, {step.id: position for position, step in enumerate(steps)})
        _step_positions[id(steps)] = found
    return found[1]


def decide_step(
    sequence: Sequence,
    passed: set[str],
    enrolled_at: datetime,
    anchor_at: datetime,
    zone: ZoneInfo,
    reader: ReaderFacts | None,
    now: datetime,
) -> StepDecision:
    """The one decision behind the clock, ``plan``, ``explain`` and ``simulate``: what becomes
    of the reader's next step at ``now``, given the steps they passed and when the last one
    passed (``anchor_at``)."""
    step = next_step(sequence, passed)
    if step is None:
        return StepDecision(Action.COMPLETE)
    due = step_due(step, enrolled_at, anchor_at, zone)
    if due > now:
        return StepDecision(Action.WAIT, step, due)
    if reader is None or reader.status != Status.CONFIRMED:
        return StepDecision(
            Action.LEAVE, step, due, f"reader is {reader.status if reader else 'gone'}"
        )
    if step.when:
        matched, reason = condition_matches(step.when, reader)
        if not matched:
            return StepDecision(Action.SKIP, step, due, reason)
    return StepDecision(Action.SEND, step, due)


# ---------------------------------------------------------------- moving a reader on


@dataclass
class Mover:
    """Moves enrolments of one sequence on at ``now``; counts the deliveries it creates."""

    session: Session
    sequence: Sequence
    now: datetime
    default_zone: str | None
    caps: Caps = NO_CAPS
    created: int = 0
    history: dict[int, list[tuple[datetime, str]]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.version = remember_version(self.session, self.sequence, self.now)
        self.keys = {self.sequence.message_key(step) for step in self.sequence.steps}
        self.prefix = f"sequence:{self.sequence.name}:"

    def passed(self, subscriber_ids: list[int]) -> dict[int, set[str]]:
        """The step ids each reader has a delivery of (sent, waiting or skipped)."""
        found: dict[int, set[str]] = {reader: set() for reader in subscriber_ids}
        rows = self.session.execute(
            select(deliveries.c.subscriber_id, deliveries.c.message).where(
                deliveries.c.subscriber_id.in_(subscriber_ids),
                deliveries.c.message.startswith(self.prefix, autoescape=True),
            )
        )
        for reader, message in rows:
            found[reader].add(message.removeprefix(self.prefix))
        return found

    def next_step(self, passed: set[str]) -> Step | None:
        return next_step(self.sequence, passed)

    def move(self, batch: list[Enrolment]) -> None:
        """Move each enrolment of ``batch`` as far as ``now`` allows."""
        ids = [enrolment.subscriber_id for enrolment in batch]
        readers = {
            reader.id: reader
            for reader in self.session.scalars(select(Subscriber).where(Subscriber.id.in_(ids)))
        }
        passed = self.passed(ids)
        if self.caps.min_gap:
            self.history = cadence.history(self.session, ids)
        waiting = self.waiting_states(batch)
        for enrolment in batch:
            self.move_one(
                enrolment,
                readers.get(enrolment.subscriber_id),
                passed[enrolment.subscriber_id],
                waiting.get(enrolment.id),
            )
        self.write_rows()

    def write_rows(self) -> None:
        """The deliveries decided for this batch, in one statement."""
        if not self.rows:
            return
        insert = _insert(self.session)(deliveries).on_conflict_do_nothing(
            index_elements=["message", "subscriber_id"]
        )
        self.session.execute(insert, self.rows)  # one compiled statement, executemany
        self.rows = []

    def waiting_states(self, batch: list[Enrolment]) -> dict[int, tuple[str, datetime | None]]:
        """The state (and sent time) of the delivery each waiting enrolment waits on."""
        waiting: dict[tuple[int | None, str], int] = {
            (e.subscriber_id, e.waiting_message): e.id for e in batch if e.waiting_message
        }
        found: dict[int, tuple[str, datetime | None]] = {}
        if not waiting:
            return found
        rows = self.session.execute(
            select(
                Delivery.subscriber_id, Delivery.message, Delivery.state, Delivery.sent_at
            ).where(
                Delivery.subscriber_id.in_([reader for reader, _ in waiting]),
                Delivery.message.in_({message for _, message in waiting}),
            )
        )
        for reader, message, state, sent_at in rows:
            enrolment_id = waiting.get((reader, message))
            if enrolment_id is not None:
                found[enrolment_id] = (state, sent_at)
        return found

    def move_one(
        self,
        enrolment: Enrolment,
        reader: Subscriber | None,
        passed: set[str],
        waiting: tuple[str, datetime | None] | None,
    ) -> None:
        if enrolment.state != EnrolmentState.ACTIVE:
            return
        enrolment.version = self.version
        enrolment.updated_at = self.now
        if enrolment.waiting_message is not None:
            state, sent_at = waiting or (State.SKIPPED.value, None)
            removed = enrolment.waiting_message not in self.keys
            if removed and state == State.QUEUED:
                self.skip_removed(enrolment)
                state = State.SKIPPED.value
            if state not in FINAL:
                return  # still to be sent: the next step counts from its sent time
            if not removed:
                # The next step counts from when this one was sent (or seen to end otherwise).
                enrolment.anchor_at = sent_at or self.now
            enrolment.waiting_message = None
        zone = reader_zone(reader.timezone if reader else None, self.default_zone)
        while True:
            decision = decide_step(
                self.sequence,
                passed,
                enrolment.enrolled_at,
                enrolment.anchor_at,
                zone,
                reader,
                self.now,
            )
            step, due = decision.step, decision.due
            if step is None or due is None:
                enrolment.state = EnrolmentState.COMPLETED
                enrolment.next_step = enrolment.next_due_at = None
                return
            enrolment.next_step, enrolment.next_due_at = step.id, due
            if decision.action == Action.WAIT:
                return
            if decision.action == Action.LEAVE or reader is None:
                mark_left(enrolment, self.now)
                return
            key = self.sequence.message_key(step)
            if decision.action == Action.SKIP:
                self.record_skip(key, reader.id, due, decision.reason)
                passed.add(step.id)
                enrolment.anchor_at = due
                continue
            earlier = self.history.setdefault(reader.id, [])
            released = cadence.release(key, due, self.caps, earlier)
            self.record_send(key, reader.id, released)
            earlier.append((released.at, key))
            self.created += 1
            passed.add(step.id)
            enrolment.waiting_message, enrolment.next_due_at = key, None
            return

    def record_send(self, key: str, subscriber_id: int, released: cadence.Release) -> None:
        """The step's delivery, first tried at its released time (and why, when deferred)."""
        self.rows.append(self._row(key, subscriber_id, State.QUEUED, released.at, released.reason))

    def record_skip(self, key: str, subscriber_id: int, at: datetime, reason: str) -> None:
        """A step the reader does not get: a ``skipped`` delivery keeps the place and the why."""
        self.rows.append(self._row(key, subscriber_id, State.SKIPPED, at, None, reason))

    def _row(
        self,
        key: str,
        subscriber_id: int,
        state: State,
        at: datetime,
        deferred: str | None,
        error: str | None = None,
    ) -> dict[str, Any]:
        return {
            "message": key,
            "subscriber_id": subscriber_id,
            "state": state.value,
            "attempts": 0,
            "uncertain_count": 0,
            "next_attempt_at": at,
            "created_at": self.now,
            "deferred_reason": deferred,
            "last_error": error,
        }

    def skip_removed(self, enrolment: Enrolment) -> None:
        """The step was removed from the file before its delivery was claimed: not sent."""
        self.session.execute(
            update(deliveries)
            .where(
                deliveries.c.message == enrolment.waiting_message,
                deliveries.c.subscriber_id == enrolment.subscriber_id,
                deliveries.c.state == State.QUEUED,
            )
            .values(state=State.SKIPPED, last_error="step removed from the sequence")
        )


def mark_left(enrolment: Enrolment, now: datetime) -> None:
    enrolment.state = EnrolmentState.LEFT
    enrolment.left_at = now
    enrolment.next_due_at = enrolment.waiting_message = None
    enrolment.updated_at = now


# ---------------------------------------------------------------- the store's events


def enrol(
    session: Session,
    subscriber_id: int,
    *,
    now: datetime | None = None,
    root: Path | None = None,
    default_zone: str | None = None,
    caps: Caps = NO_CAPS,
) -> int:
    """The reader enters every sequence, in the caller's transaction; returns the deliveries
    created (the steps due at once, such as the welcome email).

    A reader who left and confirms again resumes where they were: no step is sent twice.
    """
    now = now or utcnow()
    created = 0
    for name, sequence in read_sequences(root):
        enrolment = session.scalars(
            select(Enrolment).where(
                Enrolment.sequence == name, Enrolment.subscriber_id == subscriber_id
            )
        ).one_or_none()
        if enrolment is None:
            enrolment = Enrolment(
                sequence=name,
                subscriber_id=subscriber_id,
                state=EnrolmentState.ACTIVE,
                version="",
                enrolled_at=now,
                anchor_at=now,
                next_due_at=now,
                updated_at=now,
            )
            session.add(enrolment)
        elif enrolment.state == EnrolmentState.LEFT:
            enrolment.state = EnrolmentState.ACTIVE
            enrolment.anchor_at = enrolment.next_due_at = enrolment.updated_at = now
            enrolment.left_at = None
        else:
            continue
        session.flush()
        if sequence is not None:
            mover = Mover(session, sequence, now, default_zone, caps)
            mover.move([enrolment])
            created += mover.created
    session.flush()
    return created


def leave(
    session: Session,
    subscriber_id: int,
    *,
    now: datetime | None = None,
    root: Path | None = None,
) -> int:
    """The reader leaves every sequence at once, in the caller's transaction; their sequence
    deliveries not yet claimed are skipped. Returns the sequences left.

    Each enrolment keeps, as ``next_step``, the first step the reader will not get: what
    ``sequence status`` counts as ``left`` there.
    """
    now = now or utcnow()
    active = list(
        session.scalars(
            select(Enrolment).where(
                Enrolment.subscriber_id == subscriber_id,
                Enrolment.state == EnrolmentState.ACTIVE,
            )
        )
    )
    files: dict[str, Sequence | None] = {}
    if any(enrolment.waiting_message for enrolment in active):
        files = dict(read_sequences(root))
    for enrolment in active:
        sequence = files.get(enrolment.sequence)
        if enrolment.waiting_message is not None and sequence is not None:
            state = session.scalar(
                select(Delivery.state).where(
                    Delivery.message == enrolment.waiting_message,
                    Delivery.subscriber_id == subscriber_id,
                )
            )
            if state in FINAL:  # they got it: they leave before the step after it
                mover = Mover(session, sequence, now, None)
                step = mover.next_step(mover.passed([subscriber_id])[subscriber_id])
                enrolment.next_step = step.id if step is not None else None
        mark_left(enrolment, now)
    session.execute(
        update(deliveries)
        .where(
            deliveries.c.subscriber_id == subscriber_id,
            deliveries.c.message.startswith("sequence:"),
            deliveries.c.state == State.QUEUED,
        )
        .values(state=State.SKIPPED, last_error="reader left the sequence")
    )
    session.flush()
    return len(active)


# ---------------------------------------------------------------- the clock's work


def enqueue_due_steps(
    database: Database,
    now: datetime | None = None,
    *,
    root: Path | None = None,
    default_zone: str | None = None,
    batch_size: int = 500,
    caps: Caps = NO_CAPS,
) -> int:
    """Create the delivery of every step due at ``now``; returns how many were created.

    Called by the clock (every minute or so) and safe to call from several processes: each
    delivery is unique per (message, reader). Readers are taken ``batch_size`` at a time by id,
    each batch in its own transaction. Three kinds of enrolment need work: those planned with
    another version of the file, those whose waiting delivery was sent (or ended otherwise),
    and those whose next step fell due.
    """
    now = now or utcnow()
    created = 0
    for name, sequence in read_sequences(root):
        if sequence is None:
            continue
        version = sequence_version(sequence)
        active = (Enrolment.sequence == name) & (Enrolment.state == EnrolmentState.ACTIVE)
        finished = (
            select(Delivery.id)
            .where(
                Delivery.message == Enrolment.waiting_message,
                Delivery.subscriber_id == Enrolment.subscriber_id,
                Delivery.state.in_(FINAL),
            )
            .exists()
        )
        for condition in (
            active & (Enrolment.version != version),
            active & Enrolment.waiting_message.is_not(None) & finished,
            active & Enrolment.waiting_message.is_(None) & (Enrolment.next_due_at <= now),
        ):
            created += _move_all(database, sequence, condition, now, default_zone, batch_size, caps)
    if created:
        log.info("event=sequence_steps_enqueued count=%s", created)
    return created


def _move_all(
    database: Database,
    sequence: Sequence,
    condition: ColumnElement[bool],
    now: datetime,
    default_zone: str | None,
    batch_size: int,
    caps: Caps,
) -> int:
    after = 0
    created = 0
    while True:
        with database.session() as session:
            query = (
                select(Enrolment)
                .where(condition, Enrolment.id > after)
                .order_by(Enrolment.id)
                .limit(batch_size)
            )
            if not database.is_sqlite:  # several clocks: each reader is moved by one of them
                query = query.with_for_update(skip_locked=True, of=Enrolment)
            batch = list(session.scalars(query))
            if not batch:
                return created
            mover = Mover(session, sequence, now, default_zone, caps)
            mover.move(batch)
            created += mover.created
            after = batch[-1].id


# ---------------------------------------------------------------- status


STEP_STATES = ("waiting", "queued", "sent", "skipped", "failed", "left")


def sequence_status(session: Session, sequence: Sequence) -> dict[str, Any]:
    """Per step, how many readers are ``waiting`` for it, have it ``queued`` (being sent),
    ``sent``, ``skipped`` (condition not met, step removed, or reader suppressed at send time),
    ``failed`` (failed or bounced), or ``left`` the sequence while it was their next step;
    and the readers by enrolment state."""
    steps: dict[str, dict[str, int]] = {}
    for step in sequence.steps:
        counts = dict.fromkeys(STEP_STATES, 0)
        rows = session.execute(
            select(Delivery.state, func.count())
            .where(Delivery.message == sequence.message_key(step))
            .group_by(Delivery.state)
        )
        for state, count in rows:
            if state in PENDING:
                counts["queued"] += count
            elif state == State.SENT:
                counts["sent"] += count
            elif state == State.SKIPPED:
                counts["skipped"] += count
            else:
                counts["failed"] += count
        steps[step.id] = counts
    places = session.execute(
        select(Enrolment.next_step, Enrolment.state, func.count())
        .where(
            Enrolment.sequence == sequence.name,
            Enrolment.waiting_message.is_(None),
            Enrolment.state.in_([EnrolmentState.ACTIVE, EnrolmentState.LEFT]),
        )
        .group_by(Enrolment.next_step, Enrolment.state)
    )
    for step_id, state, count in places:
        if step_id in steps:
            steps[step_id]["waiting" if state == EnrolmentState.ACTIVE else "left"] += count
    readers = dict.fromkeys([s.value for s in EnrolmentState], 0)
    for state, count in session.execute(
        select(Enrolment.state, func.count())
        .where(Enrolment.sequence == sequence.name)
        .group_by(Enrolment.state)
    ):
        readers[state] = int(count)
    return {"sequence": sequence.name, "readers": readers, "steps": steps}


def enrolment_of(session: Session, sequence: str, subscriber_id: int) -> Enrolment:
    """One reader's enrolment; ``NotFoundError`` when they never entered ``sequence``."""
    found = session.scalars(
        select(Enrolment).where(
            Enrolment.sequence == sequence, Enrolment.subscriber_id == subscriber_id
        )
    ).one_or_none()
    if found is None:
        raise NotFoundError(f"reader {subscriber_id} is not in sequence {sequence!r}")
    return found
