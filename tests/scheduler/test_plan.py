"""``plan`` against the real clock: what the plan says at one moment is, message for message
and second for second, what the clock then sends, over 30 simulated days."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.db import Database
from scheduler.cadence import Caps
from scheduler.plan import Scope, plan
from scheduler.sequences import reader_zone
from tests.scheduler.plan_helpers import add_readers, add_run, drive, sent_between

# Ten zones, one of them unknown (the publisher's), on both sides of the October and November
# daylight-saving changes (Europe 25 October, the United States 1 November, Sydney and
# Auckland the other way).
ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    None,
]
ONBOARDING = """\
name: onboarding
steps:
  - id: welcome
    system: welcome
  - id: article
    content: vitamin-k2-bone-health
    delay: 2d
    window: {days: weekdays, start: "08:00", end: "18:00"}
  - id: tips
    content: vitamin-k2-bone-health
    delay: 36h
    window: {days: [mon, wed, fri], start: "09:00", end: "12:00"}
  - id: vip
    content: vitamin-k2-bone-health
    delay: 3d
    when: tag:vip
  - id: last
    content: vitamin-k2-bone-health
    delay: 1w
    window: {days: weekdays, start: "08:00", end: "09:00"}
"""
CAPS = Caps(min_gap=timedelta(hours=20), quiet={"onboarding": timedelta(days=3)})


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sequences_folder(tmp_path: Path) -> Path:
    root = tmp_path / "sequences"
    root.mkdir()
    (root / "onboarding.yaml").write_text(ONBOARDING, encoding="utf-8")
    return root


def test_the_plan_and_the_real_sends_agree_for_1000_readers_in_10_zones_over_30_days(
    sqlite_database: Database, tmp_path: Path
) -> None:
    database, root = sqlite_database, sequences_folder(tmp_path)
    first = utc(2026, 10, 17, 6, 10)
    picks = random.Random(8)
    readers = [
        (
            f"r{i}@example.org",
            ZONES[i % len(ZONES)],
            first + timedelta(hours=19) * picks.randrange(6),  # six moments over four days
            ("vip",) if i % 3 == 0 else (),
        )
        for i in range(1000)
    ]
    add_readers(database, readers, ["onboarding"])
    add_run(database, "october-news", utc(2026, 10, 22, 14))
    add_run(database, "vip-offer", utc(2026, 10, 27, 9, 30), segment="tag:vip")
    add_run(database, "november-news", utc(2026, 11, 3, 15), cadence='{"min_gap": 7200}')
    # 09:00 on Monday 2 November in each reader's zone (the run starts in UTC+14).
    add_run(database, "timewarp", utc(2026, 11, 1, 19), reader_time="2026-11-02T09:00")
    zone = "America/New_York"
    drive(database, first, utc(2026, 10, 21, 3, 17), caps=CAPS, root=root, default_zone=zone)

    start = utc(2026, 10, 21, 3, 17)  # a moment when nothing falls due
    end = start + timedelta(days=30)
    scope = Scope(start, end, CAPS, zone, sequences_root=root)
    planned = list(plan(database, scope, batch_size=300))
    drive(database, start, end, caps=CAPS, root=root, default_zone=zone)
    sent = sent_between(database, start, end)

    assert {(p.message, p.subscriber_id, p.at) for p in planned} == sent
    assert len(planned) == len(sent) > 3000
    messages = {p.message for p in planned}
    assert {"campaign:october-news", "campaign:vip-offer", "campaign:november-news"} <= messages
    timewarp = [p for p in planned if p.message == "campaign:timewarp" and not p.reason]
    local = {p.at.astimezone(reader_zone(p.zone)).strftime("%a %H:%M") for p in timewarp}
    # Nine moments: the readers without a zone are in the publisher's, New York.
    assert local == {"Mon 09:00"} and len({p.at for p in timewarp}) == 9
    assert {"sequence:onboarding:tips", "sequence:onboarding:last"} <= messages
    deferred = [p for p in planned if p.reason]
    assert any("one email per 20h" in (p.reason or "") for p in deferred)
    assert any("first 3d of sequence 'onboarding'" in (p.reason or "") for p in deferred)


@pytest.mark.parametrize("campaign", ["october-news"])
def test_the_plan_for_one_campaign_lists_only_its_readers(
    sqlite_database: Database, tmp_path: Path, campaign: str
) -> None:
    database, root = sqlite_database, sequences_folder(tmp_path)
    confirmed = utc(2026, 10, 1, 12)
    add_readers(
        database,
        [(f"c{i}@example.org", "Europe/Berlin", confirmed, ()) for i in range(5)],
        ["onboarding"],
    )
    add_run(database, "october-news", utc(2026, 10, 22, 14))
    add_run(database, "other-news", utc(2026, 10, 22, 15))
    start = utc(2026, 10, 20)
    scope = Scope(start, start + timedelta(days=3), campaign=campaign, sequences_root=root)
    found = list(plan(database, scope))
    assert [(p.message, p.at) for p in found] == [
        (f"campaign:{campaign}", utc(2026, 10, 22, 14))
    ] * 5
