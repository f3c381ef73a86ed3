"""``newsletter plan`` and ``newsletter explain`` from the shell, on the real clock's time."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from typer.testing import CliRunner, Result

from newsletter import runtime
from newsletter.cli import app
from newsletter.db import utcnow
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from tests.scheduler.plan_helpers import add_run
from tests.scheduler.sequence_helpers import add_confirmed_reader


@pytest.fixture
def cli(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    monkeypatch.setattr(runtime, "_settings", make_settings(timezone="Europe/Berlin"))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    yield invoke
    runtime.reset()


def readers(count: int) -> None:
    now = utcnow()
    for i in range(count):
        add_confirmed_reader(runtime.database(), f"r{i}@example.org", now, zone="Asia/Tokyo")
    add_run(runtime.database(), "news", now + timedelta(hours=3))


def test_plan_lists_the_queued_welcome_and_the_campaign_as_json_csv_and_a_table(
    cli: Callable[..., Result],
) -> None:
    readers(3)
    result = cli("plan", "--next", "6h", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["by_message"] == {"campaign:news": 3, "sequence:welcome:welcome-report": 3}
    assert {send["zone"] for send in found["sends"]} == {"Asia/Tokyo"}
    assert [s["queued"] for s in found["sends"]].count(True) == 3

    only = json.loads(cli("plan", "--next", "6h", "--campaign", "news", "--json").stdout)
    assert only["by_message"] == {"campaign:news": 3}

    rows = list(csv.DictReader(io.StringIO(cli("plan", "--next", "6h", "--csv").stdout)))
    assert len(rows) == 6 and rows[0]["email"] == "r0@example.org"

    table = cli("plan", "--next", "6h")
    assert table.exit_code == 0, table.output
    assert "6 emails" in table.stdout and "campaign:news: 3" in table.stdout


def test_plan_refuses_a_duration_it_cannot_read(cli: Callable[..., Result]) -> None:
    result = cli("plan", "--next", "soon")
    assert result.exit_code == 2
    assert "expected a duration such as 48h" in result.output


def test_explain_prints_each_gate_and_says_the_article_waits_for_the_welcome(
    cli: Callable[..., Result],
) -> None:
    readers(1)
    result = cli("explain", "r0@example.org", "welcome:vitamin-k2", "--json")
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["messages"]
    # The welcome is queued, not sent yet: the article counts its two days from that.
    assert item["held_by"] == "sequence"
    held = [gate for gate in item["gates"] if gate["verdict"] == "hold"]
    assert "waits for step 'welcome-report' first" in held[0]["detail"]
    text = cli("explain", "r0@example.org")
    assert "sequence:welcome:welcome-report: queued" in text.stdout
    assert "HOLD delay" in text.stdout
    missing = cli("explain", "nobody@example.org")
    assert isinstance(missing.exception, NotFoundError)
