"""``explain``: why a reader did or did not get an email, and what happens next.

For one reader and one message (a campaign, or a sequence step), every gate in the order the
clock and the sender pass them, each with its verdict and the data behind it: the reader's
status and consent (or erasure), the campaign run's state and segment, the reader's place in
the sequence and its version, the step's condition, its delay, its send window in the reader's
zone, the cadence caps, and the delivery itself (sent, with its Message-ID and time, or still
waiting, and until when).

The future is not guessed here: it is ``plan.project`` run for this reader, the projection
that ``plan`` shows and that the clock's own decisions (``sequences.decide_step``,
``cadence.release``) make. The result is plain data (``Explanation``) for the CLI and the
dashboard's reader page; ``format_explanation`` writes it as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from campaigns.sequence import WEEKDAYS, Sequence, Step
from newsletter.db import Database, utcnow
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler.cadence import Caps
from scheduler.campaigns import CampaignRun, RunState, reader_due, readers_of
from scheduler.deliveries import PENDING, Delivery, State, message_id_for
from scheduler.plan import PlannedSend, Scope, _Batch, project, scheduled_runs, stopped_messages
from scheduler.sequences import (
    Enrolment,
    EnrolmentState,
    condition_matches,
    read_sequences,
    reader_zone,
    sequence_version,
)
from subscribers.addresses import address_hash, normalise_address
from subscribers.models import Status, Subscriber, Suppression
from subscribers.segments import parse_segment

PASS, HOLD, INFO = "pass", "hold", "info"
# How far ahead explain looks for the next email of a message.
HORIZON = timedelta(days=400)


@dataclass(frozen=True)
class Gate:
    """One gate a message passes on its way to a reader, and what it said."""

    name: str  # erasure, status, consent, campaign, segment, sequence, condition, delay,
    # window, cadence, delivery
    verdict: str  # pass, hold (this gate keeps the message back), or info
    detail: str
    until: datetime | None = None  # when a holding gate opens, if it will


@dataclass(frozen=True)
class MessageExplanation:
    """The gates of one message for one reader, and the outcome."""

    message: str
    outcome: str  # sent, queued, waiting, deferred, skipped, failed, never
    gates: tuple[Gate, ...]
    at: datetime | None = None  # sent at, or when it is expected to go
    message_id: str | None = None

    @property
    def held_by(self) -> Gate | None:
        """The first gate that holds the message back, if any."""
        return next((gate for gate in self.gates if gate.verdict == HOLD), None)


@dataclass(frozen=True)
class Explanation:
    """Everything ``explain`` says about one reader."""

    email: str
    zone: str | None
    status: str | None
    messages: tuple[MessageExplanation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "zone": self.zone,
            "status": self.status,
            "messages": [
                {
                    "message": m.message,
                    "outcome": m.outcome,
                    "at": m.at.isoformat() if m.at else None,
                    "message_id": m.message_id,
                    "held_by": m.held_by.name if m.held_by else None,
                    "gates": [
                        {
                            "gate": g.name,
                            "verdict": g.verdict,
                            "detail": g.detail,
                            "until": g.until.isoformat() if g.until else None,
                        }
                        for g in m.gates
                    ],
                }
                for m in self.messages
            ],
        }


@dataclass
class _Row:
    id: int
    state: str
    at: datetime
    sent_at: datetime | None
    error: str | None
    deferred: str | None


@dataclass
class _Context:
    """What is known of the reader, read once for every message explained."""

    settings: Settings
    reader: Subscriber
    zone: ZoneInfo
    now: datetime
    rows: dict[str, _Row]
    places: dict[str, Enrolment]
    sequences: dict[str, Sequence | None]
    runs: dict[str, CampaignRun]
    planned: dict[str, PlannedSend]
    domain: str
    gates: list[Gate] = field(default_factory=list)  # the reader's own, first for every message
    segment_ok: dict[str, bool] = field(default_factory=dict)  # run message -> reader in it


def explain(
    database: Database,
    settings: Settings,
    email: str,
    message: str | None = None,
    *,
    now: datetime | None = None,
    sequences_root: Path | None = None,
) -> Explanation:
    """Explain ``message`` (``campaign:NAME``, ``NAME``, ``sequence:SEQ:STEP`` or ``SEQ:STEP``)
    for the reader at ``email``, or every campaign and sequence step when ``message`` is None.

    Raises ``NotFoundError`` for an unknown reader or message, ``ValidationError`` for
    something that is not an address.
    """
    now = now or utcnow()
    address = normalise_address(email)
    with database.session() as session:
        reader = session.scalar(
            select(Subscriber)
            .where(Subscriber.email == address)
            .options(selectinload(Subscriber.history), selectinload(Subscriber.consents))
        )
        if reader is None:
            return _erased_or_unknown(session, address, message)
        context = _context(session, settings, reader, now, sequences_root)
        keys = _messages(context, message)
        return Explanation(
            email=reader.email,
            zone=context.zone.key,
            status=reader.status,
            messages=tuple(_explain_one(context, key) for key in keys),
        )


def _erased_or_unknown(session: Session, address: str, message: str | None) -> Explanation:
    erased = session.get(Suppression, address_hash(address))
    if erased is None:
        raise NotFoundError(
            f"no reader has the address {address}; "
            "try `newsletter subscribers list --search` with part of it"
        )
    gate = Gate(
        "erasure",
        HOLD,
        f"erased on {_utc(erased.at)}: only a hash of the address is kept, and nothing is "
        "ever sent to it again",
    )
    return Explanation(address, None, None, (MessageExplanation(message or "*", "never", (gate,)),))


def _context(
    session: Session,
    settings: Settings,
    reader: Subscriber,
    now: datetime,
    sequences_root: Path | None,
) -> _Context:
    zone = reader_zone(reader.timezone, settings.timezone)
    sequences = dict(read_sequences(sequences_root))
    scope = Scope(
        now,
        now + HORIZON,
        Caps.from_settings(settings),
        settings.timezone,
        timedelta(seconds=settings.campaign_grace),
        sequences_root=sequences_root,
    )
    runs = scheduled_runs(session, scope)
    segments = {run.message: None if seg is None else parse_segment(seg) for run, seg in runs}
    batch = _Batch.read(
        session, reader.id - 1, 1, scope, [r for r, _ in runs], segments, everything=True
    )
    planned: dict[str, PlannedSend] = {}
    if batch is not None and batch.readers:
        for send in project(
            batch.readers[0],
            batch.places.get(reader.id, ()),
            batch.known.get(reader.id, {}),
            batch.runs.get(reader.id, ()),
            sequences,
            now=now,
            until=scope.until,
            caps=scope.caps,
            default_zone=settings.timezone,
            stopped=stopped_messages(session),
        ):
            planned.setdefault(send.message, send)
    rows = {
        m: _Row(i, s, at, sent, error, deferred)
        for i, m, s, at, sent, error, deferred in session.execute(
            select(
                Delivery.id,
                Delivery.message,
                Delivery.state,
                Delivery.next_attempt_at,
                Delivery.sent_at,
                Delivery.last_error,
                Delivery.deferred_reason,
            ).where(Delivery.subscriber_id == reader.id)
        )
    }
    places = {
        e.sequence: e
        for e in session.scalars(select(Enrolment).where(Enrolment.subscriber_id == reader.id))
    }
    all_runs = {r.message: r for r in session.scalars(select(CampaignRun))}
    context = _Context(
        settings,
        reader,
        zone,
        now,
        rows,
        places,
        sequences,
        all_runs,
        planned,
        settings.sender_address.rpartition("@")[2] or "localhost",
    )
    context.gates = _reader_gates(reader, zone)
    _segment_matches(session, context)
    return context


def _segment_matches(session: Session, context: _Context) -> None:
    """Whether the reader is in each run's segment, kept on the context for the gates."""
    for message, run in context.runs.items():
        condition = readers_of(None if not run.segment else parse_segment(run.segment))
        found = session.scalar(
            select(Subscriber.id).where(condition, Subscriber.id == context.reader.id)
        )
        context.segment_ok[message] = found is not None


