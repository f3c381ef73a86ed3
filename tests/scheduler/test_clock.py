"""The clock: campaign jobs kept in the database survive a restart, late ones are held, due work
is called, and only a process allowed to run the clock does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from newsletter.db import Database, utcnow
from newsletter.settings import Settings
from scheduler import campaigns
from scheduler.clock import JOBS_TABLE, Clock
from tests.scheduler.campaign_helpers import marketer_settings, schedule, wait_until
from tests.scheduler.delivery_helpers import add_readers


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sqlite_database: Database) -> Settings:
    return marketer_settings(make_settings, sqlite_database)


@pytest.fixture
def clocks() -> Iterator[list[Clock]]:
    """Clocks a test starts, stopped at its end whatever happens."""
    started: list[Clock] = []
    yield started
    for clock in started:
        clock.stop()


def stored_jobs(database: Database) -> list[str]:
    with database.engine.connect() as connection:
        rows = connection.execute(text(f"SELECT id FROM {JOBS_TABLE} ORDER BY id")).scalars()
        result = list(rows)
        connection.rollback()
    return result


def test_a_campaign_job_survives_a_restart_and_runs_when_a_new_clock_starts(
    sqlite_database: Database, settings: Settings, clocks: list[Clock]
) -> None:
    database = sqlite_database
    add_readers(database, 5)
    first = Clock(settings, database, tick_seconds=3600)
    clocks.append(first.start())
    wait_until(lambda: first.running)
    run = schedule(database, settings, utcnow() + timedelta(seconds=1.5), "UTC", now=utcnow())
    assert stored_jobs(database) == [f"campaign-run-{run.id}"]
    first.stop()  # the process goes down before the campaign's time
    time.sleep(1.6)
    assert campaigns.get_run(database, run.name).state == "scheduled"

    second = Clock(settings, database, tick_seconds=3600)
    clocks.append(second.start())
    wait_until(lambda: campaigns.status(database, run.name)["queued"] == 5)
    assert campaigns.get_run(database, run.name).state == "sending"
    wait_until(lambda: stored_jobs(database) == [])  # a date job is done once it ran


def test_a_clock_that_comes_back_after_the_grace_period_holds_the_campaign(
    sqlite_database: Database, make_settings: Callable[..., Settings], clocks: list[Clock]
) -> None:
    database = sqlite_database
    settings = make_settings(database_url=database.url, campaign_grace="30m")
    add_readers(database, 2)
    run = schedule(database, settings, "2026-12-01 09:00", "Europe/Paris")
    late = run.send_at + timedelta(minutes=31)
    clock = Clock(settings, database, now=lambda: late, tick_seconds=0.2)
    clocks.append(clock.start())
    wait_until(lambda: campaigns.get_run(database, run.name).state == "held")
    assert campaigns.status(database, run.name)["total"] == 0


def test_the_tick_calls_each_due_work_callable_with_the_database_and_now(
    sqlite_database: Database, settings: Settings, clocks: list[Clock]
) -> None:
    fake_now = datetime.fromisoformat("2026-12-24T18:00:00+00:00")
    calls: list[tuple[Database, datetime]] = []
    failing_calls = threading.Event()

    def enqueue_due_steps(database: Database, now: datetime) -> None:
        calls.append((database, now))

    def broken(database: Database, now: datetime) -> None:
        failing_calls.set()
        raise RuntimeError("a bug in one kind of work")

    clock = Clock(
        settings,
        sqlite_database,
        due_work=[broken, enqueue_due_steps],
        now=lambda: fake_now,
        tick_seconds=0.1,
    )
    clocks.append(clock.start())
    wait_until(lambda: len(calls) >= 3)  # a failing callable does not stop the others
    assert failing_calls.is_set()
    assert calls[0] == (sqlite_database, fake_now)


def test_a_process_not_allowed_to_run_the_clock_runs_nothing_until_it_is(
    sqlite_database: Database, settings: Settings, clocks: list[Clock]
) -> None:
    database = sqlite_database
    add_readers(database, 3)
    leader = threading.Event()
    run = schedule(database, settings, utcnow() + timedelta(seconds=0.5), "UTC", now=utcnow())
    clock = Clock(settings, database, should_run=leader.is_set, tick_seconds=0.2)
    clock.leadership_check_seconds = 0.1
    clocks.append(clock.start())
    time.sleep(1.0)
    assert not clock.running
    assert campaigns.get_run(database, run.name).state == "scheduled"
    leader.set()  # it becomes the leader: the late (but within grace) campaign goes out
    wait_until(lambda: campaigns.status(database, run.name)["queued"] == 3)
    leader.clear()
    wait_until(lambda: not clock.running)
