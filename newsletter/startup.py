"""Checks made before a process that sends mail starts."""

from __future__ import annotations

from campaigns.preflight import check_system_emails
from newsletter.errors import PreflightError
from newsletter.settings import Settings


def refuse_unsendable_system_emails(settings: Settings) -> None:
    """The system emails go out without a campaign check: check them once, at start.

    Raises ``PreflightError`` listing what blocks them (the sample report over a real relay, an
    http base URL for a real relay, health claims without the medical disclaimer).
    """
    problems = [
        f"{kind}: {finding.where}: {finding.message}"
        for kind, report in check_system_emails(settings, spamassassin=None).items()
        for finding in report.problems
    ]
    if problems:
        raise PreflightError(
            "the system emails cannot be sent: " + "; ".join(problems), problems=problems
        )
