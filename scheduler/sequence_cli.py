"""``newsletter sequence list | status NAME``: the sequences and where their readers stand.

Registered by the shell as ``app.add_typer(sequence_cli.app, name="sequence")``.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from campaigns.sequence import WEEKDAYS, list_sequences, load_sequence
from newsletter import runtime
from scheduler.sequences import STEP_STATES, Enrolment, EnrolmentState, sequence_status

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
