"""``sequence diff``: what an edit of a live sequence file does to its readers, before it does.

The clock keeps the steps of every version of a file it applied (``sequence_versions``), and
each enrolment the version it was planned with. For each active reader on another version than
the file's, the reader's next emails are projected twice by the clock's own decisions
(``plan.project``): with the steps they are on and with the file as it is now. A reader then
gets an inserted step (one the old version did not have), skips a removed one, or has a step
move in time. Steps a reader already got are never sent again: a step's delivery is keyed by
its id, and the projection starts from what the outbox holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from campaigns.sequence import Sequence, Step
from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.cadence import Caps
from scheduler.plan import Known, Place, Reader, Scope, _Batch, project
from scheduler.sequences import (
    Enrolment,
    EnrolmentState,
    SequenceVersion,
    sequence_version,
    steps_from_json,
)

HORIZON = timedelta(days=400)


@dataclass
class SequenceDiff:
    """How many active readers each kind of change reaches."""

    sequence: str
    version: str  # the file's, now
    readers: int = 0  # active readers
    on_other_versions: int = 0
    inserted: int = 0  # readers who will get a step their version did not have
    removed: int = 0  # readers who will not get a step their version had
    moved: int = 0  # readers with a step at another time
    unknown: int = 0  # readers on a version whose steps were not kept
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def diff_sequence(
    database: Database,
    settings: Settings,
    sequence: Sequence,
    *,
    now: datetime,
    batch_size: int = 2000,
) -> SequenceDiff:
    """What applying ``sequence`` (the file as it is now) changes for its active readers."""
    version = sequence_version(sequence)
    result = SequenceDiff(sequence.name, version)
    with database.session() as session:
        kept = {
            row.version: steps_from_json(sequence.name, row.steps)
            for row in session.scalars(
                select(SequenceVersion).where(SequenceVersion.sequence == sequence.name)
            )
        }
    _describe_steps(result, sequence, [s for v, s in kept.items() if v != version])
    scope = Scope(now, now + HORIZON, Caps.from_settings(settings), settings.timezone)
    after = 0
    while True:
        with database.session() as session:
            batch = _Batch.read(session, after, batch_size, scope, [], {})
            if batch is None:
                return result
            versions = dict(
                session.execute(
                    select(Enrolment.subscriber_id, Enrolment.version).where(
                        Enrolment.sequence == sequence.name,
                        Enrolment.state == EnrolmentState.ACTIVE,
                        Enrolment.subscriber_id.between(batch.readers[0].id, batch.last),
                    )
                ).all()
            )
        for reader in batch.readers:
            if reader.id not in versions:
                continue
            result.readers += 1
            on = versions[reader.id]
            if on == version:
                continue
            result.on_other_versions += 1
            old = kept.get(on)
            if old is None:
                result.unknown += 1
                continue
            places = [p for p in batch.places.get(reader.id, []) if p.sequence == sequence.name]
            known = batch.known.get(reader.id, {})

            before = _timeline(reader, places, known, old, scope, settings)
            after_edit = _timeline(reader, places, known, sequence, scope, settings)
            old_ids = {step.id for step in old.steps}
            new_ids = {step.id for step in sequence.steps}
            result.inserted += any(m.rpartition(":")[2] not in old_ids for m in after_edit)
            result.removed += any(m.rpartition(":")[2] not in new_ids for m in before)
            result.moved += any(m in after_edit and after_edit[m] != at for m, at in before.items())
        after = batch.last


def _timeline(
    reader: Reader,
    places: list[Place],
    known: dict[str, Known],
    steps: Sequence,
    scope: Scope,
    settings: Settings,
) -> dict[str, datetime]:
    """When each step still to come goes to the reader under ``steps``."""
    sends = project(
        reader,
        places,
        known,
        [],
        {steps.name: steps},
        now=scope.now,
        until=scope.until,
        caps=scope.caps,
        default_zone=settings.timezone,
    )
    return {s.message: s.at for s in sends if not s.queued}


def _describe_steps(result: SequenceDiff, now: Sequence, olds: list[Sequence]) -> None:
    current: dict[str, Step] = {step.id: step for step in now.steps}
    for old in olds:
        earlier = {step.id: step for step in old.steps}
        for step_id in current:
            if step_id not in earlier and step_id not in result.steps_added:
                result.steps_added.append(step_id)
        for step_id, step in earlier.items():
            if step_id not in current:
                if step_id not in result.steps_removed:
                    result.steps_removed.append(step_id)
            elif _timing(step) != _timing(current[step_id]) and step_id not in result.steps_changed:
                result.steps_changed.append(step_id)


def _timing(step: Step) -> tuple[Any, ...]:
    return (step.delay, step.after_confirmation, step.window, step.when)
