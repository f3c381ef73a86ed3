"""Every page a reader can reach reads on a phone (320 px, no sideways scrolling) and works with
the keyboard: preferences, the report, the embeddable form, and the page for a broken link."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from newsletter.settings import Settings
from subscribers.tokens import Purpose, signed_url
from tests.conftest import SmtpServer
from tests.subscribers.conftest import Site, start_site, stop_site

PHONE = {"width": 320, "height": 640}


@pytest.fixture
def reader_site(make_settings: Callable[..., Settings], smtp_server: SmtpServer) -> Iterator[Site]:
    site = start_site(make_settings, smtp_server)
    with site.client() as client:
        client.post("/subscribe", json={"email": "pages@example.org", "name": "Ada"})
    yield site
    stop_site(site)


def _link(site: Site, purpose: Purpose) -> str:
    reader = site.subscriber("pages@example.org")
    assert reader is not None
    return signed_url(site.url, site.settings.secret_key or "", purpose, reader.key)


def _fits_the_phone(page: Page) -> bool:
    return not page.evaluate("document.documentElement.scrollWidth > window.innerWidth")


def test_preferences_are_changed_with_the_keyboard_alone(page: Page, reader_site: Site) -> None:
    page.set_viewport_size(PHONE)
    page.goto(_link(reader_site, Purpose.PREFERENCES))
    assert _fits_the_phone(page)
    page.get_by_label("First name").focus()
    page.keyboard.press("Control+a")
    page.keyboard.type("Grace")
    page.keyboard.press("Tab")
    page.keyboard.type("Europe/Paris")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the first topic
    page.get_by_role("button", name="Save preferences").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Saved.")
    reader = reader_site.subscriber("pages@example.org")
    assert (reader.name, reader.timezone, reader.tag_names) == (
        "Grace",
        "Europe/Paris",
        ["gut-health"],
    )


def test_the_report_opens_on_a_phone(page: Page, reader_site: Site) -> None:
    page.set_viewport_size(PHONE)
    page.goto(_link(reader_site, Purpose.REPORT))
    expect(page.get_by_role("heading", name="The 7 Core Strategies")).to_be_visible()
    expect(page.get_by_text("SAMPLE FILE, NOT THE REPORT")).to_be_visible()
    assert _fits_the_phone(page)


def test_the_embeddable_form_subscribes_from_another_page(page: Page, reader_site: Site) -> None:
    snippet = page.request.get(f"{reader_site.url}/subscribe/embed").text()
    page.set_viewport_size(PHONE)
    page.set_content(f"<!doctype html><html lang='en'><body>{snippet}</body></html>")
    assert _fits_the_phone(page)
    page.get_by_label("Email address").fill("embedded@example.org")
    page.get_by_role("button", name="Send me the free report").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    browser_zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    reader = reader_site.subscriber("embedded@example.org")
    assert reader is not None and reader.form == "embed"
    assert reader.timezone == browser_zone  # the snippet sends the reader's zone too


def test_a_broken_link_explains_itself_and_leads_back_to_the_form(
    page: Page, reader_site: Site
) -> None:
    page.set_viewport_size(PHONE)
    response = page.goto(f"{reader_site.url}/unsubscribe/not-a-real-token")
    assert response is not None and response.status == 400
    expect(page.get_by_role("heading", name="This link does not work")).to_be_visible()
    page.get_by_role("link", name="Go to the signup form").click()
    expect(page.get_by_label("Email address")).to_be_visible()
    assert _fits_the_phone(page)
