"""``newsletter sequence list`` and ``sequence status NAME``: what a marketer reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from typer.testing import Result

from newsletter import runtime
from newsletter.errors import NewsletterError
from tests.scheduler.sequence_helpers import add_confirmed_reader, deliver_due


def test_status_json_counts_each_step_by_where_readers_stand(
    sequence_command: Callable[..., Result],
) -> None:
    confirmed = datetime(2026, 11, 10, 9, tzinfo=UTC)
    add_confirmed_reader(runtime.database(), "a@example.org", confirmed)
    add_confirmed_reader(runtime.database(), "b@example.org", confirmed)
    deliver_due(runtime.database(), confirmed)

    result = sequence_command("sequence", "status", "welcome", "--json")

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["steps"]["welcome-report"] == {
        "waiting": 0,
        "queued": 0,
        "sent": 2,
        "skipped": 0,
        "failed": 0,
        "left": 0,
    }
    assert status["readers"] == {"active": 2, "completed": 0, "left": 0}
    table = sequence_command("sequence", "status", "welcome")
    assert table.exit_code == 0, table.output
    assert "vitamin-k2" in table.stdout


def test_list_names_the_shipped_welcome_sequence_and_its_steps(
    sequence_command: Callable[..., Result],
) -> None:
    result = sequence_command("sequence", "list", "--json")

    assert result.exit_code == 0, result.output
    [welcome] = json.loads(result.stdout)["sequences"]
    assert welcome["name"] == "welcome"
    assert welcome["steps"] == ["welcome-report", "vitamin-k2"]
    assert "welcome" in sequence_command("sequence", "list").stdout


def test_status_of_an_unknown_sequence_is_a_user_error(
    sequence_command: Callable[..., Result],
) -> None:
    result = sequence_command("sequence", "status", "nope")
    assert isinstance(result.exception, NewsletterError)
    assert "sequence 'nope'" in result.exception.message
