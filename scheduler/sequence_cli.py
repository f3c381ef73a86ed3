"""``newsletter sequence list | status NAME``: the sequences and where their readers stand.

Registered by the shell as ``app.add_typer(sequence_cli.app, name="sequence")``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from campaigns.sequence import WEEKDAYS, list_sequences, load_sequence, parse_sequence
from newsletter import runtime
from newsletter.db import utcnow
from newsletter.errors import SchedulingError, ValidationError
from scheduler.cadence import Caps
from scheduler.campaigns import parse_when
from scheduler.diff import diff_sequence
from scheduler.sequences import (
    STEP_STATES,
    Enrolment,
    EnrolmentState,
    reader_zone,
    sequence_status,
)
from scheduler.simulate import TimelineEntry, simulate, simulate_reader

app = typer.Typer(help="Sequences: the steps readers get after confirming.", no_args_is_help=True)
console = Console(highlight=False)


def _describe_delay(step: Any) -> str:
    anchor = "confirmation" if step.after_confirmation else "previous"
    text = f"{step.delay} after {anchor}"
    if step.window is not None:
        days = ",".join(WEEKDAYS[d] for d in step.window.days)
        text += f"; {days} {step.window.start:%H:%M}-{step.window.end:%H:%M} reader's time"
    if step.when:
        text += f"; when {step.when}"
    return text


@app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line of output."),
) -> None:
    """Every sequence, its steps and how many readers are in it."""
    found = list_sequences()
    with runtime.session() as session:
        rows = session.execute(
            select(Enrolment.sequence, Enrolment.state, func.count()).group_by(
                Enrolment.sequence, Enrolment.state
            )
        ).all()
    readers: dict[str, dict[str, int]] = {}
    for name, state, count in rows:
        readers.setdefault(name, dict.fromkeys([s.value for s in EnrolmentState], 0))[state] = int(
            count
        )
    items: list[dict[str, Any]] = [
        {
            "name": sequence.name,
            "description": sequence.description,
            "steps": [step.id for step in sequence.steps],
            "readers": readers.get(
                sequence.name, dict.fromkeys([s.value for s in EnrolmentState], 0)
            ),
        }
        for sequence in found
    ]
    if as_json:
        typer.echo(json.dumps({"sequences": items}))
        return
    table = Table("sequence", "steps", "active", "completed", "left", "description")
    for item in items:
        table.add_row(
            item["name"],
            ", ".join(item["steps"]),
            str(item["readers"]["active"]),
            str(item["readers"]["completed"]),
            str(item["readers"]["left"]),
            item["description"],
        )
    console.print(table)


@app.command("status")
def status_command(
    name: str = typer.Argument(..., help="The sequence, such as welcome."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object of counts per step."),
) -> None:
    """Per step: readers waiting for it, queued, sent, skipped, failed, and who left there."""
    sequence = load_sequence(name)
    with runtime.session() as session:
        status = sequence_status(session, sequence)
    if as_json:
        typer.echo(json.dumps(status))
        return
    table = Table("step", *STEP_STATES, "when", title=f"sequence {name}")
    for step in sequence.steps:
        counts = status["steps"][step.id]
        table.add_row(step.id, *(str(counts[s]) for s in STEP_STATES), _describe_delay(step))
    console.print(table)
    readers = status["readers"]
    console.print(
        f"readers: {readers['active']} active, {readers['completed']} completed, "
        f"{readers['left']} left"
    )


@app.command("simulate")
def simulate_command(
    name: str = typer.Argument(..., help="The sequence, such as welcome."),
    reader: str | None = typer.Option(None, "--reader", help="A reader's address: their timeline."),
    zone: str | None = typer.Option(
        None, "--zone", help="A made-up reader's zone (default NEWSLETTER_TIMEZONE)."
    ),
    confirmed_at: str | None = typer.Option(
        None, "--confirmed-at", help='When they confirm, in --zone: "2026-10-30 18:30" (now).'
    ),
    tag: list[str] = typer.Option([], "--tag", help="A tag the made-up reader has (repeat)."),
    days: int = typer.Option(30, "--days", min=1, max=3660, help="How many days to show."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """A reader's whole timeline in a sequence on a simulated clock (nothing is sent)."""
    started = time.process_time()
    sequence = load_sequence(name)
    settings = runtime.settings()
    if reader is not None:
        if zone or confirmed_at or tag:
            raise ValidationError(
                {"reader": "give --reader alone, or --zone and --confirmed-at for a made-up one"}
            )
        timeline = simulate_reader(
            runtime.database(), settings, sequence, reader, now=utcnow(), days=days
        )
        who = reader
    else:
        where = zone or settings.timezone
        parse_when(utcnow(), where)  # refuses an unknown zone, naming it
        try:
            when = parse_when(confirmed_at, where) if confirmed_at else utcnow()
        except SchedulingError as error:  # its message names --at, the schedule option
            raise SchedulingError(error.message.replace("--at", "--confirmed-at")) from None
        timeline = simulate(
            sequence,
            zone=where,
            confirmed_at=when,
            days=days,
            caps=Caps.from_settings(settings),
            tags=tuple(tag),
        )
        local = when.astimezone(reader_zone(where))
        who = f"a reader in {where} confirming {local:%a %Y-%m-%d %H:%M}"
    elapsed = (time.process_time() - started) * 1000
    if as_json:
        typer.echo(
            json.dumps(
                {"sequence": name, "reader": who, "timeline": [e.to_dict() for e in timeline]}
            )
        )
        return
    _print_timeline(name, who, timeline, elapsed)


def _print_timeline(name: str, who: str, timeline: list[TimelineEntry], elapsed: float) -> None:
    table = Table("step", "reader's time", "UTC", "state", "note", title=f"{name}: {who}")
    for entry in timeline:
        table.add_row(
            entry.step,
            f"{entry.local:%a %Y-%m-%d %H:%M %Z}",
            f"{entry.at:%Y-%m-%d %H:%M}",
            entry.state,
            entry.note,
        )
    console.print(table)
    console.print(f"simulated in {elapsed:.1f} ms of CPU")


@app.command("diff")
def diff_command(
    name: str = typer.Argument(..., help="The sequence, such as welcome."),
    file: Path | None = typer.Option(
        None,
        "--file",
        help="An edited copy to compare before putting it in place (default: the file as it is).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """How many readers an edit gives an inserted step, skips a removed one, or moves in time."""
    sequence = load_sequence(name)
    if file is not None:
        candidate = parse_sequence(file)
        sequence = type(sequence)(name, sequence.path, candidate.description, candidate.steps)
    found = diff_sequence(runtime.database(), runtime.settings(), sequence, now=utcnow())
    if as_json:
        typer.echo(json.dumps(found.to_dict()))
        return
    console.print(
        f"sequence {name}: {found.readers} active readers, {found.on_other_versions} on "
        f"another version than {'--file' if file else 'the file'} ({found.version})"
    )
    for label, steps in (
        ("added", found.steps_added),
        ("removed", found.steps_removed),
        ("changed", found.steps_changed),
    ):
        if steps:
            console.print(f"steps {label}: {', '.join(steps)}")
    console.print(f"{found.inserted} readers would get an inserted step")
    console.print(f"{found.removed} readers would skip a removed step")
    console.print(f"{found.moved} readers would have a step move in time")
    if found.unknown:
        console.print(f"{found.unknown} readers are on a version whose steps were not kept")
    console.print(
        "steps already sent are never sent again; the clock applies the file on its next tick"
    )
