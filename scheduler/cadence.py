"""Cadence caps: how often one reader may be mailed, across sequences and campaigns.

Two caps, set in the settings and per campaign in its front matter:

- a least gap between two emails to one reader (``NEWSLETTER_CADENCE_MIN_GAP=20h``: "never two
  emails within 20 hours"), counting sequence steps and campaigns, sent or still to be sent;
- a quiet time after a reader enters a sequence, during which no campaign reaches them
  (``NEWSLETTER_CADENCE_QUIET=welcome:3d``: "no campaign in the first 3 days of the welcome").

A cap *defers*, never drops: the decision is taken when due work becomes a delivery row, whose
first attempt is set to the released time and whose ``deferred_reason`` says why, so that
``plan`` and ``explain`` show it. System emails (confirmation, goodbye) are never capped and do
not count: a reader who asks for something gets it at once.

``release`` is the pure decision; the clock's enqueue paths (``scheduler.sequences``,
``scheduler.campaigns``), ``plan``, ``explain`` and ``simulate`` all call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.settings import Settings
from scheduler.deliveries import Delivery, State

# Messages the caps apply to and count: marketing, not the reader's own requests.
CAPPED_PREFIXES = ("sequence:", "campaign:")
# Deliveries that were, or will be, in the reader's inbox.
COUNTED_STATES = (State.SENT, State.QUEUED, State.CLAIMED, State.UNCERTAIN)


@dataclass(frozen=True)
class Caps:
    """The caps in force for one message."""

    min_gap: timedelta = timedelta(0)
    quiet: Mapping[str, timedelta] = field(default_factory=dict)  # sequence -> quiet time

    @classmethod
    def from_settings(cls, settings: Settings | None) -> Caps:
        if settings is None:
            return cls()
        return cls(
            timedelta(seconds=settings.cadence_min_gap),
            {name: timedelta(seconds=s) for name, s in settings.cadence_quiet.items()},
        )

    def for_campaign(self, min_gap: float | None, quiet: Mapping[str, float] | None) -> Caps:
        """These caps with a campaign's front matter (``cadence_min_gap``, ``cadence_quiet``)
        in place of the settings' where it sets them."""
        return Caps(
            self.min_gap if min_gap is None else timedelta(seconds=min_gap),
            self.quiet if quiet is None else {k: timedelta(seconds=v) for k, v in quiet.items()},
        )

    @property
    def off(self) -> bool:
        return not self.min_gap and not any(self.quiet.values())


NO_CAPS = Caps()


@dataclass(frozen=True)
class Release:
    """When a due message may go out, and why later than due (None when not deferred)."""

    at: datetime
    reason: str | None = None


def is_capped(message: str) -> bool:
    return message.startswith(CAPPED_PREFIXES)


def release(
    message: str,
    due: datetime,
    caps: Caps,
    earlier: Iterable[tuple[datetime, str]] = (),
    enrolled: Mapping[str, datetime] | None = None,
) -> Release:
    """When ``message``, due at ``due``, may go out to a reader under ``caps``.

    ``earlier`` holds the reader's other capped emails as ``(time, message)`` (sent, or the time
    they are set to go); ``enrolled`` the time they entered each sequence. A campaign waits out
    each quiet time; then any email waits until ``min_gap`` after the reader's latest email
    that is closer than that, so that no two are closer than ``min_gap`` whatever their order.
    """
    at, reasons = due.astimezone(UTC), []
    if not is_capped(message) or caps.off:
        return Release(at)
    if message.startswith("campaign:"):
        for sequence, entered in sorted((enrolled or {}).items()):
            span = caps.quiet.get(sequence)
            if span and entered + span > at:
                at = entered + span
                reasons.append(
                    f"no campaign in the first {_span(span)} of sequence {sequence!r} "
                    f"(entered {_when(entered)})"
                )
    if caps.min_gap:
        close = [(t, m) for t, m in earlier if m != message and t > at - caps.min_gap]
        if close:
            latest, other = max(close)
            at = latest + caps.min_gap
            reasons.append(f"at most one email per {_span(caps.min_gap)} ({other} {_when(latest)})")
    if not reasons:
        return Release(at)
    return Release(at, f"deferred to {_when(at)}: " + "; ".join(reasons))


# ---------------------------------------------------------------- what the store knows


def history(session: Session, subscriber_ids: list[int]) -> dict[int, list[tuple[datetime, str]]]:
    """Each reader's capped emails, sent or to be sent, as ``(time, message)``."""
    found: dict[int, list[tuple[datetime, str]]] = {reader: [] for reader in subscriber_ids}
    if not subscriber_ids:
        return found
    when = func.coalesce(Delivery.sent_at, Delivery.next_attempt_at)
    rows = session.execute(
        select(Delivery.subscriber_id, when, Delivery.message).where(
            Delivery.subscriber_id.in_(subscriber_ids),
            Delivery.state.in_(list(COUNTED_STATES)),
            Delivery.message.startswith("sequence:") | Delivery.message.startswith("campaign:"),
        )
    )
    for reader, at, message in rows:
        if reader is not None:
            found[reader].append((_aware(at), message))
    return found


def enrolments(
    session: Session, subscriber_ids: list[int], sequences: Iterable[str]
) -> dict[int, dict[str, datetime]]:
    """When each reader entered each of ``sequences`` (those with a quiet time)."""
    from scheduler.sequences import Enrolment  # the sequences module uses this one

    names = [name for name in sequences]
    found: dict[int, dict[str, datetime]] = {reader: {} for reader in subscriber_ids}
    if not names or not subscriber_ids:
        return found
    rows = session.execute(
        select(Enrolment.subscriber_id, Enrolment.sequence, Enrolment.enrolled_at).where(
            Enrolment.subscriber_id.in_(subscriber_ids), Enrolment.sequence.in_(names)
        )
    )
    for reader, sequence, at in rows:
        found[reader][sequence] = _aware(at)
    return found


def _aware(moment: Any) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