def _reader_gates(reader: Subscriber, zone: ZoneInfo) -> list[Gate]:
    changed = reader.history[-1] if reader.history else None
    since = f" since {_utc(reader.status_changed_at)}"
    source = f" ({changed.source})" if changed is not None else ""
    if reader.status == Status.CONFIRMED:
        confirmed = reader.confirmed_at or reader.status_changed_at
        status = Gate("status", PASS, f"confirmed on {_utc(confirmed)}{source}")
    elif reader.status == Status.PENDING:
        status = Gate(
            "status",
            HOLD,
            f"not confirmed: pending{since}; only the confirmation email goes out until the "
            "reader follows its link",
        )
    else:
        status = Gate(
            "status",
            HOLD,
            f"{reader.status}{since}{source}: the reader gets nothing more",
        )
    consent = reader.consents[-1] if reader.consents else None
    if consent is None:
        consent_gate = Gate("consent", INFO, "no consent record")
    else:
        where = f" from form {consent.form}" if consent.form else ""
        ip = f", IP {consent.ip}" if consent.ip else ""
        consent_gate = Gate("consent", INFO, f"{consent.kind} on {_utc(consent.at)}{where}{ip}")
    zone_gate = Gate(
        "zone",
        INFO,
        f"{zone.key}" + ("" if reader.timezone else " (the publisher's: the reader gave none)"),
    )
    return [status, consent_gate, zone_gate]


