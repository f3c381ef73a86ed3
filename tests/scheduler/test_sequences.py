"""The sequence timeline on a simulated clock: zones, daylight saving, send windows, edits of the
file while readers are in it, and readers who leave."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campaigns.sequence import SendWindow, load_sequence
from newsletter.db import Database
from scheduler.deliveries import State
from scheduler.sequences import (
    after_delay,
    enqueue_due_steps,
    enrol,
    into_window,
    leave,
    sequence_status,
)
from tests.scheduler.sequence_helpers import (
    add_confirmed_reader,
    deliver_due,
    run_clock,
    timeline,
)

WEEKDAYS_8_TO_18 = SendWindow(days=(0, 1, 2, 3, 4), start=time(8), end=time(18))
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
WELCOME = "sequence:welcome:welcome-report"
ARTICLE = "sequence:welcome:vitamin-k2"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------- time, without a database


def test_a_window_opens_at_08_00_new_york_time_before_and_after_the_november_change() -> None:
    # Friday 30 October: EDT, UTC-4. Monday 2 November: EST, UTC-5.
    assert into_window(utc(2026, 10, 30, 5), WEEKDAYS_8_TO_18, NEW_YORK) == utc(2026, 10, 30, 12)
    assert into_window(utc(2026, 11, 2, 5), WEEKDAYS_8_TO_18, NEW_YORK) == utc(2026, 11, 2, 13)


def test_a_time_inside_the_window_is_kept_and_the_window_end_moves_to_the_next_weekday() -> None:
    inside = utc(2026, 11, 3, 15)  # Tuesday 10:00 EST
    assert into_window(inside, WEEKDAYS_8_TO_18, NEW_YORK) == inside
    friday_evening = utc(2026, 11, 6, 23)  # Friday 18:00 EST: the end is exclusive
    assert into_window(friday_evening, WEEKDAYS_8_TO_18, NEW_YORK) == utc(2026, 11, 9, 13)


def test_whole_day_delays_keep_the_readers_wall_clock_across_daylight_saving() -> None:
    # New York falls back on 1 November: Saturday 10:00 EDT + 1 day is Sunday 10:00 EST (25 h).
    saturday = utc(2026, 10, 31, 14)
    assert after_delay(saturday, timedelta(days=1), NEW_YORK) == utc(2026, 11, 1, 15)
    # Sydney springs forward on 4 October: Saturday 10:00 AEST + 1 day is 10:00 AEDT (23 h).
    assert after_delay(utc(2026, 10, 3, 0), timedelta(days=1), SYDNEY) == utc(2026, 10, 3, 23)
    # Other delays are elapsed time: 36 h after Saturday 10:00 EDT is Sunday 21:00 EST.
    assert after_delay(saturday, timedelta(hours=36), NEW_YORK) == utc(2026, 11, 2, 2)


# ---------------------------------------------------------------- the shipped welcome sequence


def test_readers_in_four_zones_get_the_article_in_their_own_weekday_window(
    database: Database,
) -> None:
    confirmed = utc(2026, 10, 30, 22, 30)  # Friday evening in London and New York
    zones = {
        "utc@example.org": "UTC",
        "ny@example.org": "America/New_York",
        "tokyo@example.org": "Asia/Tokyo",
        "sydney@example.org": "Australia/Sydney",
        "unknown@example.org": None,  # the publisher's zone: New York here
    }
    readers = {
        email: add_confirmed_reader(
            database, email, confirmed, zone=zone, default_zone="America/New_York"
        )
        for email, zone in zones.items()
    }

    run_clock(database, confirmed, confirmed + timedelta(days=5), default_zone="America/New_York")

    expected_article = {
        # Sunday 1 Nov 22:30 UTC is the weekend: Monday 08:00 UTC.
        "utc@example.org": utc(2026, 11, 2, 8),
        # Friday 18:30 EDT + 2 days = Sunday 18:30 EST: Monday 08:00 EST, after the change.
        "ny@example.org": utc(2026, 11, 2, 13),
        "unknown@example.org": utc(2026, 11, 2, 13),
        # Saturday 07:30 JST + 2 days = Monday 07:30: the window opens at 08:00 JST.
        "tokyo@example.org": utc(2026, 11, 1, 23),
        # Saturday 09:30 AEDT + 2 days = Monday 09:30 AEDT: inside the window.
        "sydney@example.org": utc(2026, 11, 1, 22, 30),
    }
    for email, reader in readers.items():
        got = timeline(database, reader)
        assert got[WELCOME] == (State.SENT, confirmed), email
        assert got[ARTICLE] == (State.SENT, expected_article[email]), email
    ny_article = timeline(database, readers["ny@example.org"])[ARTICLE][1]
    assert ny_article is not None
    local = ny_article.astimezone(NEW_YORK)
    assert (local.strftime("%A"), local.hour, local.minute) == ("Monday", 8, 0)


def test_a_friday_evening_confirmation_gets_the_article_on_monday_at_08_00_local(
    sqlite_database: Database,
) -> None:
    database = sqlite_database
    friday_evening = datetime(2026, 11, 13, 19, 0, tzinfo=NEW_YORK).astimezone(UTC)
    reader = add_confirmed_reader(database, "fri@example.org", friday_evening, zone=NEW_YORK.key)
    # The same moment is Saturday 09:00 in Tokyo: that reader's Monday 09:00 is in the window.
    tokyo = add_confirmed_reader(database, "tokyo@example.org", friday_evening, zone="Asia/Tokyo")
    run_clock(database, friday_evening, friday_evening + timedelta(days=4))
    assert timeline(database, reader)[ARTICLE][1] == datetime(2026, 11, 16, 8, tzinfo=NEW_YORK)
    assert timeline(database, tokyo)[ARTICLE][1] == datetime(
        2026, 11, 16, 9, tzinfo=ZoneInfo("Asia/Tokyo")
    )


def test_nothing_is_enqueued_before_a_step_falls_due_and_status_says_waiting(
    sqlite_database: Database,
) -> None:
    database = sqlite_database
    confirmed = utc(2026, 11, 10, 9)  # Tuesday
    add_confirmed_reader(database, "wait@example.org", confirmed, zone="UTC")
    deliver_due(database, confirmed)

    assert enqueue_due_steps(database, confirmed + timedelta(days=1)) == 0
    with database.session() as session:
        status = sequence_status(session, load_sequence("welcome"))
    assert status["steps"]["welcome-report"]["sent"] == 1
    assert status["steps"]["vitamin-k2"]["waiting"] == 1
    assert enqueue_due_steps(database, confirmed + timedelta(days=2)) == 1
    with database.session() as session:
        status = sequence_status(session, load_sequence("welcome"))
    assert status["steps"]["vitamin-k2"]["queued"] == 1


def test_a_reader_who_leaves_mid_sequence_gets_no_further_step(sqlite_database: Database) -> None:
    database = sqlite_database
    confirmed = utc(2026, 11, 10, 9)
    stays = add_confirmed_reader(database, "stays@example.org", confirmed, zone="UTC")
    goes = add_confirmed_reader(database, "goes@example.org", confirmed, zone="UTC")
    deliver_due(database, confirmed)
    with database.session() as session:
        assert leave(session, goes, now=confirmed + timedelta(hours=1)) == 1

    run_clock(database, confirmed, confirmed + timedelta(days=4))

    assert timeline(database, stays)[ARTICLE][0] == State.SENT
    assert ARTICLE not in timeline(database, goes)
    with database.session() as session:
        status = sequence_status(session, load_sequence("welcome"))
    assert status["steps"]["vitamin-k2"]["left"] == 1
    assert status["readers"] == {"active": 0, "completed": 1, "left": 1}


# ---------------------------------------------------------------- editing a file mid-flight


COURSE = """
steps:
  - id: a
    system: welcome
    delay: 0m
  - id: b
    content: vitamin-k2-bone-health
    delay: 1d
  - id: c
    content: vitamin-k2-bone-health
    delay: 1d
