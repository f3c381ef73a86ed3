"""``sequence diff``: before an edit applies, how many readers get an inserted step, skip a
removed one, or move in time; after it applies, nothing already sent is sent again."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import Result

from campaigns.sequence import parse_sequence
from newsletter import runtime
from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.deliveries import Delivery, State
from scheduler.diff import diff_sequence
from tests.scheduler.plan_helpers import add_readers, drive
from tests.scheduler.test_plan import ONBOARDING

MONDAY = datetime(2026, 10, 5, 7, tzinfo=UTC)
# A recipe step after the article, the VIP step removed, the last step a week later.
EDITED = (
    ONBOARDING.replace(
        "  - id: tips\n",
        "  - id: recipe\n    content: vitamin-k2-bone-health\n    delay: 1d\n  - id: tips\n",
    )
    .replace(
        "  - id: vip\n    content: vitamin-k2-bone-health\n    delay: 3d\n    when: tag:vip\n", ""
    )
    .replace("delay: 1w", "delay: 2w")
)


def sent(database: Database) -> dict[tuple[str, int], datetime]:
    with database.session() as session:
        rows = session.execute(
            select(Delivery.message, Delivery.subscriber_id, Delivery.sent_at).where(
                Delivery.state == State.SENT
            )
        ).all()
    return {(m, int(r)): at for m, r, at in rows}


def test_diff_counts_readers_per_change_and_the_edit_never_resends_a_step(
    sqlite_database: Database, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    database, root = sqlite_database, tmp_path / "sequences"
    root.mkdir()
    path = root / "onboarding.yaml"
    path.write_text(ONBOARDING, encoding="utf-8")
    ids = add_readers(
        database,
        [
            # Past tips (Friday) by Saturday: the recipe comes before their place.
            ("early@example.org", "UTC", MONDAY, ("vip",)),
            # Got the article on Friday, waiting for tips: the recipe is ahead of them.
            ("middle@example.org", "UTC", MONDAY + timedelta(days=2, hours=8), ()),
            # Confirmed on Saturday: only the welcome so far.
            ("late@example.org", "UTC", MONDAY + timedelta(days=5), ()),
        ],
        ["onboarding"],
    )
    saturday = MONDAY + timedelta(days=5, hours=1)
    drive(database, MONDAY, saturday, root=root)
    before = sent(database)
    path.write_text(EDITED, encoding="utf-8")

    found = diff_sequence(
        database, make_settings(database_url=database.url), parse_sequence(path), now=saturday
    )

    assert (found.readers, found.on_other_versions) == (3, 3)
    assert (found.steps_added, found.steps_removed, found.steps_changed) == (
        ["recipe"],
        ["vip"],
        ["last"],
    )
    # middle and late get the recipe; early was past it. Only early had the VIP step ahead.
    # Everyone's last step moves a week; late's and middle's tips move behind the recipe.
    assert (found.inserted, found.removed, found.moved) == (2, 1, 3)

    drive(database, saturday, saturday + timedelta(days=40), root=root)
    after = sent(database)
    assert {key: after[key] for key in before} == before  # nothing sent again, nor moved
    assert ("sequence:onboarding:recipe", ids["early@example.org"]) not in after
    assert ("sequence:onboarding:recipe", ids["middle@example.org"]) in after
    with database.session() as session:
        per_reader = session.execute(
            select(func.count())
            .select_from(Delivery)
            .group_by(Delivery.message, Delivery.subscriber_id)
        ).scalars()
        assert set(per_reader) == {1}


def test_the_command_compares_a_proposed_file_before_it_is_put_in_place(
    sequence_command: Callable[..., Result], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    add_readers(runtime.database(), [("a@example.org", None, now, ())], ["welcome"])
    drive(runtime.database(), now, now)
    proposed = tmp_path / "welcome.yaml"
    # A week longer: with a weekday send window, 2d and 3d can both land on the same Monday.
    proposed.write_text(
        Path("campaigns/sequences/welcome.yaml").read_text().replace("delay: 2d", "delay: 9d")
    )
    result = sequence_command("sequence", "diff", "welcome", "--file", str(proposed), "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["readers"], found["moved"], found["steps_changed"]) == (1, 1, ["vitamin-k2"])
    text = sequence_command("sequence", "diff", "welcome")
    assert "0 on another version" in text.stdout
