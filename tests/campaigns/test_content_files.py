"""The shipped content files: the edited article, the offer block and the system emails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from campaigns import list_campaigns, load_block, load_campaign, system_email
from newsletter.errors import ContentError, NotFoundError

# The project's shared notes sit beside the checkout, as on the developers' and CI machines.
SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "000_4f949559484ec1ab.txt"


def test_the_article_is_a_campaign_with_its_front_matter() -> None:
    campaign = load_campaign("vitamin-k2-bone-health")
    assert campaign.name == "vitamin-k2-bone-health"
    assert 0 < len(campaign.subject) <= 78
    assert campaign.content.preheader
    assert campaign.web_url and campaign.web_url.startswith("https://")
    assert "bone-health" in campaign.tags
    assert campaign.content.offer is not None
    assert campaign.sources and campaign.sources[0]["title"].startswith("The Importance")


def test_the_editors_two_corrections_are_recorded_and_applied() -> None:
    campaign = load_campaign("vitamin-k2-bone-health")
    fixes = {(c.was, c.now) for c in campaign.corrections}
    assert fixes == {("calcitonin", "osteocalcin"), ("K2-7", "MK-7")}
    assert all(c.why for c in campaign.corrections)
    body = campaign.content.body
    assert "alcitonin" not in body and "K2-7" not in body
    assert "Osteocalcin" in body and "MK-7" in body


def test_the_page_boilerplate_filler_and_citation_markers_are_gone() -> None:
    body = load_campaign("vitamin-k2-bone-health").content.body
    for boilerplate in (
        "Related Content",
        "Share Article",
        "Related Articles",
        "Lorem",
        "Free Report",
    ):
        assert boilerplate not in body
    assert not re.search(r"\(\d+(; ?\d+)*\)", body)


@pytest.mark.skipif(not SEED.exists(), reason="the seed article is not on this machine")
def test_the_article_keeps_the_seed_articles_headings() -> None:
    seed = SEED.read_text(encoding="utf-8")
    body = load_campaign("vitamin-k2-bone-health").content.body
    assert "The Importance of Vitamin K2 for Bone Health" in seed
    assert "# The Importance of Vitamin K2 for Bone Health" in body


def test_the_free_report_offer_is_a_reusable_block() -> None:
    offer = load_block("free-report")
    assert offer.title == "The 7 Core Strategies to Heal the Gut Lining and Manage Leaky Gut"
    assert offer.button_label == "Get the free report"


def test_list_campaigns_leaves_out_system_emails_and_blocks() -> None:
    assert [c.name for c in list_campaigns()] == ["vitamin-k2-bone-health"]


@pytest.mark.parametrize(
    ("kind", "button"),
    [("confirmation", "links.confirm"), ("welcome", "links.report"), ("unsubscribed", None)],
)
def test_system_emails_load_with_their_button(kind: str, button: str | None) -> None:
    content = system_email(kind)
    assert content.layout == "system"
    assert (content.button.url if content.button else None) == button


def test_an_unknown_system_email_or_campaign_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="expected one of confirmation, welcome"):
        system_email("birthday")
    with pytest.raises(NotFoundError, match="campaigns: vitamin-k2-bone-health"):
        load_campaign("no-such-campaign")
    with pytest.raises(NotFoundError, match="not a campaign name"):
        load_campaign("../secrets")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no front matter\n", "expected front matter"),
        ("---\nsubject: [unclosed\n---\nbody\n", r"bad\.md:\d+: front matter is not valid YAML"),
        ("---\nsubject: x\n", "not closed"),
        ("---\npreheader: x\n---\nbody\n", "'subject' is required"),
        ("---\nsubject: x\nsubjet: y\n---\nbody\n", "unknown field"),
        ("---\nsubject: x\nbutton: {label: Go}\n---\nbody\n", "needs 'label' and 'url'"),
        ("---\nsubject: x\noffer: no-such-block\n---\nbody\n", "no file blocks/no-such-block.md"),
    ],
)
def test_a_malformed_campaign_file_is_a_content_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "bad.md").write_text(text, encoding="utf-8")
    with pytest.raises(ContentError, match=message) as caught:
        load_campaign("bad", tmp_path)
    assert "bad.md" in caught.value.message


def test_a_campaign_is_read_once_per_version_of_its_file(content_dir: Path) -> None:
    import os

    first = load_campaign("vitamin-k2-bone-health", content_dir)
    assert load_campaign("vitamin-k2-bone-health", content_dir) is first
    path = content_dir / "vitamin-k2-bone-health.md"
    path.write_text(path.read_text(encoding="utf-8").replace("Hi {{", "Hello {{"), encoding="utf-8")
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))
    changed = load_campaign("vitamin-k2-bone-health", content_dir)
    assert changed is not first and changed.content.body.startswith("Hello")
