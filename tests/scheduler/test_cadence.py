"""Cadence caps defer, never drop: the pure decision, the settings, and a campaign's own caps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from campaigns.content import parse_campaign
from newsletter.db import Database
from newsletter.errors import ContentError, SettingsError
from newsletter.settings import Settings, load_settings
from scheduler import campaigns
from scheduler.cadence import Caps, release
from scheduler.deliveries import Delivery
from subscribers.models import Subscriber
from tests.scheduler.plan_helpers import add_readers, add_run, drive

T = datetime(2026, 10, 5, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
GAP = Caps(min_gap=20 * HOUR)


def test_an_email_within_the_gap_of_an_earlier_one_waits_until_the_gap_has_passed() -> None:
    found = release("campaign:news", T, GAP, [(T - 5 * HOUR, "sequence:welcome:a")])
    assert found.at == T + 15 * HOUR
    assert found.reason == (
        "deferred to 2026-10-06 03:00 UTC: at most one email per 20h "
        "(sequence:welcome:a 2026-10-05 07:00 UTC)"
    )


def test_an_email_set_to_go_later_also_counts_so_no_two_are_closer_than_the_gap() -> None:
    later = [(T + 3 * HOUR, "campaign:other"), (T - 30 * HOUR, "sequence:welcome:a")]
    assert release("sequence:welcome:b", T, GAP, later).at == T + 23 * HOUR


def test_emails_far_enough_apart_system_emails_and_no_caps_are_not_deferred() -> None:
    assert release("campaign:news", T, GAP, [(T - 21 * HOUR, "campaign:old")]).reason is None
    assert release("system:welcome", T, GAP, [(T - HOUR, "campaign:old")]).at == T
    assert release("campaign:news", T, Caps(), [(T - HOUR, "campaign:old")]).at == T


def test_a_campaign_waits_out_the_quiet_time_after_a_reader_enters_a_sequence() -> None:
    caps = Caps(quiet={"welcome": timedelta(days=3)})
    entered = {"welcome": T - timedelta(days=1)}
    found = release("campaign:news", T, caps, [], entered)
    assert found.at == T + timedelta(days=2)
    assert found.reason is not None and "first 3d of sequence 'welcome'" in found.reason
    # Sequence steps are not held by it; nor are readers of other sequences.
    assert release("sequence:welcome:b", T, caps, [], entered).at == T
    assert release("campaign:news", T, caps, [], {"other": T}).at == T


def test_the_settings_read_the_caps_and_refuse_a_malformed_quiet_time() -> None:
    settings = load_settings(
        {"NEWSLETTER_CADENCE_MIN_GAP": "20h", "NEWSLETTER_CADENCE_QUIET": "welcome:3d"},
        Path("/nonexistent.toml"),
    )
    assert Caps.from_settings(settings) == Caps(20 * HOUR, {"welcome": timedelta(days=3)})
    with pytest.raises(SettingsError, match="NEWSLETTER_CADENCE_QUIET: expected SEQUENCE:DURATION"):
        load_settings({"NEWSLETTER_CADENCE_QUIET": "3d"}, Path("/nonexistent.toml"))


def test_a_campaign_file_sets_its_own_caps_and_a_bad_one_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "urgent.md"
    path.write_text(
        "---\nsubject: Recall\ncadence_min_gap: 0\ncadence_quiet: {welcome: 1d}\n---\nBody\n",
        encoding="utf-8",
    )
    campaign = parse_campaign(path)
    assert (campaign.cadence_min_gap, campaign.cadence_quiet) == (0.0, {"welcome": 86400.0})
    assert GAP.for_campaign(0.0, None) == Caps(timedelta(0), {})
    path.write_text("---\nsubject: Recall\ncadence_min_gap: soon\n---\nBody\n", encoding="utf-8")
    with pytest.raises(ContentError, match="'cadence_min_gap' must be a duration"):
        parse_campaign(path)


def test_a_capped_campaign_defers_each_reader_and_drops_none(
    sqlite_database: Database, make_settings: Callable[..., Settings]
) -> None:
    database = sqlite_database
    add_readers(
        database,
        [(f"r{i}@example.org", "UTC", T - timedelta(days=10), ()) for i in range(30)],
        ["welcome"],
    )
    drive(database, T - timedelta(days=10), T - HOUR, caps=GAP)
    add_run(database, "news", T)
    add_run(database, "urgent", T + HOUR, cadence='{"min_gap": 0}')
    drive(database, T, T + 2 * HOUR, caps=GAP)
    with database.session() as session:
        rows = session.execute(
            select(Delivery.message, Delivery.next_attempt_at, Delivery.deferred_reason).where(
                Delivery.message.startswith("campaign:")
            )
        ).all()
    news = [r for r in rows if r.message == "campaign:news"]
    urgent = [r for r in rows if r.message == "campaign:urgent"]
    assert len(news) == len(urgent) == 30
    assert {r.next_attempt_at for r in news} == {T}  # the welcome steps were long ago
    # The urgent campaign's own cap (none) beats the settings' 20 hours.
    assert {(r.next_attempt_at, r.deferred_reason) for r in urgent} == {(T + HOUR, None)}
    assert campaigns.status(database, "news", now=T)["sent"] == 30


def test_a_campaign_at_reader_time_starts_in_utc_plus_14_and_reaches_each_reader_at_09_00(
    sqlite_database: Database, make_settings: Callable[..., Settings]
) -> None:
    from newsletter.errors import SchedulingError
    from tests.scheduler.campaign_helpers import NOW, marketer_settings, schedule

    database = sqlite_database
    settings = marketer_settings(make_settings, database)
    add_readers(
        database,
        [
            ("tokyo@example.org", "Asia/Tokyo", NOW, ()),
            ("ny@example.org", "America/New_York", NOW, ()),
            ("unknown@example.org", None, NOW, ()),
        ],
        [],
    )
    run = schedule(database, settings, "2026-12-01 09:00", "UTC", reader_time=True)
    assert run.send_at == datetime(2026, 11, 30, 19, tzinfo=UTC)  # 09:00 in UTC+14
    with pytest.raises(SchedulingError, match=r"in the first zone to reach it \(UTC\+14\)"):
        schedule(database, settings, "2026-11-28 20:00", "UTC", name="other", reader_time=True)
    campaigns.start_run(database, run.id, grace=HOUR, now=run.send_at, default_zone="Europe/Berlin")
    with database.session() as session:
        rows = dict(
            session.execute(
                select(Subscriber.email, Delivery.next_attempt_at).join(
                    Subscriber, Subscriber.id == Delivery.subscriber_id
                )
            ).all()
        )
    assert rows == {
        "tokyo@example.org": datetime(2026, 12, 1, 0, tzinfo=UTC),
        "ny@example.org": datetime(2026, 12, 1, 14, tzinfo=UTC),
        "unknown@example.org": datetime(2026, 12, 1, 8, tzinfo=UTC),  # the publisher's Berlin
    }
