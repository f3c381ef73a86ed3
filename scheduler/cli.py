"""``newsletter worker``, ``newsletter deliveries …`` and the scheduling half of ``newsletter
campaign …`` (schedule, pause, resume, cancel, status, retry-failed; the shell attaches them to the
campaign group, since ``campaigns`` may not import the scheduler)."""

from __future__ import annotations

import csv
import heapq
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from newsletter import runtime
from newsletter.db import utcnow
from newsletter.settings import parse_duration
from scheduler import campaigns as runs
from scheduler.clock import DueWork, schedule_campaign, start_clock
from scheduler.deliveries import delivery_counts, enqueue, retry_failed
from scheduler.explain import explain, format_explanation
from scheduler.plan import PlannedSend, plan, scope_from
from scheduler.rendering import Renderer
from scheduler.sequences import reader_zone
from scheduler.worker import WorkerOptions, run_worker, tune_interpreter
from subscribers.export import escape_cell

# What the clock calls every few seconds besides campaign runs; the shell adds to it (for
# example the sequences' ``enqueue_due_steps``) before the CLI runs.
DUE_WORK: list[DueWork] = []
# Whether this process may run the clock (the shell sets PostgreSQL leadership here).
SHOULD_RUN: list[Callable[[], bool]] = []

app = typer.Typer(help="Deliveries: counts by state, retries.", no_args_is_help=True)
console = Console(highlight=False)


