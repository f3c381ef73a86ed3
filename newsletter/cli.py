"""The ``newsletter`` command: assembles each domain folder's command group.

Errors a user can cause end as one line on stderr and exit status 1; usage errors exit with 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from campaigns.cli import app as campaign_app
from newsletter import runtime
from newsletter.errors import NewsletterError
from scheduler import cli as scheduler_cli
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
app.command("worker")(scheduler_cli.worker)
# Scheduling lives in the scheduler; campaigns may not import it, so the shell attaches it.
campaign_app.command("schedule")(scheduler_cli.schedule)
campaign_app.command("pause")(scheduler_cli.pause)
campaign_app.command("resume")(scheduler_cli.resume)
campaign_app.command("cancel")(scheduler_cli.cancel)
campaign_app.command("status")(scheduler_cli.campaign_status)
campaign_app.command("retry-failed")(scheduler_cli.retry_failed_command)

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (also done on every start)."""
    runtime.database()
    typer.echo("database is up to date")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the web app, the scheduler and the sender in one process."""
    from newsletter.server import serve as run_server

    run_server(
        runtime.settings(),
        host=host,
        port=port,
        due_work=scheduler_cli.DUE_WORK,
        should_run=scheduler_cli.should_run_clock(),
    )


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
