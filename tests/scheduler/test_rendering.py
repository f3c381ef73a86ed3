"""The worker's renderer: each kind of message key, the reader's signed links, the delivery's
Message-ID, and the free-report offer only for readers who have not got the report."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import update

from campaigns import load_block
from newsletter.db import Database, utcnow
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler import rendering
from scheduler.deliveries import (
    ClaimedDelivery,
    Delivery,
    Recipient,
    State,
    claim_due_deliveries,
    enqueue_one,
)
from scheduler.rendering import Renderer, content_for
from subscribers.tokens import Purpose, read_token
from templates import Reader, render
from tests.scheduler.delivery_helpers import add_readers

ARTICLE = "campaign:vitamin-k2-bone-health"
OFFER = f"FREE REPORT: {load_block('free-report').title}"


def reader(subscriber_id: int = 1) -> Recipient:
    return Recipient(
        subscriber_id,
        "ada@example.com",
        "reader-key-1",
        "Ada Lovelace",
        "confirmed",
        {"plan": "paid"},
        "Europe/London",
        ("vip",),
    )


def delivery(message: str, subscriber_id: int = 1) -> ClaimedDelivery:
    return ClaimedDelivery(
        7, message, subscriber_id, 0, 0, f"<d7.{abs(hash(message))}@example.org>", reader()
    )


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def html_of(raw: bytes) -> str:
    part = parsed(raw).get_body(("html",))
    assert part is not None
    return str(part.get_content())


def text_of(raw: bytes) -> str:
    part = parsed(raw).get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture
def renderer(make_settings: Callable[..., Settings], sqlite_database: Database) -> Renderer:
    settings = make_settings(database_url=sqlite_database.url, base_url="https://news.example.org")
    return Renderer(settings, sqlite_database)


@pytest.mark.parametrize(
    ("message", "subject"),
    [
        ("campaign:vitamin-k2-bone-health", "Vitamin K2 and your bones"),
        ("sequence:welcome:vitamin-k2", "Vitamin K2 and your bones"),
        ("sequence:welcome:welcome-report", "Welcome!"),
        ("system:welcome", "Welcome!"),
        ("system:confirmation:3", ""),
    ],
)
def test_each_kind_of_message_key_renders_its_content_with_the_deliverys_message_id(
    renderer: Renderer, message: str, subject: str
) -> None:
    claimed = delivery(message)
    raw = renderer(claimed, reader())
    email = parsed(raw)
    assert email["Message-ID"] == claimed.message_id
    assert email["To"] == "Ada Lovelace <ada@example.com>"
    assert str(email["Subject"]).startswith(subject)
    unsubscribe = re.search(
        r"<(https://news\.example\.org/unsubscribe/[^>]+)>", email["List-Unsubscribe"]
    )
    assert unsubscribe is not None
    token = unsubscribe.group(1).rsplit("/", 1)[1]
    assert read_token("test-secret-key", Purpose.UNSUBSCRIBE, token) == "reader-key-1"


def test_the_confirmation_email_carries_the_readers_signed_confirm_link(
    renderer: Renderer,
) -> None:
    html = html_of(renderer(delivery("system:confirmation"), reader()))
    token = re.search(r"https://news\.example\.org/confirm/([A-Za-z0-9_.-]+)", html)
    assert token is not None
    assert read_token("test-secret-key", Purpose.CONFIRM, token.group(1)) == "reader-key-1"


def test_the_free_report_offer_is_shown_until_the_welcome_email_was_sent(
    renderer: Renderer, sqlite_database: Database
) -> None:
    (subscriber_id,) = add_readers(sqlite_database, 1)

    def article_as_claimed() -> ClaimedDelivery:
        """The article's delivery as the worker claims it: with the reader's row, and whether
        a delivery carrying the report was sent to them, read in the same claim."""
        with sqlite_database.session() as session:
            enqueue_one(session, ARTICLE, subscriber_id)
            session.execute(
                update(Delivery)
                .where(Delivery.message == ARTICLE)
                .values(state=State.QUEUED, next_attempt_at=utcnow())
            )
        with sqlite_database.session() as session:
            claimed = claim_due_deliveries(
                session, "test", batch=10, lease=timedelta(minutes=1), domain="example.org"
            )
        return next(row for row in claimed if row.message == ARTICLE)

    def offered() -> bool:
        article = article_as_claimed()
        assert article.recipient is not None
        return OFFER in text_of(renderer(article, article.recipient))

    assert offered()
    with sqlite_database.session() as session:
        enqueue_one(session, "system:welcome", subscriber_id)
    assert offered()  # queued (then claimed) is not sent
    with sqlite_database.session() as session:
        session.execute(
            update(Delivery).where(Delivery.message == "system:welcome").values(state=State.SENT)
        )
    assert not offered()


def test_an_unknown_message_key_is_an_error_naming_it(renderer: Renderer) -> None:
    with pytest.raises(NotFoundError, match="message 'newsletter:7'"):
        renderer(delivery("newsletter:7"), reader())
    with pytest.raises(NotFoundError, match="no-such-campaign"):
        renderer(delivery("campaign:no-such-campaign"), reader())


def write_campaign(root: Path, name: str, subject: str) -> None:
    (root / f"{name}.md").write_text(f"---\nsubject: {subject}\n---\nHello.\n", encoding="utf-8")


def test_an_edited_campaign_file_takes_effect_within_the_recheck_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rendering, "CONTENT_RECHECK", 60.0)
    write_campaign(tmp_path, "news", "First subject")
    assert content_for("campaign:news", tmp_path).subject == "First subject"
    write_campaign(tmp_path, "news", "Second subject")
    os.utime(tmp_path / "news.md", ns=(time.time_ns() + 10**9,) * 2)  # a later modification time
    # Within the interval the kept content is used: the files are not looked at for every reader.
    assert content_for("campaign:news", tmp_path).subject == "First subject"
    monkeypatch.setattr(rendering, "CONTENT_RECHECK", 0.0)  # the interval has passed
    assert content_for("campaign:news", tmp_path).subject == "Second subject"


def test_a_failed_content_lookup_is_not_kept(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="late"):
        content_for("campaign:late", tmp_path)
    write_campaign(tmp_path, "late", "Here now")
    assert content_for("campaign:late", tmp_path).subject == "Here now"
    with pytest.raises(NotFoundError, match="expected campaign:NAME"):
        content_for("newsletter:7", tmp_path)


def test_a_campaign_copy_signs_only_the_links_it_shows(renderer: Renderer) -> None:
    content = content_for("campaign:vitamin-k2-bone-health")
    links = renderer.links("reader-key-1", content)
    raw = render(
        content, Reader("ada@example.com"), links, message_id="<m@x>", settings=renderer.settings
    )
    signed = vars(links)
    assert "confirm" not in signed  # only confirmation emails show it
    assert signed["report"] in raw.decode()  # the offer shows the report link
    assert read_token("test-secret-key", Purpose.REPORT, signed["report"].rsplit("/", 1)[1])
    has_report = Reader("ada@example.com", has_report=True)
    other = renderer.links("reader-key-1", content)
    render(content, has_report, other, message_id="<m@x>", settings=renderer.settings)
    assert "report" not in vars(other)


def test_signed_links_read_like_eagerly_signed_ones(renderer: Renderer) -> None:
    links = renderer.links("reader-key-1", content_for("system:confirmation"))
    for purpose in Purpose:
        url = getattr(links, purpose.value)
        assert url.startswith(f"https://news.example.org/{purpose.value}/")
        assert read_token("test-secret-key", purpose, url.rsplit("/", 1)[1]) == "reader-key-1"
    assert links.web_version is None and links.unsubscribe_mailto is None
