"""The ``newsletter`` command: assembles each domain folder's command group.

Errors a user can cause end as one line on stderr and exit status 1; usage errors exit with 2.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from campaigns.cli import app as campaign_app
from newsletter import runtime
from newsletter.admin.cli import app as admin_app
from newsletter.db import Database
from newsletter.errors import NewsletterError
from scheduler import cli as scheduler_cli
from scheduler import sequence_cli
from scheduler.cadence import Caps
from scheduler.leader import Leadership
from scheduler.sequences import enqueue_due_steps
from subscribers.cli import app as subscribers_app

app = typer.Typer(
    name="newsletter",
    help="A self-hosted newsletter: signup, sequences, campaigns and previews.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(campaign_app, name="campaign")
app.add_typer(scheduler_cli.app, name="deliveries")
app.add_typer(sequence_cli.app, name="sequence")
app.add_typer(admin_app, name="admin")
app.command("worker")(scheduler_cli.worker)
app.command("explain")(scheduler_cli.explain_command)
app.command("plan")(scheduler_cli.plan_command)
# Scheduling lives in the scheduler; campaigns may not import it, so the shell attaches it.
campaign_app.command("schedule")(scheduler_cli.schedule)
campaign_app.command("pause")(scheduler_cli.pause)
campaign_app.command("resume")(scheduler_cli.resume)
campaign_app.command("cancel")(scheduler_cli.cancel)
campaign_app.command("status")(scheduler_cli.campaign_status)
campaign_app.command("retry-failed")(scheduler_cli.retry_failed_command)

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_leadership: Leadership | None = None


def clock_leadership() -> bool:
    """Whether this process runs the clock: one process at a time across the fleet."""
    global _leadership
    if _leadership is None:
        _leadership = Leadership(runtime.database(), name="clock").start()
    return _leadership.is_leader()


def sequence_steps(database: Database, now: datetime) -> int:
    """The clock's due work for sequences, in the publisher's zone for readers without one."""
    settings = runtime.settings()
    return enqueue_due_steps(
        database, now, default_zone=settings.timezone, caps=Caps.from_settings(settings)
    )


scheduler_cli.DUE_WORK.append(sequence_steps)
scheduler_cli.SHOULD_RUN.append(clock_leadership)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (also done on every start)."""
    runtime.database()
    typer.echo("database is up to date")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    worker: bool = typer.Option(
        True,
        "--worker/--no-worker",
        help="Also run the clock and the sender in this process; --no-worker serves the web app "
        "alone, for a `newsletter worker` running as a process of its own.",
    ),
) -> None:
    """Run the web app, the scheduler and the sender in one process."""
    from newsletter.server import serve as run_server
    from newsletter.startup import refuse_unsendable_system_emails

    refuse_unsendable_system_emails(runtime.settings())
    run_server(
        runtime.settings(),
        host=host,
        port=port,
        due_work=scheduler_cli.DUE_WORK,
        should_run=scheduler_cli.should_run_clock(),
        with_worker=worker,
    )


@app.command()
def preview(
    port: int = typer.Option(8025, help="Port to listen on."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on; the default keeps it to this machine."
    ),
    content: Path | None = typer.Option(
        None, "--content", help="Folder of campaign files (default: the shipped campaigns/content)."
    ),
    sequences: Path | None = typer.Option(
        None, "--sequences", help="Folder of sequence files (default: campaigns/sequences)."
    ),
    readers: Path | None = typer.Option(
        None, "--readers", help="YAML file of sample readers for the reader picker."
    ),
    spam_score: bool = typer.Option(
        True, "--spam-score/--no-spam-score", help="Take SpamAssassin's score on each email page."
    ),
) -> None:
    """Preview every email in the browser, with live reload and test sends to a local inbox."""
    from campaigns.preflight import SPAMASSASSIN
    from newsletter.preview import run_preview

    run_preview(
        runtime.settings(),
        host=host,
        port=port,
        content_root=content,
        sequences_root=sequences,
        readers_file=readers,
        spamassassin=SPAMASSASSIN if spam_score else None,
        echo=typer.echo,
    )


def send_test(
    name: str = typer.Argument(..., help="The campaign's name, or system/KIND for a system email."),
    to: str = typer.Option(..., "--to", help="The one address to send the test to."),
    reader: str = typer.Option(
        "sample", "--reader", help="sample, or sample:ID from the readers file."
    ),
    content: Path | None = typer.Option(
        None, "--content", help="Folder of campaign files (default: the shipped campaigns/content)."
    ),
    readers: Path | None = typer.Option(None, "--readers", help="YAML file of sample readers."),
) -> None:
    """Send one test copy of a campaign to one address (the capture inbox when no relay is set)."""
    from newsletter.preview import send_test_campaign

    subject, where = send_test_campaign(
        runtime.settings(), name, to, content_root=content, reader=reader, readers_file=readers
    )
    typer.echo(f"sent {subject!r} to {to} {where}")


# send-test talks SMTP, which the campaigns folder may not: the shell registers it in its group.
campaign_app.command("send-test")(send_test)


def main() -> None:
    """Entry point of the ``newsletter`` console script."""
    runtime.reset()
    try:
        # Standalone mode: usage errors exit with 2, and success with 0.
        app()
    except NewsletterError as error:
        stderr.print(f"error: {error.message}", markup=False)
        sys.exit(1)
    finally:
        runtime.reset()
