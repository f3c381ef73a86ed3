"""``sequence simulate``: a reader's whole timeline in a sequence, on a simulated clock.

Either a made-up reader (a zone, a confirmation time, tags) or a real one from the store; the
timeline comes from ``plan.project``, the clock's own decisions, so what it shows is what the
clock does, daylight-saving changes, weekends and send windows included. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from campaigns.sequence import Sequence
from newsletter.db import Database
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler.cadence import Caps
from scheduler.plan import Known, Place, Reader, Scope, _Batch, project
from scheduler.sequences import EnrolmentState, reader_zone
from subscribers.addresses import normalise_address
from subscribers.models import Status, Subscriber


@dataclass(frozen=True)
class TimelineEntry:
    """One step in the timeline: sent, queued, planned, or skipped (and why)."""

    message: str
    at: datetime
    zone: str
    state: str
    note: str = ""

    @property
    def step(self) -> str:
        return self.message.rpartition(":")[2]

    @property
    def local(self) -> datetime:
        return self.at.astimezone(reader_zone(self.zone))

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "message": self.message,
            "at": self.at.isoformat(),
            "local_at": self.local.isoformat(),
            "weekday": f"{self.local:%A}",
            "state": self.state,
            "note": self.note,
        }


def simulate(
    sequence: Sequence,
    *,
    zone: str,
    confirmed_at: datetime,
    days: int = 30,
    caps: Caps | None = None,
    tags: tuple[str, ...] = (),
) -> list[TimelineEntry]:
    """The timeline of a reader in ``zone`` who confirms at ``confirmed_at``."""
    reader = Reader(0, "simulated reader", Status.CONFIRMED, zone, {}, list(tags))
    place = Place(sequence.name, EnrolmentState.ACTIVE, confirmed_at, confirmed_at)
    return _timeline(reader, [place], {}, sequence, confirmed_at, days, caps or Caps(), zone)


def simulate_reader(
    database: Database,
    settings: Settings,
    sequence: Sequence,
    email: str,
    *,
    now: datetime,
    days: int = 30,
) -> list[TimelineEntry]:
    """A real reader's timeline: the steps they got, then the next ``days`` from ``now``."""
    scope = Scope(now, now + timedelta(days=days), Caps.from_settings(settings), settings.timezone)
    with database.session() as session:
        reader_id = session.scalar(
            select(Subscriber.id).where(Subscriber.email == normalise_address(email))
        )
        if reader_id is None:
            raise NotFoundError(f"no reader has the address {normalise_address(email)}")
        batch = _Batch.read(session, reader_id - 1, 1, scope, [], {}, everything=True)
    assert batch is not None
    reader = batch.readers[0]
    places = [p for p in batch.places.get(reader_id, []) if p.sequence == sequence.name]
    if not places:
        raise NotFoundError(f"{reader.email} never entered sequence {sequence.name!r}")
    known = batch.known.get(reader_id, {})
    return _timeline(reader, places, known, sequence, now, days, scope.caps, settings.timezone)


def _timeline(
    reader: Reader,
    places: list[Place],
    known: dict[str, Known],
    sequence: Sequence,
    now: datetime,
    days: int,
    caps: Caps,
    default_zone: str | None,
) -> list[TimelineEntry]:
    zone = reader_zone(reader.timezone, default_zone).key
    prefix = f"sequence:{sequence.name}:"
    entries = [
        TimelineEntry(k.message, k.sent_at or k.at, zone, str(k.state), k.reason or "")
        for k in known.values()
        if k.message.startswith(prefix) and k.state not in ("queued", "claimed", "uncertain")
    ]
    skipped: list[tuple[str, datetime, str]] = []
    for send in project(
        reader,
        places,
        known,
        [],
        {sequence.name: sequence},
        now=now,
        until=now + timedelta(days=days),
        caps=caps,
        default_zone=default_zone,
        skipped=skipped,
    ):
        if send.message.startswith(prefix):
            note = send.reason or ""
            if not note and send.ready is not None and send.due > send.ready:
                note = f"send window (due {send.ready.astimezone(reader_zone(zone)):%a %H:%M})"
            entries.append(
                TimelineEntry(
                    send.message, send.at, zone, "queued" if send.queued else "planned", note
                )
            )
    entries += [TimelineEntry(m, at, zone, "skipped", why) for m, at, why in skipped]
    order = {sequence.message_key(step): i for i, step in enumerate(sequence.steps)}
    return sorted(entries, key=lambda e: (e.at, order.get(e.message, 0)))
