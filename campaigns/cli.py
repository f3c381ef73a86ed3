"""``newsletter campaign …``: list the campaigns and check one before it is sent."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from newsletter import runtime
from newsletter.errors import PreflightError

app = typer.Typer(
    help="Campaigns: list, check, send a test, schedule, pause, resume, cancel, status.",
    no_args_is_help=True,
)

CONTENT_OPTION = typer.Option(
    None, "--content", help="Folder of campaign files (default: the shipped campaigns/content)."
)


@app.command("list")
def list_command(
    content: Path | None = CONTENT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """List the campaigns: name, subject and tags."""
    from campaigns.content import list_campaigns

    campaigns = list_campaigns(content)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "campaigns": [
                        {"name": c.name, "subject": c.subject, "tags": list(c.tags)}
                        for c in campaigns
                    ]
                }
            )
        )
        return
    for campaign in campaigns:
        tags = f"  [{', '.join(campaign.tags)}]" if campaign.tags else ""
        typer.echo(f"{campaign.name}  {campaign.subject}{tags}")


@app.command("check")
def check_command(
    name: str = typer.Argument(..., help="The campaign's name (its file name without .md)."),
    content: Path | None = CONTENT_OPTION,
) -> None:
    """Check a campaign before sending; exit 1 with the list of problems when any blocks it."""
    from campaigns.content import load_campaign
    from campaigns.preflight import check

    campaign = load_campaign(name, content)
    report = check(campaign, runtime.settings())
    for correction in campaign.corrections:
        why = f" ({correction.why})" if correction.why else ""
        typer.echo(f"editor's correction: {correction.was!r} -> {correction.now!r}{why}")
    if report.spam_score is not None:
        typer.echo(f"spamassassin score: {report.spam_score} (limit 2.0)")
    if report.html_bytes is not None:
        typer.echo(f"HTML size: {report.html_bytes / 1024:.1f} KB (Gmail clips over 102 KB)")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}")
    for problem in report.problems:
        typer.echo(f"problem: {problem}")
    if report.problems:
        count = len(report.problems)
        raise PreflightError(
            f"campaign {name!r} has {count} blocking problem{'s' if count > 1 else ''}",
            [str(problem) for problem in report.problems],
        )
    typer.echo(f"campaign {name!r} is ready to send")
