"""What the dashboard's pages show, read from the store: readers by status and by day, the latest
signups, the next sends, a reader's deliveries, and the small SVG chart the overview draws.

Read-only queries; every value is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.campaigns import CampaignRun, RunState
from scheduler.deliveries import Delivery
from scheduler.sequences import Enrolment, EnrolmentState
from subscribers.models import Status, Subscriber

CHART_DAYS = 30
LATEST_SIGNUPS = 10
NEXT_SENDS = 10
UPCOMING_STEPS_WINDOW = timedelta(hours=48)


def shown_time(moment: datetime | None, zone: str) -> str:
    """A stored time as the marketer reads it, in ``zone``: ``2026-12-01 09:00 CET``."""
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def shown_iso_time(text: str | None, zone: str) -> str:
    """An ISO 8601 time as the store's queries give it (``…Z``), shown as ``shown_time`` does."""
    if not text:
        return ""
    return shown_time(datetime.fromisoformat(text.replace("Z", "+00:00")), zone)


def readers_by_status(session: Session) -> dict[str, int]:
    """How many readers have each status (every status listed, zero included)."""
    counts = dict.fromkeys([status.value for status in Status], 0)
    for status, count in session.execute(
        select(Subscriber.status, func.count()).group_by(Subscriber.status)
    ):
        counts[str(status)] = int(count)
    return counts


@dataclass(frozen=True)
class Day:
    """One day of the chart: the readers who signed up that day and the total at its end."""

    day: date
    signups: int
    total: int


def signups_by_day(session: Session, today: date, days: int = CHART_DAYS) -> list[Day]:
    """The last ``days`` days (UTC) up to ``today``: signups each day and the running total."""
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    before = int(
        session.scalar(select(func.count(Subscriber.id)).where(Subscriber.created_at < start)) or 0
    )
    day_of = func.date(Subscriber.created_at)
    per_day = {
        str(day): int(count)
        for day, count in session.execute(
            select(day_of, func.count()).where(Subscriber.created_at >= start).group_by(day_of)
        )
    }
    result = []
    total = before
    for offset in range(days):
        day = first + timedelta(days=offset)
        count = per_day.get(day.isoformat(), 0)
        total += count
        result.append(Day(day, count, total))
    return result


def latest_signups(session: Session, limit: int = LATEST_SIGNUPS) -> list[Subscriber]:
    """The readers who signed up last, newest first."""
    return list(
        session.scalars(
            select(Subscriber).order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
        ).fetchmany(limit)
    )


def signups_by_form(session: Session, since: datetime) -> list[tuple[str, int]]:
    """Signups since ``since`` per form (``(no form)`` for imports without a source), most first."""
    rows = session.execute(
        select(Subscriber.form, func.count())
        .where(Subscriber.created_at >= since)
        .group_by(Subscriber.form)
        .order_by(func.count().desc())
    )
    return [(form or "(no form)", int(count)) for form, count in rows]


def next_sends(session: Session, limit: int = NEXT_SENDS) -> list[CampaignRun]:
    """Campaign runs still to go out (scheduled, paused or held), soonest first."""
    waiting = (RunState.SCHEDULED, RunState.PAUSED, RunState.HELD)
    return list(
        session.scalars(
            select(CampaignRun)
            .where(CampaignRun.state.in_([state.value for state in waiting]))
            .order_by(CampaignRun.send_at)
            .limit(limit)
        )
    )


def upcoming_steps(session: Session, now: datetime) -> list[tuple[str, str, int]]:
    """Sequence steps due within the next 48 hours: (sequence, step, readers), soonest first."""
    rows = session.execute(
        select(
            Enrolment.sequence, Enrolment.next_step, func.count(), func.min(Enrolment.next_due_at)
        )
        .where(
            Enrolment.state == EnrolmentState.ACTIVE,
            Enrolment.next_due_at.is_not(None),
            Enrolment.next_due_at <= now + UPCOMING_STEPS_WINDOW,
        )
        .group_by(Enrolment.sequence, Enrolment.next_step)
        .order_by(func.min(Enrolment.next_due_at))
    )
    return [(str(sequence), str(step), int(count)) for sequence, step, count, _ in rows]


def reader_deliveries(session: Session, subscriber_id: int) -> list[Delivery]:
    """Every message made for a reader, newest first."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        )
    )


# ---------------------------------------------------------------- the chart


def signup_chart(days: list[Day], *, width: int = 600, height: int = 160) -> dict[str, Any]:
    """An SVG of readers over time (a line, the total) and signups per day (bars).

    Returned as numbers for the template to draw; the template scales with ``viewBox``, so the
    chart fits a phone screen without a horizontal scroll.
    """
    pad_top, pad_bottom = 10, 2
    plot = height - pad_top - pad_bottom
    step = width / max(len(days), 1)
    top_total = max((day.total for day in days), default=0) or 1
    top_signups = max((day.signups for day in days), default=0) or 1
    bars = []
    points = []
    for index, day in enumerate(days):
        x = index * step
        bar = plot * day.signups / top_signups * 0.6
        bars.append(
            {
                "x": round(x + step * 0.15, 1),
                "y": round(pad_top + plot - bar, 1),
                "width": round(step * 0.7, 1),
                "height": round(bar, 1),
                "title": escape(f"{day.day.isoformat()}: {day.signups} signups"),
            }
        )
        y = pad_top + plot - plot * day.total / top_total
        points.append(f"{round(x + step / 2, 1)},{round(y, 1)}")
    first = days[0] if days else None
    last = days[-1] if days else None
    summary = (
        f"Readers over the last {len(days)} days: {first.total if first else 0} on "
        f"{first.day if first else ''}, {last.total if last else 0} on {last.day if last else ''}; "
        f"{sum(day.signups for day in days)} signups in all."
    )
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "line": " ".join(points),
        "baseline": height - pad_bottom,
        "summary": summary,
        "first_label": first.day.strftime("%d %b") if first else "",
        "last_label": last.day.strftime("%d %b") if last else "",
        "top_total": top_total,
    }
