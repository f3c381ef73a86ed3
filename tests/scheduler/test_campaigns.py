"""Campaign runs: scheduling in the marketer's zone, refusals, pause, resume and cancel while
sending, an unsubscribe mid-campaign, the grace-period hold, and status."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from campaigns import CONTENT_DIR
from newsletter.db import Database
from newsletter.errors import NotFoundError, PreflightError, SchedulingError, ValidationError
from newsletter.settings import Settings
from scheduler import campaigns
from scheduler.campaigns import RunState
from scheduler.deliveries import Delivery, State
from subscribers.models import Status, Subscriber
from tests.scheduler.campaign_helpers import (
    WorkerThread,
    marketer_settings,
    schedule,
    wait_until,
)
from tests.scheduler.delivery_helpers import add_readers, reader_address

HOUR = timedelta(hours=1)
# Four seconds of sending at 25 a second: a pause or cancel after the first five messages finds
# most of them unclaimed (a worker claims half a second ahead) unless the test stalls for seconds.
STOPPED_READERS = 100


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sqlite_database: Database) -> Settings:
    return marketer_settings(make_settings, sqlite_database)


def test_a_campaign_is_stored_at_the_utc_time_of_the_wall_clock_in_its_zone_across_dst(
    sqlite_database: Database, settings: Settings
) -> None:
    # New York is on EST (UTC-5) in December and on EDT (UTC-4) after 14 March 2027.
    winter = schedule(sqlite_database, settings, "2026-12-01 09:00", "America/New_York")
    assert winter.send_at == datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert winter.state == RunState.SCHEDULED
    campaigns.cancel(sqlite_database, winter.name)  # not started: may be scheduled anew
    summer = schedule(sqlite_database, settings, "2027-03-15 09:00", "America/New_York")
    assert summer.send_at == datetime(2027, 3, 15, 13, 0, tzinfo=UTC)
    assert summer.local_send_at.isoformat() == "2027-03-15T09:00:00-04:00"
    # 02:30 on 14 March 2027 does not exist in New York: the clocks jump from 02:00 to 03:00.
    with pytest.raises(SchedulingError, match="does not exist in America/New_York"):
        campaigns.parse_when("2027-03-14 02:30", "America/New_York")
    # 01:30 on 7 November 2027 happens twice: the first (EDT) is meant.
    assert campaigns.parse_when("2027-11-07 01:30", "America/New_York") == datetime(
        2027, 11, 7, 5, 30, tzinfo=UTC
    )


def test_scheduling_refuses_with_a_message_saying_what_is_wrong(
    sqlite_database: Database, settings: Settings, tmp_path: Path
) -> None:
    db = sqlite_database
    with pytest.raises(SchedulingError, match="in the past; pick a time from now on"):
        schedule(db, settings, "2026-11-28 06:59", "America/New_York")  # 11:59 UTC
    with pytest.raises(SchedulingError, match="unknown time zone 'Mars/Olympus'"):
        schedule(db, settings, "2026-12-01 09:00", "Mars/Olympus")
    with pytest.raises(SchedulingError, match="expected a time such as 2026-12-01 09:00"):
        schedule(db, settings, "next tuesday")
    with pytest.raises(NotFoundError, match="campaign 'no-such-thing'"):
        schedule(db, settings, name="no-such-thing")
    with pytest.raises(ValidationError, match="ends too early"):
        schedule(db, settings, segment="tag:vip or")
    # A broken copy of the campaign: an empty preheader fails the preflight check.
    root = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, root)
    path = root / "vitamin-k2-bone-health.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        "\n".join(
            'preheader: ""' if line.startswith("preheader:") else line for line in text.splitlines()
        ),
        encoding="utf-8",
    )
    with pytest.raises(PreflightError) as caught:
        schedule(db, settings, content_root=root)
    assert "fails its check (1 problem)" in caught.value.message
    assert "the preheader is empty" in caught.value.message
    assert caught.value.problems and "preheader" in caught.value.problems[0]
    # Scheduled once: a second schedule says how to change it.
    schedule(db, settings)
    with pytest.raises(SchedulingError, match=r"is scheduled for 2026-12-01 09:00 EST;.*cancel"):
        schedule(db, settings, "2026-12-02 09:00")
    with db.session() as session:
        assert session.scalar(select(Delivery.id)) is None


def start(database: Database, settings: Settings, readers: int, **schedule_options: object):
    add_readers(database, readers)
    run = schedule(database, settings, **schedule_options)  # type: ignore[arg-type]
    assert campaigns.start_run(database, run.id, grace=HOUR, now=run.send_at) == "enqueued"
    return run


def received(smtp_server) -> Counter[str]:
    return Counter(mail.rcpt_tos[0] for mail in smtp_server.messages)


def test_a_paused_campaign_sends_nothing_more_until_resumed_and_then_everyone_once(
    database: Database,
    make_settings: Callable[..., Settings],
    smtp_server,
    settings_for: Callable[..., Settings],
) -> None:
    settings = marketer_settings(make_settings, database)
    run = start(database, settings, STOPPED_READERS)
    sender = settings_for(database, smtp_server.url, send_rate=25, send_concurrency=2)
    with WorkerThread(sender, database):
        wait_until(lambda: len(smtp_server.messages) >= 5)
        campaigns.pause(database, run.name)
        # What a worker already claimed (about half a second of sending) may still go out.
        wait_until(lambda: campaigns.status(database, run.name)["claimed"] == 0)
        paused_at = len(smtp_server.messages)
        time.sleep(0.6)
        assert len(smtp_server.messages) == paused_at < STOPPED_READERS
        counts = campaigns.status(database, run.name)
        assert counts["state"] == "paused"
        assert counts["queued"] == STOPPED_READERS - paused_at
        campaigns.resume(database, run.name)
        wait_until(lambda: len(smtp_server.messages) >= STOPPED_READERS)
    assert received(smtp_server) == Counter({reader_address(n): 1 for n in range(STOPPED_READERS)})
    assert campaigns.finish_runs(database) == [run.name]
    counts = campaigns.status(database, run.name)
    assert counts["state"] == "done"
    assert {k: counts[k] for k in ("queued", "sent", "failed", "bounced", "skipped")} == {
        "queued": 0,
        "sent": STOPPED_READERS,
        "failed": 0,
        "bounced": 0,
        "skipped": 0,
    }


def test_a_cancelled_campaign_stops_and_its_unsent_deliveries_are_skipped(
    database: Database,
    make_settings: Callable[..., Settings],
    smtp_server,
    settings_for: Callable[..., Settings],
) -> None:
    settings = marketer_settings(make_settings, database)
    run = start(database, settings, STOPPED_READERS)
    sender = settings_for(database, smtp_server.url, send_rate=25, send_concurrency=2)
    with WorkerThread(sender, database):
        wait_until(lambda: len(smtp_server.messages) >= 5)
        _, skipped = campaigns.cancel(database, run.name)
        wait_until(lambda: campaigns.status(database, run.name)["claimed"] == 0)
        time.sleep(0.5)
    counts = campaigns.status(database, run.name)
    sent = len(smtp_server.messages)
    assert counts["state"] == "cancelled"
    assert counts["sent"] == sent < STOPPED_READERS
    assert counts["skipped"] == STOPPED_READERS - sent and skipped > 0
    assert counts["queued"] == counts["uncertain"] == 0
    assert max(received(smtp_server).values()) == 1
    with pytest.raises(SchedulingError, match="cancelled after it started sending"):
        schedule(database, settings, "2026-12-05 09:00")


def test_a_reader_who_unsubscribes_mid_campaign_gets_nothing_more(
    sqlite_database: Database,
    make_settings: Callable[..., Settings],
    smtp_server,
    settings_for: Callable[..., Settings],
) -> None:
    database = sqlite_database
    settings = marketer_settings(make_settings, database)
    run = start(database, settings, 30)
    last = reader_address(29)
    sender = settings_for(database, smtp_server.url, send_rate=20, send_concurrency=1)
    with WorkerThread(sender, database):
        wait_until(lambda: len(smtp_server.messages) >= 2)
        with database.session() as session:
            session.execute(
                update(Subscriber)
                .where(Subscriber.email == last)
                .values(status=Status.UNSUBSCRIBED)
            )
        wait_until(
            lambda: (
                campaigns.status(database, run.name)["queued"] == 0
                and campaigns.status(database, run.name)["claimed"] == 0
            )
        )
    assert last not in received(smtp_server)
    assert len(smtp_server.messages) == 29
    counts = campaigns.status(database, run.name)
    assert (counts["sent"], counts["skipped"]) == (29, 1)


def test_a_campaign_later_than_the_grace_period_is_held_until_the_marketer_resumes_it(
    sqlite_database: Database, settings: Settings
) -> None:
    database = sqlite_database
    add_readers(database, 3)
    run = schedule(database, settings)
    # The process was down at 09:00 and comes back at 11:01 New York time.
    late = run.send_at + 2 * HOUR + timedelta(minutes=1)
    assert campaigns.start_run(database, run.id, grace=HOUR, now=late) == "held"
    found = campaigns.status(database, run.name, now=late)
    assert found["state"] == "held" and found["total"] == 0
    assert found["note"] == "2h01m late (grace 1h00m) when the clock saw it"
    # Within the grace period it goes out on its own; a held one waits for the marketer.
    assert campaigns.due_runs(database, late) == []
    campaigns.resume(database, run.name, now=late)
    assert campaigns.due_runs(database, late) == [run.id]
    assert campaigns.start_run(database, run.id, grace=HOUR, now=late) == "enqueued"
    assert campaigns.status(database, run.name, now=late)["queued"] == 3


def test_a_campaign_within_the_grace_period_goes_out_to_its_segment_only(
    sqlite_database: Database, settings: Settings
) -> None:
    database = sqlite_database
    add_readers(database, 4)
    with database.session() as session:
        session.execute(
            update(Subscriber)
            .where(Subscriber.email.in_([reader_address(1), reader_address(3)]))
            .values(attributes={"plan": "paid"})
        )
    run = schedule(database, settings, segment="attr:plan=paid")
    assert campaigns.start_run(database, run.id, grace=HOUR, now=run.send_at - HOUR) == "not due"
    assert campaigns.start_run(database, run.id, grace=HOUR, now=run.send_at + HOUR / 2) == (
        "enqueued"
    )
    assert campaigns.start_run(database, run.id, grace=HOUR, now=run.send_at + HOUR) == "sending"
    with database.session() as session:
        readers = session.scalars(
            select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
        ).all()
    assert sorted(readers) == [reader_address(1), reader_address(3)]


def test_status_counts_every_state_and_estimates_the_time_left(
    sqlite_database: Database, settings: Settings
) -> None:
    database = sqlite_database
    run = start(database, settings, 10)
    now = run.send_at + timedelta(minutes=5)
    with database.session() as session:
        ids = session.scalars(select(Delivery.id).order_by(Delivery.id)).all()
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[:6]))
            .values(state=State.SENT, sent_at=now - timedelta(seconds=30))
        )
        session.execute(update(Delivery).where(Delivery.id == ids[6]).values(state=State.FAILED))
    found = campaigns.status(database, run.name, now=now)
    assert {k: found[k] for k in ("queued", "sent", "failed", "bounced", "skipped")} == {
        "queued": 3,
        "sent": 6,
        "failed": 1,
        "bounced": 0,
        "skipped": 0,
    }
    assert found["total"] == 10 and found["state"] == "sending"
    assert found["rate_per_second"] == 0.1  # 6 in the last minute
    assert found["seconds_left"] == 30.0
    assert campaigns.retry_failed_run(database, run.name) == 1
    assert campaigns.status(database, run.name, now=now)["queued"] == 4
    with pytest.raises(NotFoundError, match="not scheduled"):
        campaigns.status(database, "other")
    with pytest.raises(SchedulingError, match="only a paused or held campaign can be resumed"):
        campaigns.resume(database, run.name)