# ---------------------------------------------------------------- which messages


def _messages(context: _Context, message: str | None) -> list[str]:
    if message is None:
        keys = [
            seq.message_key(step)
            for name, seq in sorted(context.sequences.items())
            if seq is not None
            for step in seq.steps
        ]
        keys += sorted(context.runs)
        return keys
    text = message.strip()
    if text.startswith(("campaign:", "sequence:")):
        return [text]
    if ":" in text:
        return [f"sequence:{text}"]
    if f"campaign:{text}" in context.runs:
        return [f"campaign:{text}"]
    if context.sequences.get(text) is not None:
        sequence = context.sequences[text]
        assert sequence is not None
        return [sequence.message_key(step) for step in sequence.steps]
    raise NotFoundError(
        f"message {text!r}: no scheduled campaign or sequence has that name; give a campaign "
        "name, or SEQUENCE:STEP such as welcome:vitamin-k2"
    )


def _explain_one(context: _Context, key: str) -> MessageExplanation:
    if key.startswith("campaign:"):
        own = _campaign_gates(context, key)
    else:
        own = _sequence_gates(context, key)
    gates = list(context.gates) + own
    return _outcome(context, key, gates)


def _outcome(context: _Context, key: str, gates: list[Gate]) -> MessageExplanation:
    row = context.rows.get(key)
    if row is not None:
        message_id = message_id_for(row.id, key, context.reader.id, context.domain)
        if row.state == State.SENT:
            gates.append(
                Gate("delivery", PASS, f"sent at {_both(row.sent_at, context.zone)}, {message_id}")
            )
            return MessageExplanation(key, "sent", tuple(gates), row.sent_at, message_id)
        if row.state in PENDING:
            if key in context.planned:
                at = max(row.at, context.now)
                if row.deferred:
                    gates.append(Gate("cadence", HOLD, row.deferred, row.at))
                    outcome = "deferred"
                else:
                    gates.append(
                        Gate("delivery", PASS, f"queued: goes at {_both(at, context.zone)}")
                    )
                    outcome = "queued"
                return MessageExplanation(key, outcome, tuple(gates), at, message_id)
            gates.append(Gate("delivery", HOLD, f"queued, but will not be sent ({row.state})"))
            return MessageExplanation(key, "never", tuple(gates), None, message_id)
        name = "condition" if (row.error or "").startswith("condition") else "delivery"
        gates.append(Gate(name, HOLD, f"{row.state}: {row.error or 'no reason recorded'}"))
        return MessageExplanation(key, str(row.state), tuple(gates), None, message_id)
    planned = context.planned.get(key)
    if planned is None or any(g.verdict == HOLD and g.until is None for g in gates):
        if not any(g.verdict == HOLD for g in gates):
            gates.append(Gate("delivery", HOLD, "nothing is planned for it within 400 days"))
        return MessageExplanation(key, "never", tuple(gates))
    if planned.reason:
        gates.append(Gate("cadence", HOLD, planned.reason, planned.at))
    else:
        gates.append(Gate("cadence", PASS, "no cap holds it"))
    held = any(g.verdict == HOLD for g in gates)
    return MessageExplanation(
        key, "deferred" if planned.reason and not held else "waiting", tuple(gates), planned.at
    )