"""

# x inserted before everyone's position, b removed, y inserted after a.
COURSE_EDITED = """
steps:
  - id: x
    system: welcome
    delay: 0m
  - id: a
    system: welcome
    delay: 0m
  - id: y
    content: vitamin-k2-bone-health
    delay: 1h
  - id: c
    content: vitamin-k2-bone-health
    delay: 1d
"""


@pytest.fixture
def course(tmp_path: Path) -> Path:
    root = tmp_path / "sequences"
    root.mkdir()
    (root / "course.yaml").write_text(COURSE)
    return root


def key(step: str) -> str:
    return f"sequence:course:{step}"


def test_an_edited_file_applies_to_readers_not_yet_past_the_change_and_never_resends(
    database: Database, course: Path
) -> None:
    now = utc(2026, 11, 10, 9)
    # Ahead: got a 25 hours ago; b fell due an hour ago and is queued, not yet sent.
    ahead = add_confirmed_reader(
        database, "ahead@example.org", now - timedelta(hours=25), root=course
    )
    deliver_due(database, now - timedelta(hours=25))
    # Fresh: got a just now; b is a day away.
    fresh = add_confirmed_reader(database, "fresh@example.org", now, root=course)
    deliver_due(database, now)
    enqueue_due_steps(database, now, root=course)
    assert timeline(database, ahead)[key("b")][0] == State.QUEUED
    sent_a = timeline(database, fresh)[key("a")]

    (course / "course.yaml").write_text(COURSE_EDITED)
    run_clock(database, now, now + timedelta(days=3), root=course, tick=timedelta(hours=3))

    fresh_got = timeline(database, fresh)
    assert set(fresh_got) == {key("a"), key("y"), key("c")}  # never x nor b
    assert fresh_got[key("a")] == sent_a  # not sent again
    assert fresh_got[key("y")] == (State.SENT, now + timedelta(hours=1))
    assert fresh_got[key("c")] == (State.SENT, now + timedelta(days=1, hours=1))
    ahead_got = timeline(database, ahead)
    assert ahead_got[key("b")][0] == State.SKIPPED  # removed before it was sent
    assert key("x") not in ahead_got
    assert ahead_got[key("y")][0] == State.SENT
    assert ahead_got[key("c")][0] == State.SENT


def test_a_step_whose_condition_the_reader_fails_is_skipped_and_the_next_follows(
    sqlite_database: Database, tmp_path: Path
) -> None:
    database = sqlite_database
    root = tmp_path / "sequences"
    root.mkdir()
    (root / "vip.yaml").write_text(
        "steps:\n"
        "  - {id: hello, system: welcome, delay: 0m}\n"
        "  - {id: offer, content: vitamin-k2-bone-health, delay: 1h, when: 'tag:vip'}\n"
        "  - {id: bye, content: vitamin-k2-bone-health, delay: 1h}\n"
    )
    now = utc(2026, 11, 10, 9)
    vip = add_confirmed_reader(database, "vip@example.org", now, tags=("vip",), root=root)
    plain = add_confirmed_reader(database, "plain@example.org", now, root=root)

    run_clock(database, now, now + timedelta(hours=4), root=root, tick=timedelta(minutes=30))

    assert timeline(database, vip)["sequence:vip:offer"][0] == State.SENT
    assert timeline(database, plain)["sequence:vip:offer"][0] == State.SKIPPED
    # The skipped step passes at its due time; the next counts from there.
    assert timeline(database, plain)["sequence:vip:bye"] == (
        State.SENT,
        now + timedelta(hours=2),
    )


def test_a_changed_delay_applies_to_readers_still_waiting_for_that_step(
    sqlite_database: Database, course: Path
) -> None:
    database = sqlite_database
    now = utc(2026, 11, 10, 9)
    reader = add_confirmed_reader(database, "delay@example.org", now, root=course)
    run_clock(database, now, now + timedelta(hours=2), root=course)

    (course / "course.yaml").write_text(
        COURSE.replace("delay: 1d\n  - id: c", "delay: 3h\n  - id: c")
    )
    run_clock(database, now + timedelta(hours=3), now + timedelta(days=2), root=course)

    got = timeline(database, reader)
    assert got[key("b")] == (State.SENT, now + timedelta(hours=3))
    assert got[key("c")] == (State.SENT, now + timedelta(days=1, hours=3))


def test_a_sequence_file_that_does_not_parse_neither_blocks_confirmation_nor_loses_readers(
    sqlite_database: Database, course: Path
) -> None:
    database = sqlite_database
    (course / "course.yaml").write_text("steps: [not, valid")
    now = utc(2026, 11, 10, 9)
    reader = add_confirmed_reader(database, "early@example.org", now, root=course)
    assert timeline(database, reader) == {}

    (course / "course.yaml").write_text(COURSE)  # fixed: the reader starts from the first step
    run_clock(database, now + timedelta(hours=1), now + timedelta(days=3), root=course)

    assert {state for state, _ in timeline(database, reader).values()} == {State.SENT}
    assert set(timeline(database, reader)) == {key("a"), key("b"), key("c")}


def test_a_reader_who_comes_back_resumes_without_getting_a_step_twice(
    sqlite_database: Database, course: Path
) -> None:
    database = sqlite_database
    now = utc(2026, 11, 10, 9)
    reader = add_confirmed_reader(database, "back@example.org", now, root=course)
    deliver_due(database, now)
    with database.session() as session:
        leave(session, reader, now=now + timedelta(hours=1), root=course)
    later = now + timedelta(days=5)
    with database.session() as session:
        enrol(session, reader, now=later, root=course)
    run_clock(database, later, later + timedelta(days=3), root=course)

    got = timeline(database, reader)
    assert got[key("a")] == (State.SENT, now)
    assert got[key("b")] == (State.SENT, later + timedelta(days=1))
    assert got[key("c")][0] == State.SENT
