"""A designer in headless chromium: the index of every email, the article at each width and in
dark mode, a saved file updating the open page by itself, a broken file showing its error in the
page, a reader picked, and a test sent and found in the capture inbox. Screenshots for the
README land in docs/screenshots/ with `pytest --screenshots`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from newsletter.settings import Settings
from subscribers.models import Status, Subscriber
from tests.conftest import expect_frame_shows
from tests.e2e.preview_site import ARTICLE, PreviewSite, start_preview, stop_preview

PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
SENDABLE = re.compile(r"^(ready|\d+ warnings?)$")


@pytest.fixture
def preview_site(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[PreviewSite]:
    site = start_preview(make_settings, tmp_path)
    yield site
    stop_preview(site)


def overflows(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth"))


def frame_width(page: Page) -> int:
    return int(page.locator("iframe.email").evaluate("e => e.getBoundingClientRect().width"))


def open_article(page: Page, site: PreviewSite) -> None:
    page.goto(site.url)
    page.get_by_role("link", name=ARTICLE).click()
    expect(page.locator("h1")).to_contain_text("Vitamin K2 and your bones")


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_the_index_lists_every_email_with_its_preflight_at_a_glance(
    page: Page, preview_site: PreviewSite, viewport: str, screenshots: Path
) -> None:
    page.set_viewport_size(PHONE if viewport == "phone" else DESKTOP)
    page.goto(preview_site.url)
    for heading in ("System emails", "Sequence welcome", "Campaigns"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    for key in (
        "system/confirmation",
        "system/welcome",
        "system/unsubscribed",
        "sequence/welcome/welcome-report",
        "sequence/welcome/vitamin-k2",
        f"campaign/{ARTICLE}",
    ):
        row = page.locator(f'li[data-key="{key}"]')
        # make_settings' http base URL and the sample report are warnings, never problems
        expect(row.locator(".badge")).to_have_text(SENDABLE)
    expect(
        page.get_by_text("2d after the previous step, 08:00-18:00 reader's time")
    ).to_be_visible()
    assert not overflows(page)
    page.screenshot(path=str(screenshots / f"preview-index-{viewport}.png"), full_page=True)


def test_the_article_switches_widths_and_dark_mode(
    page: Page, preview_site: PreviewSite, screenshots: Path
) -> None:
    page.set_viewport_size(DESKTOP)
    frame_loads: list[str] = []
    page.on(
        "request",
        lambda request: frame_loads.append(request.url) if "/frame/" in request.url else None,
    )
    open_article(page, preview_site)
    frame = page.frame_locator("iframe.email")
    expect_frame_shows(page, "The Importance of Vitamin K2 for Bone Health")
    assert len(frame_loads) == 1, frame_loads  # the page script keeps the src it was served with
    assert "sandbox" in (page.locator("iframe.email").get_attribute("sandbox") or "sandbox")
    assert page.locator("iframe.email").get_attribute("sandbox") == ""  # no allow-same-origin

    page.get_by_role("button", name="320 px").click()
    assert frame_width(page) == 320
    page.get_by_role("button", name="600 px").click()
    assert frame_width(page) == 600
    page.get_by_role("button", name="Full width").click()
    assert frame_width(page) > 1100
    page.get_by_role("button", name="600 px").click()

    heading = frame.get_by_text("The Importance of Vitamin K2 for Bone Health")
    light = heading.evaluate("e => getComputedStyle(e.closest('div')).color")
    page.get_by_role("button", name="Dark mode").click()
    expect(page.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "true")
    dark = frame.get_by_text("The Importance of Vitamin K2 for Bone Health")
    expect(dark).to_have_css("color", "rgb(230, 236, 233)")
    assert light != "rgb(230, 236, 233)"
    page.screenshot(path=str(screenshots / "preview-email-dark.png"))
    page.get_by_role("button", name="Dark mode").click()
    expect(frame.get_by_text("The Importance of Vitamin K2 for Bone Health")).to_have_css(
        "color", light
    )
    page.screenshot(path=str(screenshots / "preview-email.png"))

    expect(page.locator("#text-part")).to_contain_text("Hi Sam,")
    expect(page.get_by_text("List-Unsubscribe-Post: List-Unsubscribe=One-Click")).to_be_visible()

    page.set_viewport_size(PHONE)
    page.get_by_role("button", name="320 px").click()
    assert not overflows(page)
    page.screenshot(path=str(screenshots / "preview-email-phone.png"))


def test_saving_a_content_file_updates_the_open_page_without_a_reload(
    page: Page, preview_site: PreviewSite
) -> None:
    open_article(page, preview_site)
    page.evaluate("window.stillTheSamePage = true")
    preview_site.edit(preview_site.article, "Vitamin K2 and your bones", "Edited live: K2")
    expect(page.locator("h1")).to_contain_text("Edited live: K2", timeout=15_000)
    expect_frame_shows(page, "The Importance of Vitamin K2 for Bone Health")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded

    preview_site.edit(preview_site.article, "Vitamin K is well known", "Vitamin K is famous")
    expect_frame_shows(page, "Vitamin K is famous", timeout=15_000)


def test_a_broken_file_shows_its_error_in_the_page_and_the_server_keeps_running(
    page: Page, preview_site: PreviewSite
) -> None:
    open_article(page, preview_site)
    preview_site.edit(preview_site.article, "Hi {{ reader.first_name", "Hi {{ reader.first_name |")
    error = page.locator("#render-error")
    expect(error).to_be_visible(timeout=15_000)
    expect(error).to_contain_text(f"{ARTICLE}.md")
    expect(error.locator(".line")).to_have_text("21")
    expect(error.locator(".message")).to_contain_text("syntax error")
    expect(error.locator(".source")).to_contain_text("Hi {{ reader.first_name |")

    page.goto(preview_site.url)
    expect(page.locator(f'li[data-key="campaign/{ARTICLE}"] .badge')).to_have_text(
        "1 blocking problem"
    )
    expect(page.locator('li[data-key="system/welcome"] .badge')).to_have_text(SENDABLE)

    page.get_by_role("link", name=ARTICLE).click()
    preview_site.edit(preview_site.article, "Hi {{ reader.first_name |", "Hi {{ reader.first_name")
    expect(page.locator("h1")).to_contain_text("Vitamin K2 and your bones", timeout=15_000)
    expect(page.locator("#render-error")).to_have_count(0)


def test_a_broken_layout_template_shows_its_error_and_a_fix_brings_the_email_back(
    page: Page, preview_site: PreviewSite
) -> None:
    layout = Path(__file__).resolve().parents[2] / "templates" / "mjml" / "layouts" / "article.mjml"
    own = preview_site.content / "own-layout.mjml"
    own.write_text(layout.read_text(encoding="utf-8"), encoding="utf-8")
    preview_site.edit(
        preview_site.article, "offer: free-report", "offer: free-report\nlayout: own-layout.mjml"
    )
    open_article(page, preview_site)
    preview_site.edit(own, "<mj-body", "<mj-body><mj-section>")
    expect(page.locator("#render-error")).to_contain_text("MJML does not compile")
    expect(page.locator("#render-error .layout")).to_contain_text("own-layout.mjml")
    preview_site.edit(own, "<mj-body><mj-section>", "<mj-body")
    expect(page.locator("#render-error")).to_have_count(0, timeout=15_000)


def test_the_reader_picker_shows_each_readers_personalisation(
    page: Page, preview_site: PreviewSite
) -> None:
    with preview_site.database.session() as session:
        session.add(
            Subscriber(email="ada@example.org", name="Ada Lovelace", status=Status.CONFIRMED)
        )
    open_article(page, preview_site)
    page.get_by_label("Reader").select_option(label="A reader who gave no name")
    expect(page.locator("#text-part")).to_contain_text("Hi there,")
    expect(page.locator("#rendered-for")).to_contain_text("reader@example.org")

    page.get_by_label("Subscriber").fill("ADA@example.org")
    page.get_by_role("button", name="Show").last.click()
    expect(page.locator("#text-part")).to_contain_text("Hi Ada,")
    expect(page.locator("#rendered-for")).to_contain_text("ada@example.org")


def test_send_test_goes_to_the_capture_inbox_and_only_to_the_address_typed(
    page: Page, preview_site: PreviewSite
) -> None:
    open_article(page, preview_site)
    page.get_by_label("Send a test to").fill("designer@example.org")
    page.get_by_role("button", name="Send test").click()
    expect(page.locator("#send-result")).to_contain_text("Sent to designer@example.org")

    page.get_by_role("link", name="Open the capture inbox").click()
    page.get_by_role("link", name="Vitamin K2 and your bones").first.click()
    expect(page.locator("#text-part")).to_contain_text("Hi Sam,")
    expect(page.locator("#header-block")).to_contain_text("<designer@example.org>")

    page.set_viewport_size(PHONE)
    assert not overflows(page)
    page.goto(f"{preview_site.url}/inbox")
    expect(page.get_by_text("designer@example.org")).to_be_visible()
    assert not overflows(page)
    page.get_by_role("link", name="Email preview").click()
    expect(page.get_by_role("heading", name="Every email this newsletter can send")).to_be_visible()

    [message] = preview_site.captured()
    assert message.recipients == ["designer@example.org"]
    assert b"sam.sample@example.org" not in message.raw


def test_send_test_refuses_an_address_that_is_not_one(
    page: Page, preview_site: PreviewSite
) -> None:
    open_article(page, preview_site)
    page.get_by_label("Send a test to").evaluate("e => e.removeAttribute('type')")
    page.get_by_label("Send a test to").fill("not an address")
    page.get_by_role("button", name="Send test").click()
    expect(page.locator("#send-result")).to_contain_text("Not sent")
    assert preview_site.captured() == []