def worker(
    until_idle: bool = typer.Option(
        False, "--until-idle", help="Stop once no delivery is queued, claimed or uncertain."
    ),
    lease: float = typer.Option(60.0, help="Seconds a dead worker's deliveries wait to be resent."),
    poll_interval: float = typer.Option(1.0, help="Seconds between looks for due deliveries."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every delivery."),
    clock: bool = typer.Option(
        True, "--clock/--no-clock", help="Also run the clock (scheduled campaigns, due work)."
    ),
) -> None:
    """Run the clock and the sender (several against PostgreSQL scale out); stops on Ctrl-C or
    SIGTERM."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    settings = runtime.settings()
    database = runtime.database()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    running_clock = None
    if clock:
        running_clock = start_clock(
            settings, database, due_work=DUE_WORK, should_run=should_run_clock()
        )
    render = Renderer(settings, database)
    tune_interpreter()  # start-up is over
    try:
        report = run_worker(
            settings,
            database,
            render,
            stop_event=stop,
            options=WorkerOptions(
                lease=timedelta(seconds=lease), poll_interval=poll_interval, until_idle=until_idle
            ),
        )
    finally:
        if running_clock is not None:
            running_clock.stop()
    summary = " ".join(f"{key}={value}" for key, value in sorted(report.counts.items()))
    console.print(summary or "nothing was due")


@app.command("status")
def status(
    message: str = typer.Argument(..., help="The message key, such as campaign:vitamin-k2."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object of counts by state."),
) -> None:
    """Counts of a message's deliveries by state."""
    with runtime.session() as session:
        counts = delivery_counts(session, message)
    if as_json:
        typer.echo(json.dumps(counts))
        return
    table = Table("state", "deliveries", title=message)
    for state, count in counts.items():
        table.add_row(state, str(count))
    console.print(table)


@app.command("retry-failed")
def retry(message: str = typer.Argument(..., help="The message key.")) -> None:
    """Queue a message's failed deliveries again (bounced and skipped readers are left alone)."""
    with runtime.session() as session:
        count = retry_failed(session, message)
    typer.echo(f"{count} failed deliveries queued again")


@app.command("enqueue")
def enqueue_all(message: str = typer.Argument(..., help="The message key.")) -> None:
    """Create a message's deliveries for every confirmed reader (existing ones are kept)."""
    created = enqueue(runtime.database(), message)
    typer.echo(f"{created} deliveries created")


def should_run_clock() -> Callable[[], bool]:
    """The shell's leadership test, or "always" when none is set."""
    return SHOULD_RUN[0] if SHOULD_RUN else (lambda: True)


# ---------------------------------------------------------------- newsletter campaign …


def schedule(
    name: str = typer.Argument(..., help="The campaign's name (its file name without .md)."),
    at: str = typer.Option(..., "--at", help='When, wall-clock time: "2026-12-01 09:00".'),
    tz: str = typer.Option("", "--tz", help="The zone of --at (default NEWSLETTER_TIMEZONE)."),
    segment: str | None = typer.Option(
        None, "--segment", help='Readers to send to, e.g. "tag:vip and not attr:plan=free".'
    ),
    content: Path | None = typer.Option(
        None, "--content", help="Folder of campaign files (default: the shipped ones)."
    ),
    reader_time: bool = typer.Option(
        False,
        "--reader-time",
        help="Send at that wall-clock time in each reader's zone (09:00 for everyone).",
    ),
) -> None:
    """Schedule a campaign: checked now, sent at its time by the running clock."""
    settings = runtime.settings()
    run = schedule_campaign(
        runtime.database(),
        settings,
        name,
        at,
        tz or settings.timezone,
        segment,
        content_root=content,
        reader_time=reader_time,
    )
    when = f"{run.local_send_at:%Y-%m-%d %H:%M %Z} ({run.send_at:%Y-%m-%d %H:%M} UTC)"
    if reader_time:
        when = f"{at} in each reader's zone (starting {run.send_at:%Y-%m-%d %H:%M} UTC)"
    whom = f"readers matching {run.segment!r}" if run.segment else "every confirmed reader"
    typer.echo(f"campaign {name!r} scheduled for {when} to {whom}")


def pause(name: str = typer.Argument(..., help="The campaign's name.")) -> None:
    """Pause a campaign: nothing more of it is sent until `resume`."""
    runs.pause(runtime.database(), name)
    typer.echo(f"campaign {name!r} paused; `newsletter campaign resume {name}` to go on")


def resume(name: str = typer.Argument(..., help="The campaign's name.")) -> None:
    """Resume a paused campaign, or send a held (late) one now."""
    run = runs.resume(runtime.database(), name)
    typer.echo(f"campaign {name!r} is {run.state} again")


def cancel(name: str = typer.Argument(..., help="The campaign's name.")) -> None:
    """Cancel a campaign for good: what is not sent yet is skipped."""
    _, skipped = runs.cancel(runtime.database(), name)
    typer.echo(f"campaign {name!r} cancelled; {skipped} unsent deliveries skipped")


def retry_failed_command(name: str = typer.Argument(..., help="The campaign's name.")) -> None:
    """Send again to the readers whose delivery failed (bounced and skipped ones are left)."""
    count = runs.retry_failed_run(runtime.database(), name)
    typer.echo(f"{count} failed deliveries of campaign {name!r} queued again")


def campaign_status(
    name: str | None = typer.Argument(None, help="The campaign's name (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
    watch: bool = typer.Option(False, "--watch", help="A progress bar until it is done."),
) -> None:
    """Counts by state (queued, sent, failed, bounced, skipped, …) and the time left."""
    database = runtime.database()
    if watch and name:
        _watch(database, name)
        return
    if name:
        found = runs.status(database, name)
        if as_json:
            typer.echo(json.dumps(found))
            return
        _print_status(found)
        return
    every = runs.all_statuses(database)
    if as_json:
        typer.echo(json.dumps({"campaigns": every}))
        return
    if not every:
        typer.echo("no campaign is scheduled")
    for found in every:
        _print_status(found)


def _print_status(found: dict[str, Any]) -> None:
    console.print(f"{found['campaign']}: {found['state']}, at {found['local_send_at']}")
    if found.get("segment"):
        console.print(f"segment: {found['segment']}")
    table = Table("state", "deliveries")
    for key in ("queued", "claimed", "sent", "failed", "bounced", "skipped", "uncertain"):
        table.add_row(key, str(found[key]))
    table.add_row("total", str(found["total"]))
    console.print(table)
    if found.get("note"):
        console.print(f"note: {found['note']}")
    left = found.get("seconds_left")
    if left:
        console.print(f"about {_clock_text(left)} left at {found['rate_per_second']}/s")


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _watch(database: Any, name: str) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(name, total=None)
        while True:
            found = runs.status(database, name)
            done = found["total"] - found["queued"] - found["claimed"] - found["uncertain"]
            progress.update(
                task,
                total=found["total"] or None,
                completed=done,
                description=f"{name} ({found['state']})",
            )
            if found["state"] in ("done", "cancelled", "held"):
                break
            time.sleep(1.0)


# ---------------------------------------------------------------- newsletter explain | plan

# Rows the plan's table shows; the CSV and JSON carry every row.
PLAN_TABLE_ROWS = 50


def explain_command(
    email: str = typer.Argument(..., help="The reader's address."),
    message: str | None = typer.Argument(
        None,
        help="A campaign name, or SEQUENCE:STEP such as welcome:vitamin-k2 (default: every one).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """Why a reader did or did not get an email, gate by gate, and what comes next."""
    found = explain(runtime.database(), runtime.settings(), email, message)
    if as_json:
        typer.echo(json.dumps(found.to_dict()))
        return
    typer.echo(format_explanation(found))


def plan_command(
    ahead: str = typer.Option("48h", "--next", help="How far ahead: 48h, 7d, 90m."),
    campaign: str | None = typer.Option(None, "--campaign", help="Only this campaign."),
    as_csv: bool = typer.Option(False, "--csv", help="Every row as CSV on standard output."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """Exactly who gets what and when, computed by the code that sends."""
    try:
        span = timedelta(seconds=parse_duration(ahead))
    except ValueError:
        raise typer.BadParameter(f"{ahead!r}: expected a duration such as 48h, 7d or 90m") from None
    settings = runtime.settings()
    scope = scope_from(settings, utcnow(), span, campaign=campaign)
    planned = plan(runtime.database(), scope)
    if not (as_csv or as_json):
        # The table needs the first rows and the counts: one pass, whatever the list's size.
        by_message: Counter[str] = Counter()
        first = heapq.nsmallest(PLAN_TABLE_ROWS, _counted(planned, by_message))
        _plan_table(scope.now, scope.until, first, by_message)
        return
    sends = sorted(planned)  # by time, message, reader
    if as_csv:
        _plan_csv(sends)
        return
    document = {
        "from": scope.now.isoformat(),
        "until": scope.until.isoformat(),
        "count": len(sends),
        "by_message": dict(sorted(Counter(send.message for send in sends).items())),
        "sends": [send.row() for send in sends],
    }
    typer.echo(json.dumps(document))


def _counted(sends: Iterable[PlannedSend], counts: Counter[str]) -> Iterator[PlannedSend]:
    for send in sends:
        counts[send.message] += 1
        yield send


def _plan_csv(sends: list[PlannedSend]) -> None:
    """Every row; the cells a marketer's text or a reader's address fill are escaped."""
    writer = csv.writer(sys.stdout)
    writer.writerow(("at", "local_at", "message", "email", "zone", "due", "deferred", "queued"))
    for send in sends:
        local = send.at.astimezone(reader_zone(send.zone))
        writer.writerow(
            (
                send.at.isoformat(),
                local.isoformat(),
                escape_cell(send.message),
                escape_cell(send.email),
                send.zone,
                send.due.isoformat(),
                escape_cell(send.reason or ""),
                send.queued,
            )
        )


def _plan_table(
    start: datetime, end: datetime, sends: list[PlannedSend], by_message: Counter[str]
) -> None:
    total = sum(by_message.values())
    console.print(f"plan from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: {total} emails")
    if not sends:
        return
    table = Table("UTC", "reader's time", "message", "reader", "deferred")
    for send in sends[:PLAN_TABLE_ROWS]:
        local = send.at.astimezone(reader_zone(send.zone))
        table.add_row(
            f"{send.at:%Y-%m-%d %H:%M}",
            f"{local:%a %H:%M} {send.zone}",
            send.message,
            send.email,
            send.reason or "",
        )
    console.print(table)
    if total > len(sends):
        console.print(f"… and {total - len(sends)} more: --csv lists every one")
    for message, count in sorted(by_message.items()):
        console.print(f"{message}: {count}")
