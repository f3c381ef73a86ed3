"""``explain`` names the gate that holds a message back, with the data behind it: one case per
reason a message is held, on the simulated clock, plus a sent one with its Message-ID."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from newsletter.db import Database
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler.cadence import Caps
from scheduler.campaigns import RunState
from scheduler.explain import explain, format_explanation
from subscribers.addresses import address_hash
from subscribers.models import Status, Subscriber, Suppression
from tests.scheduler.plan_helpers import add_readers, add_run, drive
from tests.scheduler.test_plan import ONBOARDING

CAPS = Caps(min_gap=timedelta(hours=20), quiet={"onboarding": timedelta(days=3)})
# Monday 5 October 2026, 14:00 UTC.
MONDAY = datetime(2026, 10, 5, 14, tzinfo=UTC)


@dataclass
class World:
    database: Database
    root: Path

    def reader(
        self,
        email: str,
        confirmed: datetime = MONDAY,
        *,
        zone: str | None = "UTC",
        tags: tuple[str, ...] = (),
        status: str = Status.CONFIRMED,
    ) -> None:
        add_readers(self.database, [(email, zone, confirmed, tags)], ["onboarding"])
        if status != Status.CONFIRMED:
            with self.database.session() as session:
                session.execute(
                    update(Subscriber).where(Subscriber.email == email).values(status=status)
                )

    def run_until(self, moment: datetime) -> datetime:
        drive(self.database, MONDAY, moment, caps=CAPS, root=self.root, default_zone="UTC")
        return moment


Case = Callable[[World], tuple[str, str, datetime]]


def erased(w: World) -> tuple[str, str, datetime]:
    with w.database.session() as session:
        session.add(
            Suppression(address_hash=address_hash("gone@example.org"), reason="erased", at=MONDAY)
        )
    return "gone@example.org", "onboarding:welcome", MONDAY


def pending(w: World) -> tuple[str, str, datetime]:
    w.reader("p@example.org", status=Status.PENDING)
    return "p@example.org", "onboarding:article", MONDAY


def unsubscribed(w: World) -> tuple[str, str, datetime]:
    w.reader("u@example.org", status=Status.UNSUBSCRIBED)
    return "u@example.org", "onboarding:article", MONDAY


def bounced(w: World) -> tuple[str, str, datetime]:
    w.reader("b@example.org", status=Status.BOUNCED)
    return "b@example.org", "campaign:news", MONDAY


def not_scheduled(w: World) -> tuple[str, str, datetime]:
    w.reader("n@example.org")
    return "n@example.org", "campaign:never-scheduled", MONDAY


def run_in_state(state: str) -> Case:
    def case(w: World) -> tuple[str, str, datetime]:
        w.reader("r@example.org")
        add_run(w.database, "news", MONDAY + timedelta(days=5), state=state)
        return "r@example.org", "news", MONDAY + timedelta(hours=1)

    return case


def outside_segment(w: World) -> tuple[str, str, datetime]:
    w.reader("s@example.org", tags=("gardening",))
    add_run(w.database, "vip-offer", MONDAY + timedelta(days=5), segment="tag:vip")
    return "s@example.org", "vip-offer", MONDAY + timedelta(hours=1)


def campaign_later(w: World) -> tuple[str, str, datetime]:
    w.reader("l@example.org")
    add_run(w.database, "news", MONDAY + timedelta(days=5))
    return "l@example.org", "news", MONDAY + timedelta(hours=1)


def quiet_time(w: World) -> tuple[str, str, datetime]:
    w.reader("q@example.org")
    add_run(w.database, "news", MONDAY + timedelta(days=1))
    return "q@example.org", "news", w.run_until(MONDAY + timedelta(days=1, hours=1))


def min_gap(w: World) -> tuple[str, str, datetime]:
    # tips goes on Friday 09:00 UTC; a campaign at 10:00 waits 20 hours after it.
    w.reader("g@example.org")
    add_run(w.database, "news", datetime(2026, 10, 9, 10, tzinfo=UTC))
    return "g@example.org", "news", w.run_until(datetime(2026, 10, 9, 12, tzinfo=UTC))


def delay(w: World) -> tuple[str, str, datetime]:
    w.reader("d@example.org")
    return "d@example.org", "onboarding:article", w.run_until(MONDAY + timedelta(hours=1))


def window(w: World) -> tuple[str, str, datetime]:
    # Friday 20:00 in New York + 2 days is Sunday 20:00: the weekday window opens Monday 08:00.
    friday = datetime(2026, 10, 9, 20, tzinfo=UTC).replace(tzinfo=None)
    confirmed = friday.replace(tzinfo=UTC) + timedelta(hours=4)  # 20:00 EDT
    w.reader("w@example.org", confirmed, zone="America/New_York")
    now = confirmed + timedelta(days=2, hours=1)  # Sunday 21:00 EDT
    return "w@example.org", "onboarding:article", w.run_until(now)


def condition(w: World) -> tuple[str, str, datetime]:
    w.reader("c@example.org")
    return "c@example.org", "onboarding:vip", MONDAY


def previous_step(w: World) -> tuple[str, str, datetime]:
    w.reader("v@example.org")
    return "v@example.org", "onboarding:tips", w.run_until(MONDAY + timedelta(hours=1))


def inserted_before(w: World) -> tuple[str, str, datetime]:
    w.reader("i@example.org", tags=("vip",))
    now = w.run_until(datetime(2026, 10, 13, 12, tzinfo=UTC))  # past tips and vip
    edited = ONBOARDING.replace(
        "  - id: tips\n",
        "  - id: recipe\n    content: vitamin-k2-bone-health\n    delay: 1d\n  - id: tips\n",
    )
    (w.root / "onboarding.yaml").write_text(edited, encoding="utf-8")
    return "i@example.org", "onboarding:recipe", now


CASES: list[tuple[str, Case, str, str]] = [
    ("erased", erased, "erasure", "nothing is ever sent"),
    ("pending", pending, "status", "not confirmed"),
    ("unsubscribed", unsubscribed, "status", "unsubscribed"),
    ("bounced", bounced, "status", "bounced"),
    ("not scheduled", not_scheduled, "campaign", "is not scheduled"),
    ("paused", run_in_state(RunState.PAUSED), "campaign", "paused"),
    ("cancelled", run_in_state(RunState.CANCELLED), "campaign", "cancelled"),
    ("held", run_in_state(RunState.HELD), "campaign", "held"),
    ("segment", outside_segment, "segment", "not in the segment 'tag:vip'"),
    ("campaign later", campaign_later, "delay", "goes at Sat 2026-10-10 14:00"),
    ("quiet time", quiet_time, "cadence", "first 3d of sequence 'onboarding'"),
    ("min gap", min_gap, "cadence", "one email per 20h (sequence:onboarding:tips"),
    ("delay", delay, "delay", "2d after the previous step"),
    ("window", window, "window", "opens Mon 2026-10-12 08:00 America/New_York"),
    ("condition", condition, "condition", "'tag:vip' not met"),
    ("previous step", previous_step, "sequence", "waits for step 'article' first"),
    ("inserted before", inserted_before, "sequence", "past this step"),
]


@pytest.fixture
def world(sqlite_database: Database, tmp_path: Path) -> World:
    root = tmp_path / "sequences"
    root.mkdir()
    (root / "onboarding.yaml").write_text(ONBOARDING, encoding="utf-8")
    return World(sqlite_database, root)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sqlite_database: Database) -> Settings:
    return make_settings(
        database_url=sqlite_database.url,
        timezone="UTC",
        cadence_min_gap="20h",
        cadence_quiet="onboarding:3d",
    )


@pytest.mark.parametrize(
    ("case", "gate", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_explain_names_the_gate_that_holds_the_message(
    world: World, settings: Settings, case: Case, gate: str, detail: str
) -> None:
    email, message, now = case(world)
    found = explain(world.database, settings, email, message, now=now, sequences_root=world.root)
    (item,) = found.messages
    held = item.held_by
    assert held is not None, format_explanation(found)
    assert (held.name, item.outcome != "sent") == (gate, True), format_explanation(found)
    assert detail in held.detail, format_explanation(found)


def test_a_sent_step_shows_its_message_id_and_time_and_no_gate_holds_it(
    world: World, settings: Settings
) -> None:
    world.reader("sent@example.org")
    now = world.run_until(MONDAY + timedelta(hours=1))
    found = explain(
        world.database,
        settings,
        "Sent@Example.org",
        "onboarding:welcome",
        now=now,
        sequences_root=world.root,
    )
    (item,) = found.messages
    assert (item.outcome, item.at, item.held_by) == ("sent", MONDAY, None)
    assert item.message_id is not None and item.message_id.endswith("@example.org>")
    assert item.message_id in format_explanation(found)
    assert found.to_dict()["messages"][0]["message_id"] == item.message_id


def test_a_deferred_message_says_until_when_it_waits(world: World, settings: Settings) -> None:
    email, message, now = quiet_time(world)
    (item,) = explain(
        world.database, settings, email, message, now=now, sequences_root=world.root
    ).messages
    assert item.outcome == "deferred"
    assert item.at == MONDAY + timedelta(days=3)


def test_without_a_message_every_step_and_campaign_is_explained(
    world: World, settings: Settings
) -> None:
    email, _, now = campaign_later(world)
    found = explain(world.database, settings, email, now=now, sequences_root=world.root)
    assert [m.message for m in found.messages] == [
        "sequence:onboarding:welcome",
        "sequence:onboarding:article",
        "sequence:onboarding:tips",
        "sequence:onboarding:vip",
        "sequence:onboarding:last",
        "campaign:news",
    ]


def test_an_unknown_reader_or_message_is_a_clear_error(world: World, settings: Settings) -> None:
    world.reader("k@example.org")
    with pytest.raises(NotFoundError, match=r"no reader has the address nobody@example\.org"):
        explain(world.database, settings, "nobody@example.org", sequences_root=world.root)
    with pytest.raises(NotFoundError, match="has no step 'nope'"):
        explain(
            world.database, settings, "k@example.org", "onboarding:nope", sequences_root=world.root
        )
