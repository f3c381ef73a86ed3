"""The reader's zone is captured at signup: the browser's when JavaScript runs, else the
publisher's (``NEWSLETTER_TIMEZONE``) is the one their sends are placed in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from newsletter.settings import Settings
from scheduler.explain import explain
from tests.conftest import SmtpServer
from tests.subscribers.conftest import Site, links_in, start_site, stop_site


@pytest.fixture
def zoned_site(make_settings: Callable[..., Settings], smtp_server: SmtpServer) -> Iterator[Site]:
    site = start_site(make_settings, smtp_server, timezone="America/New_York")
    yield site
    stop_site(site)


def subscribe_and_confirm(
    page: Page, site: Site, email: str, mails: int, *, script: bool = True
) -> None:
    page.goto(f"{site.url}/subscribe")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Send me the free report").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    found = site.smtp.wait_for(lambda got: len(got) >= mails)
    mail = next(m for m in found if email in m.rcpt_tos)
    page.goto(links_in(mail, "/confirm/")[0])
    if not script:  # the confirmation page's script presses its button; a person does here
        page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()


def test_the_form_sends_the_browsers_zone_and_the_article_waits_for_its_window_there(
    browser: Any, zoned_site: Site
) -> None:
    context = browser.new_context(timezone_id="Asia/Tokyo")
    subscribe_and_confirm(context.new_page(), zoned_site, "tokyo@example.org", 1)
    context.close()
    reader = zoned_site.subscriber("tokyo@example.org")
    assert reader is not None and reader.timezone == "Asia/Tokyo"
    found = explain(zoned_site.database, zoned_site.settings, "tokyo@example.org", "welcome")
    assert found.zone == "Asia/Tokyo"
    article = found.messages[1]
    assert article.at is not None and 8 <= article.at.astimezone(ZoneInfo("Asia/Tokyo")).hour < 18


def test_without_javascript_the_publishers_zone_places_the_readers_emails(
    browser: Any, zoned_site: Site
) -> None:
    context = browser.new_context(java_script_enabled=False, timezone_id="Asia/Tokyo")
    subscribe_and_confirm(context.new_page(), zoned_site, "nojs@example.org", 1, script=False)
    context.close()
    reader = zoned_site.subscriber("nojs@example.org")
    assert reader is not None and reader.timezone is None
    found = explain(zoned_site.database, zoned_site.settings, "nojs@example.org", "welcome")
    assert found.zone == "America/New_York"
    zone_gate = next(g for g in found.messages[0].gates if g.name == "zone")
    assert "publisher's" in zone_gate.detail
