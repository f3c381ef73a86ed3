"""``newsletter subscribers …``: import, export, list, show and erase readers.

Each command is a thin layer over a domain function (``importer``, ``export``, ``queries``,
``erasure``); errors a marketer can cause are ``NewsletterError``s, which the shell prints as one
line with exit status 1.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from newsletter import runtime
from newsletter.errors import ImportRowError, NewsletterError
from subscribers.addresses import normalise_address
from subscribers.erasure import erase_subscriber
from subscribers.export import export_csv, export_to_file
from subscribers.importer import ImportSummary, import_csv, import_status
from subscribers.models import Status
from subscribers.queries import (
    ReaderFilter,
    count_subscribers,
    find_subscriber,
    list_subscribers,
    reader_details,
    reader_summary,
)

app = typer.Typer(help="Readers: import, export, list, show, erase.", no_args_is_help=True)

# Imports shorter than this finish before a progress bar would be worth drawing.
PROGRESS_MIN_BYTES = 1_000_000
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _printable(value: object) -> str:
    """A stored value made safe for a terminal: no escape sequences from reader input."""
    return _UNPRINTABLE.sub("\ufffd", "" if value is None else str(value))


@app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="CSV file with a header row naming an 'email' column."),
    status: str | None = typer.Option(
        None,
        "--status",
        help=(
            "Required. 'confirmed': the readers consented elsewhere and this import is recorded "
            "as their consent. 'pending': each new reader gets a confirmation email."
        ),
        show_default=False,
    ),
    source: str | None = typer.Option(
        None,
        help="Where the readers consented, recorded with each one (default: the file's name).",
    ),
) -> None:
    """Import readers from a CSV file: email, optional name, tags (a;b), timezone, attributes.

    Bad rows are reported by line number and skipped.
    Readers already in the store are left exactly as they are.
    Erased addresses are never added again.
    """
    chosen = import_status(status)
    database = runtime.database()
    # Wired before anything is stored, so that a missing mailer stops the import, not its emails.
    events = runtime.subscriber_events() if chosen is Status.PENDING else None
    stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    show_bar = stderr.is_terminal and _size(file) >= PROGRESS_MIN_BYTES
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not show_bar,
    ) as progress:
        task = progress.add_task("import", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_bad_row(error: ImportRowError) -> None:
            progress.console.print(f"{file.name}: {_printable(error.message)}", markup=False)

        summary = import_csv(
            file,
            chosen,
            database=database,
            events=events,
            source=source,
            on_progress=on_progress,
            on_bad_row=on_bad_row,
        )
    typer.echo(_summary_line(summary, chosen))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summary_line(summary: ImportSummary, status: Status) -> str:
    parts = [
        f"imported {summary.imported} as {status.value}",
        f"already present {summary.already_present}"
        + (
            f" ({summary.left_unsubscribed} of them unsubscribed, bounced or complained: "
            "left as they are)"
            if summary.left_unsubscribed
            else ""
        ),
        f"repeated in the file {summary.repeated}",
        f"suppressed (erased) {summary.suppressed}",
        f"bad rows {summary.bad_rows}",
    ]
    line = "; ".join(parts)
    if status is Status.PENDING and summary.imported:
        line += f"; {summary.imported} confirmation emails requested"
    return line


def _filter_options(status: str | None, tag: str | None, search: str | None) -> ReaderFilter:
    return ReaderFilter.parse(status, tag, search)


STATUS_HELP = "Only readers with this status (pending, confirmed, unsubscribed, bounced, …)."
TAG_HELP = "Only readers with this tag."
SEARCH_HELP = "Only readers whose address or name contains this text."


@app.command("export")
def export_command(
    file: Path | None = typer.Argument(None, help="File to write; standard output when omitted."),
    status: str | None = typer.Option(None, help=STATUS_HELP),
    tag: str | None = typer.Option(None, help=TAG_HELP),
    search: str | None = typer.Option(None, help=SEARCH_HELP),
) -> None:
    """Export readers as CSV (re-importable; cells are escaped against spreadsheet formulas)."""
    where = _filter_options(status, tag, search)
    with runtime.session() as session:
        if file is None:
            export_csv(session, sys.stdout, where)
            return
        count = export_to_file(session, file, where)
    typer.echo(f"exported {count} readers to {file}", err=True)


@app.command("list")
def list_command(
    status: str | None = typer.Option(None, help=STATUS_HELP),
    tag: str | None = typer.Option(None, help=TAG_HELP),
    search: str | None = typer.Option(None, help=SEARCH_HELP),
    limit: int = typer.Option(100, min=0, help="At most this many readers; 0 for all."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """List readers, oldest first."""
    where = _filter_options(status, tag, search)
    with runtime.session() as session:
        total = count_subscribers(session, where)
        readers = list_subscribers(session, where, limit=limit or None)
        rows = [reader_summary(reader) for reader in readers]
    if as_json:
        typer.echo(json.dumps({"total": total, "shown": len(rows), "subscribers": rows}))
        return
    for row in rows:
        tags = ",".join(row["tags"])
        typer.echo(
            "\t".join(_printable(v) for v in (row["email"], row["status"], row["name"], tags))
        )
    more = f" (showing {len(rows)}; --limit 0 for all)" if len(rows) < total else ""
    typer.echo(f"{total} readers{more}", err=True)


@app.command("show")
def show_command(
    email: str = typer.Argument(..., help="The reader's address."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """Show a reader: data, tags, attributes, status history and consent records."""
    with runtime.session() as session:
        details = reader_details(find_subscriber(session, email))
    if as_json:
        typer.echo(json.dumps(details))
        return
    typer.echo("\n".join(_details_lines(details)))


def _details_lines(details: dict[str, Any]) -> list[str]:
    p = _printable
    lines = [
        f"email:      {p(details['email'])}",
        f"name:       {p(details['name'] or '')}",
        f"status:     {p(details['status'])} since {p(details['status_changed_at'])}",
        f"tags:       {p(', '.join(details['tags']))}",
        f"timezone:   {p(details['timezone'] or '')}",
        f"created:    {p(details['created_at'])}"
        + (f" from {p(details['form'])}" if details["form"] else ""),
    ]
    if details["attributes"]:
        lines.append("attributes:")
        lines += [f"  {p(key)}: {p(value)}" for key, value in sorted(details["attributes"].items())]
    lines.append("history:")
    lines += [
        f"  {change['at']}  {p(change['from'] or '-')} -> {p(change['to'])}"
        f"  ({p(change['source'])})"
        for change in details["history"]
    ] or ["  (none)"]
    lines.append("consents:")
    for consent in details["consents"]:
        where = ", ".join(
            f"{label} {p(consent[key])}"
            for label, key in (("form", "form"), ("ip", "ip"), ("agent", "user_agent"))
            if consent[key]
        )
        lines.append(f"  {consent['at']}  {p(consent['kind'])}" + (f"  {where}" if where else ""))
        if consent["consent_text"]:
            lines.append(f"    text: {p(consent['consent_text'])}")
    if not details["consents"]:
        lines.append("  (none)")
    return lines


@app.command("erase")
def erase_command(
    email: str = typer.Argument(..., help="The reader's address."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Erase a reader (GDPR): data, history and consent go; a hash keeps the address out."""
    address = normalise_address(email)  # a typo fails here, before the question
    if not yes:
        question = (
            f"Erase {_printable(address)} with their history and consent records? "
            "This cannot be undone"
        )
        try:
            confirmed = typer.confirm(question, err=True)
        except typer.Abort:  # end of input or Ctrl-C: not a yes
            confirmed = False
        if not confirmed:
            raise NewsletterError(f"{address} was not erased (answer y, or pass --yes)")
    with runtime.session() as session:
        erasure = erase_subscriber(session, address)
    if erasure.already_erased:
        typer.echo(f"{erasure.address} was already erased; nothing left to remove")
    else:
        typer.echo(f"erased {erasure.address}; its hash is kept so it is never added again")