# ---------------------------------------------------------------- campaigns


def _campaign_gates(context: _Context, key: str) -> list[Gate]:
    run = context.runs.get(key)
    name = key.removeprefix("campaign:")
    if run is None:
        return [
            Gate(
                "campaign",
                HOLD,
                f"campaign {name!r} is not scheduled; `newsletter campaign schedule {name}`",
            )
        ]
    when = _both(run.send_at, ZoneInfo(run.zone))
    state = RunState(run.state)
    gates = []
    if state == RunState.CANCELLED:
        gates.append(Gate("campaign", HOLD, f"cancelled on {_utc(run.state_changed_at)}"))
    elif state == RunState.PAUSED:
        gates.append(
            Gate(
                "campaign",
                HOLD,
                f"paused on {_utc(run.state_changed_at)} ({run.note}); "
                f"`newsletter campaign resume {name}` to go on",
            )
        )
    elif state == RunState.HELD:
        gates.append(
            Gate(
                "campaign",
                HOLD,
                f"held: {run.note}; `newsletter campaign resume {name}` sends it now",
            )
        )
    elif state == RunState.SCHEDULED and context.now - run.send_at > timedelta(
        seconds=context.settings.campaign_grace
    ):
        gates.append(
            Gate("campaign", HOLD, f"scheduled for {when}, now too late: the clock will hold it")
        )
    else:
        gates.append(Gate("campaign", PASS, f"{state.value}, for {when}"))
    segment = run.segment or "every confirmed reader"
    if context.segment_ok.get(key):
        gates.append(Gate("segment", PASS, f"in the segment ({segment})"))
    elif context.reader.status == Status.CONFIRMED and key not in context.rows:
        tags = ", ".join(context.reader.tag_names) or "none"
        gates.append(
            Gate("segment", HOLD, f"not in the segment {segment!r} (the reader's tags: {tags})")
        )
    due = reader_due(run.send_at, run.reader_time, context.zone)
    if state == RunState.SCHEDULED and due > context.now and key not in context.rows:
        mine = f" ({run.reader_time} in the reader's zone)" if run.reader_time else ""
        gates.append(Gate("delay", HOLD, f"goes at {_both(due, context.zone)}{mine}", due))
    return gates


# ---------------------------------------------------------------- sequence steps


