"""A person in headless chromium subscribes on a phone and on a desktop, confirms from the email,
and unsubscribes with the page's one button."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from newsletter.settings import Settings
from subscribers.models import Status
from tests.conftest import SmtpServer
from tests.subscribers.conftest import Site, links_in, start_site, stop_site, unsubscribe_url

VIEWPORTS = {"phone": {"width": 320, "height": 640}, "desktop": {"width": 1280, "height": 800}}


@pytest.fixture
def browser_site(make_settings: Callable[..., Settings], smtp_server: SmtpServer) -> Iterator[Site]:
    site = start_site(make_settings, smtp_server)
    yield site
    stop_site(site)


def _overflows(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth"))


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_a_person_fills_the_form_confirms_and_unsubscribes(
    page: Page, browser_site: Site, viewport: str
) -> None:
    page.set_viewport_size(VIEWPORTS[viewport])
    page.goto(f"{browser_site.url}/subscribe")
    assert not _overflows(page)
    page.get_by_label("Email address").fill(f"{viewport}@example.org")
    page.get_by_label("First name").fill("Ada")
    page.get_by_role("button", name="Send me the free report").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()

    reader = browser_site.subscriber(f"{viewport}@example.org")
    assert reader is not None and reader.status == Status.PENDING
    assert reader.timezone, "the browser's zone is sent with the form"

    [mail] = browser_site.smtp.wait_for(lambda mails: len(mails) == 1)
    page.goto(links_in(mail, "/confirm/")[0])
    expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
    assert browser_site.subscriber(f"{viewport}@example.org").status == Status.CONFIRMED

    page.goto(unsubscribe_url(mail))
    assert not _overflows(page)
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    assert browser_site.subscriber(f"{viewport}@example.org").status == Status.UNSUBSCRIBED


def test_the_form_shows_each_message_beside_its_field(page: Page, browser_site: Site) -> None:
    page.set_viewport_size(VIEWPORTS["phone"])
    page.goto(f"{browser_site.url}/subscribe")
    page.get_by_label("Email address").fill("not-an-address")
    page.get_by_role("button", name="Send me the free report").click()
    error = page.locator("#email-error")
    expect(error).to_be_visible()
    expect(page.get_by_label("Email address")).to_have_attribute("aria-describedby", "email-error")
    assert not _overflows(page)


def test_the_form_works_without_javascript(browser: object, browser_site: Site) -> None:
    context = browser.new_context(java_script_enabled=False)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{browser_site.url}/subscribe")
    page.get_by_label("Email address").fill("nojs@example.org")
    page.get_by_role("button", name="Send me the free report").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    context.close()
    reader = browser_site.subscriber("nojs@example.org")
    assert reader is not None and reader.timezone is None
