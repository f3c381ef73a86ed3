"""The article email in a real browser (Debian's chromium): no horizontal overflow at 320 px or
600 px, light or dark; its screenshots land in docs/screenshots/ (the README's) with
`pytest --screenshots`."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Page

from campaigns import load_campaign, sample_links, sample_reader
from newsletter.settings import Settings


def article_html(settings: Settings) -> str:
    from templates import render

    content = load_campaign("vitamin-k2-bone-health").content
    raw = render(
        content,
        sample_reader(content),
        sample_links(settings),
        message_id="<shot@example.org>",
        settings=settings,
    )
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


@pytest.mark.parametrize(("width", "scheme"), [(320, "light"), (600, "light"), (600, "dark")])
def test_the_article_email_fits_the_screen_without_horizontal_scrolling(
    page: Page, settings: Settings, width: int, scheme: str, screenshots: Path
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    page.set_content(article_html(settings), wait_until="load")
    assert not page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert page.get_by_text("The Importance of Vitamin K2 for Bone Health").is_visible()
    assert page.get_by_role("link", name="Get the free report").is_visible()
    suffix = "" if scheme == "light" else "-dark"
    page.screenshot(path=str(screenshots / f"article-{width}{suffix}.png"), full_page=True)


def test_dark_mode_turns_the_card_dark_and_keeps_the_text_light(
    page: Page, settings: Settings
) -> None:
    page.set_viewport_size({"width": 600, "height": 900})
    page.emulate_media(color_scheme="dark")
    page.set_content(article_html(settings), wait_until="load")
    heading = page.get_by_text("The Importance of Vitamin K2 for Bone Health")
    colour = heading.evaluate("e => getComputedStyle(e.closest('div')).color")
    assert colour == "rgb(230, 236, 233)"


def test_every_image_has_alt_text_and_the_language_is_set(page: Page, settings: Settings) -> None:
    page.set_content(article_html(settings))
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.evaluate("[...document.images].every(i => i.hasAttribute('alt'))")