def _sequence_gates(context: _Context, key: str) -> list[Gate]:
    _, name, step_id = [*key.split(":", 2), "", ""][:3]
    sequence = context.sequences.get(name)
    if sequence is None:
        if name not in context.sequences:
            raise NotFoundError(f"message {key!r}: there is no sequence {name!r}")
        return [Gate("sequence", HOLD, f"the file of sequence {name!r} does not parse")]
    step = next((s for s in sequence.steps if s.id == step_id), None)
    if step is None:
        if key in context.rows:
            return [Gate("sequence", INFO, f"step {step_id!r} is no longer in the file")]
        raise NotFoundError(f"message {key!r}: sequence {name!r} has no step {step_id!r}")
    place = context.places.get(name)
    if place is None:
        return [
            Gate(
                "sequence",
                HOLD,
                f"never entered sequence {name!r} (readers enter it when they confirm)",
            )
        ]
    version = sequence_version(sequence)
    stale = "" if place.version == version else f" (file since changed to {version})"
    where = f"next step {place.next_step!r}" if place.next_step else "past the last step"
    facts = f"entered {_utc(place.enrolled_at)}, {where}, version {place.version}{stale}"
    if place.state == EnrolmentState.LEFT and key not in context.rows:
        return [Gate("sequence", HOLD, f"left the sequence on {_utc(place.left_at)}; {facts}")]
    if key in context.rows:
        return [Gate("sequence", PASS, facts)]
    index = sequence.steps.index(step)
    passed = {s.id for s in sequence.steps if sequence.message_key(s) in context.rows}
    after = [s.id for s in sequence.steps[index + 1 :] if s.id in passed]
    if after:
        return [
            Gate(
                "sequence",
                HOLD,
                f"the reader was past this step (at {after[-1]!r}) when it was added, so it "
                f"is never sent to them; {facts}",
            )
        ]
    gates = [Gate("sequence", PASS, facts)]
    if step.when:
        matched, reason = condition_matches(step.when, context.reader)
        gates.append(Gate("condition", PASS if matched else HOLD, reason or f"meets {step.when}"))
        if not matched:
            return gates
    previous = _previous_pending(context, sequence, index)
    if previous is not None:
        message, at = previous
        gates.append(
            Gate(
                "sequence",
                HOLD,
                f"waits for step {message.rpartition(':')[2]!r} first, planned at "
                f"{_both(at, context.zone)}",
                at,
            )
        )
    return gates + _timing_gates(context, key, step)


def _previous_pending(
    context: _Context, sequence: Sequence, index: int
) -> tuple[str, datetime] | None:
    """The earlier step of the sequence still to be sent to the reader, if any."""
    for earlier in reversed(sequence.steps[:index]):
        message = sequence.message_key(earlier)
        row = context.rows.get(message)
        if row is not None and row.state not in PENDING:
            return None
        planned = context.planned.get(message)
        if planned is not None:
            return message, planned.at
    return None


def _timing_gates(context: _Context, key: str, step: Step) -> list[Gate]:
    """The delay and the send window, from the projection's times for this step."""
    planned = context.planned.get(key)
    if planned is None or planned.ready is None:
        return []
    since = "confirmation" if step.after_confirmation else "the previous step"
    ready, due = planned.ready, planned.due
    if ready > context.now:
        delay = Gate(
            "delay",
            HOLD,
            f"{_span(step.delay)} after {since}: due {_both(ready, context.zone)}",
            ready,
        )
    else:
        delay = Gate("delay", PASS, f"{_span(step.delay)} after {since}: due {_utc(ready)}")
    gates = [delay]
    if step.window is not None:
        window = f"{_window(step)} in {context.zone.key}"
        if due > ready:
            gates.append(Gate("window", HOLD, f"{window}: opens {_both(due, context.zone)}", due))
        else:
            gates.append(Gate("window", PASS, window))
    return gates


# ---------------------------------------------------------------- text


def format_explanation(explanation: Explanation) -> str:
    """The explanation as lines of text: per message, its outcome, then each gate."""
    lines = [
        f"{explanation.email} ({explanation.status or 'erased'}, "
        f"zone {explanation.zone or 'unknown'})"
    ]
    marks = {PASS: "ok  ", HOLD: "HOLD", INFO: "    "}
    for item in explanation.messages:
        when = f" at {_utc(item.at)}" if item.at else ""
        held = f" (held by {item.held_by.name})" if item.held_by and item.outcome != "sent" else ""
        lines.append("")
        lines.append(f"{item.message}: {item.outcome}{when}{held}")
        for gate in item.gates:
            lines.append(f"  {marks.get(gate.verdict, gate.verdict)} {gate.name:<9} {gate.detail}")
    return "\n".join(lines)


def _utc(moment: datetime | None) -> str:
    return "unknown" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _both(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "unknown"
    local = moment.astimezone(zone)
    return f"{local:%a %Y-%m-%d %H:%M} {zone.key} ({_utc(moment)})"


def _window(step: Step) -> str:
    window = step.window
    assert window is not None
    days = ",".join(WEEKDAYS[d] for d in window.days)
    return f"window {days} {window.start:%H:%M}-{window.end:%H:%M}"


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
