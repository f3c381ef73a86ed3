"""``sequence simulate``: a reader's timeline on a simulated clock, in milliseconds, and the
same timeline the real clock then sends."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import Result

from campaigns.sequence import load_sequence, parse_sequence
from newsletter import runtime
from newsletter.db import Database
from newsletter.errors import ValidationError
from newsletter.settings import Settings
from scheduler.simulate import simulate, simulate_reader
from tests.scheduler.plan_helpers import add_readers, drive, sent_between
from tests.scheduler.test_plan import ONBOARDING

NEW_YORK = ZoneInfo("America/New_York")


def test_a_friday_evening_reader_in_new_york_gets_the_article_monday_08_00_after_the_change() -> (
    None
):
    confirmed = datetime(2026, 10, 30, 18, 30, tzinfo=NEW_YORK)
    timeline = simulate(load_sequence("welcome"), zone=NEW_YORK.key, confirmed_at=confirmed)
    assert [(e.step, e.local.strftime("%a %d %H:%M %Z")) for e in timeline] == [
        ("welcome-report", "Fri 30 18:30 EDT"),
        ("vitamin-k2", "Mon 02 08:00 EST"),
    ]
    assert "send window" in timeline[1].note


def test_simulate_takes_milliseconds_for_thirty_days(tmp_path: Path) -> None:
    path = tmp_path / "onboarding.yaml"
    path.write_text(ONBOARDING, encoding="utf-8")
    sequence = parse_sequence(path)
    started = time.process_time()
    for zone in ("Australia/Sydney", "Europe/London", "Pacific/Auckland", "UTC"):
        simulate(sequence, zone=zone, confirmed_at=datetime(2026, 10, 1, tzinfo=UTC), tags=("vip",))
    assert (time.process_time() - started) / 4 < 0.05  # seconds per simulation


def test_the_simulated_timeline_is_what_the_real_clock_sends(
    sqlite_database: Database, tmp_path: Path
) -> None:
    root = tmp_path / "sequences"
    root.mkdir()
    (root / "onboarding.yaml").write_text(ONBOARDING, encoding="utf-8")
    sequence = parse_sequence(root / "onboarding.yaml")
    confirmed = datetime(2026, 10, 23, 17, tzinfo=UTC)  # Friday, before both October changes
    for zone in ("Europe/Berlin", "America/Los_Angeles", "Australia/Sydney"):
        timeline = simulate(sequence, zone=zone, confirmed_at=confirmed, days=30)
        skipped = [e.step for e in timeline if e.state == "skipped"]
        assert skipped == ["vip"]
        ids = add_readers(
            sqlite_database, [(f"{zone}@example.org", zone, confirmed, ())], ["onboarding"]
        )
        drive(sqlite_database, confirmed, confirmed + timedelta(days=30), root=root)
        sent = sent_between(
            sqlite_database, confirmed - timedelta(seconds=1), confirmed + timedelta(days=30)
        )
        reader = ids[f"{zone}@example.org"]
        real = sorted((at, message) for message, to, at in sent if to == reader)
        assert real == [(e.at, e.message) for e in timeline if e.state == "planned"]


# ---------------------------------------------------------------- the command


@pytest.fixture
def cli_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(timezone="Europe/London")


def test_the_command_shows_a_made_up_reader_and_a_real_one(
    sequence_command: Callable[..., Result],
) -> None:
    result = sequence_command(
        "sequence",
        "simulate",
        "welcome",
        "--zone",
        "Asia/Tokyo",
        "--confirmed-at",
        "2026-11-13 09:00",
        "--json",
    )
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["timeline"]
    assert [(s["step"], s["weekday"], s["local_at"][11:16]) for s in steps] == [
        ("welcome-report", "Friday", "09:00"),
        ("vitamin-k2", "Monday", "08:00"),
    ]
    text = sequence_command("sequence", "simulate", "welcome", "--confirmed-at", "2026-11-13 09:00")
    assert "simulated in" in text.stdout and "GMT" in text.stdout

    now = datetime.now(UTC)
    add_readers(runtime.database(), [("real@example.org", None, now, ())], ["welcome"])
    real = sequence_command(
        "sequence", "simulate", "welcome", "--reader", "real@example.org", "--json"
    )
    assert real.exit_code == 0, real.output
    assert [s["step"] for s in json.loads(real.stdout)["timeline"]] == [
        "welcome-report",
        "vitamin-k2",
    ]
    both = sequence_command(
        "sequence", "simulate", "welcome", "--reader", "real@example.org", "--zone", "UTC"
    )
    assert isinstance(both.exception, ValidationError)


def test_a_real_reader_timeline_starts_with_what_they_were_sent(
    sqlite_database: Database, make_settings: Callable[..., Settings]
) -> None:
    confirmed = datetime(2026, 10, 5, 9, tzinfo=UTC)
    add_readers(sqlite_database, [("x@example.org", "UTC", confirmed, ())], ["welcome"])
    drive(sqlite_database, confirmed, confirmed + timedelta(hours=1))
    timeline = simulate_reader(
        sqlite_database,
        make_settings(database_url=sqlite_database.url),
        load_sequence("welcome"),
        "x@example.org",
        now=confirmed + timedelta(hours=1),
    )
    assert [(e.step, e.state, e.at) for e in timeline] == [
        ("welcome-report", "sent", confirmed),
        ("vitamin-k2", "planned", confirmed + timedelta(days=2)),
    ]


def test_the_command_refuses_an_unknown_zone_or_time_naming_the_option(
    sequence_command: Callable[..., Result],
) -> None:
    from newsletter.errors import SchedulingError

    zone = sequence_command("sequence", "simulate", "welcome", "--zone", "Mars/Base")
    assert isinstance(zone.exception, SchedulingError)
    assert "unknown time zone 'Mars/Base'" in zone.exception.message
    when = sequence_command("sequence", "simulate", "welcome", "--confirmed-at", "soon")
    assert isinstance(when.exception, SchedulingError)
    assert when.exception.message.startswith("--confirmed-at 'soon'")
