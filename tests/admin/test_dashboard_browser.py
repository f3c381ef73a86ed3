"""A marketer in headless chromium: signs in, schedules the Vitamin K2 campaign for a time in a
zone they pick, pauses and resumes it, watches it go out to a real SMTP server, and finds a
reader's history; every page fits a 375 px screen and works from the keyboard. The tests save
the README's screenshots (to docs/screenshots/ with `pytest --screenshots`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select

from scheduler.campaigns import CampaignRun
from scheduler.deliveries import Delivery
from tests.admin.conftest import MARKETER, PASSWORD, READERS, AdminSite, add_confirmed_readers
from tests.conftest import expect_frame_shows

CAMPAIGN = "vitamin-k2-bone-health"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def sign_in(page: Page, site: AdminSite, path: str = "/admin/") -> None:
    page.goto(site.url + path)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email address").fill(MARKETER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def overflows(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth"))


def deliveries_of(site: AdminSite) -> int:
    with site.database.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.message == f"campaign:{CAMPAIGN}")
            )
            or 0
        )


def test_a_marketer_signs_in_and_sees_the_overview(
    page: Page, admin_site: AdminSite, screenshots: Path
) -> None:
    # A month of signups from two forms, for a chart worth looking at.
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for day in range(0, 28, 3):
        add_confirmed_readers(
            admin_site.database,
            [f"day{day}.{n}@example.net" for n in range(1 + day % 4)],
            form="vitamin-k2-article" if day % 2 else "homepage",
            at=today - timedelta(days=day + 1),
        )
    page.set_viewport_size(DESKTOP)
    sign_in(page, admin_site)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("link", name="30 confirmed")).to_be_visible()
    # The page says its own today: the next day's date if midnight (UTC) passed meanwhile.
    days = (today.date().isoformat(), (today + timedelta(days=1)).date().isoformat())
    expect(page.get_by_text(re.compile(rf"30 on ({days[0]}|{days[1]})"))).to_be_visible()
    expect(page.get_by_text("vitamin-k2-article: 16")).to_be_visible()
    expect(page.get_by_role("img", name="Readers over the last 30 days")).to_be_visible()
    expect(page.get_by_role("link", name=READERS[0])).to_be_visible()
    page.screenshot(path=str(screenshots / "admin-overview.png"), full_page=True)


def test_scheduling_in_a_chosen_zone_pausing_resuming_and_watching_it_send_to_the_end(
    page: Page, admin_site: AdminSite, screenshots: Path
) -> None:
    page.set_viewport_size(DESKTOP)
    sign_in(page, admin_site, "/admin/campaigns")
    page.get_by_role("link", name=CAMPAIGN).click()
    expect(page.get_by_role("heading", name=f"Campaign {CAMPAIGN}")).to_be_visible()

    # The preview: the renderer's HTML in a sandboxed frame that may not act as the dashboard.
    frame = page.locator("iframe.email")
    assert frame.get_attribute("sandbox") == ""
    expect_frame_shows(page, "The Importance of Vitamin K2 for Bone Health")

    zone = "America/New_York"
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")  # NEWSLETTER_TIMEZONE
    local = (datetime.now(ZoneInfo(zone)) + timedelta(minutes=2)).replace(second=0, microsecond=0)
    page.get_by_label("Date").fill(local.strftime("%Y-%m-%d"))
    page.get_by_label("Time", exact=True).fill(local.strftime("%H:%M"))
    page.get_by_label("Time zone").select_option(zone)
    page.get_by_role("button", name="Schedule the campaign").click()
    expect(page.get_by_role("status")).to_have_text("The campaign is scheduled.")
    expect(page.locator("[data-field=state]")).to_have_text("scheduled")
    with admin_site.database.session() as session:
        run = session.scalars(select(CampaignRun)).one()
        assert run.zone == zone
        assert run.send_at == local.astimezone(UTC)

    # Paused before its time: the clock passes its time and nothing is sent.
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("[data-field=state]")).to_have_text("paused")
    admin_site.now.jump_to(run.send_at)
    admin_site.clock.tick()
    assert deliveries_of(admin_site) == 0
    assert admin_site.smtp.messages == []

    # Resumed: the clock starts it and the page follows it to the end without a reload.
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("[data-field=state]")).to_have_text("done", timeout=30_000)
    expect(page.locator("[data-count=sent]")).to_have_text(str(len(READERS)))
    expect(page.locator("[data-count=queued]")).to_have_text("0")
    page.screenshot(path=str(screenshots / "admin-campaign-progress.png"), full_page=False)

    mails = admin_site.smtp.wait_for(lambda mails: len(mails) == len(READERS))
    assert sorted(mail.rcpt_tos[0] for mail in mails) == sorted(READERS)
    assert all("Vitamin K2" in str(mail.message["Subject"]) for mail in mails)

    # The reader's history shows what was sent and when.
    page.get_by_role("link", name="Subscribers").click()
    page.get_by_label("Search by address or name").fill("reader0")
    page.get_by_label("Search by address or name").press("Enter")
    page.get_by_role("link", name=READERS[0]).click()
    expect(page.get_by_role("heading", name=READERS[0])).to_be_visible()
    messages = page.get_by_role("region", name="Messages")
    expect(messages.get_by_text(f"campaign:{CAMPAIGN}")).to_be_visible()
    expect(messages.get_by_role("cell", name="sent", exact=True)).to_be_visible()
    expect(page.get_by_role("region", name="Consent").get_by_text("signup")).to_be_visible()
    expect(page.get_by_role("region", name="Status history")).to_contain_text("confirmed")
    why = page.get_by_role("region", name="What this reader gets, and why")
    expect(why).to_contain_text(f"campaign:{CAMPAIGN}: sent")
    why.get_by_text(f"campaign:{CAMPAIGN}: sent").click()
    expect(why).to_contain_text("Message-ID <")
    page.screenshot(path=str(screenshots / "admin-reader-history.png"), full_page=True)

    # Unsubscribing asks first, then takes effect.
    page.get_by_role("link", name="Unsubscribe…").click()
    expect(page.get_by_role("heading", name=f"Unsubscribe {READERS[0]}?")).to_be_visible()
    assert admin_site.reader(READERS[0]).status == "confirmed"  # type: ignore[union-attr]
    page.get_by_role("button", name="Unsubscribe the reader").click()
    expect(page.get_by_role("status")).to_contain_text("unsubscribed")
    assert admin_site.reader(READERS[0]).status == "unsubscribed"  # type: ignore[union-attr]


def test_every_page_fits_a_375_pixel_screen(page: Page, admin_site: AdminSite) -> None:
    page.set_viewport_size(PHONE)
    page.goto(admin_site.url + "/admin/sign-in")
    assert not overflows(page), "sign-in"
    sign_in(page, admin_site)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    reader = admin_site.reader(READERS[2])
    assert reader is not None
    paths = [
        "/admin/",
        "/admin/campaigns",
        f"/admin/campaigns/{CAMPAIGN}",
        "/admin/sequences",
        "/admin/subscribers",
        "/admin/subscribers?q=example",
        f"/admin/subscribers/{reader.id}",
        f"/admin/subscribers/{reader.id}/erase",
        "/admin/subscribers/import",
        "/admin/account",
    ]
    for path in paths:
        page.goto(admin_site.url + path)
        expect(page.locator("main h1")).to_be_visible()
        assert not overflows(page), path


def test_the_dashboard_works_from_the_keyboard_alone(page: Page, admin_site: AdminSite) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page, admin_site)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused link shows where focus is"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # From the navigation to the search, the form and a result, with keys only.
    page.goto(admin_site.url + "/admin/subscribers")
    page.get_by_label("Search by address or name").focus()
    page.keyboard.type("reader3")
    page.keyboard.press("Enter")
    result = page.get_by_role("link", name=READERS[3])
    result.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=READERS[3])).to_be_visible()


def test_without_javascript_a_campaign_is_scheduled_and_its_counts_read_on_reload(
    browser: Browser, admin_site: AdminSite
) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, admin_site, f"/admin/campaigns/{CAMPAIGN}")
        expect(page.get_by_role("heading", name=f"Campaign {CAMPAIGN}")).to_be_visible()
        page.get_by_label("Date").fill("2030-06-01")
        page.get_by_label("Time", exact=True).fill("08:15")
        page.get_by_role("button", name="Schedule the campaign").click()
        expect(page.locator("[data-field=state]")).to_have_text("scheduled")
        expect(page.get_by_text("Send time: 2030-06-01 08:15 Europe/Berlin")).to_be_visible()
        expect(page.get_by_text("without JavaScript, reload the page")).to_be_visible()
        page.get_by_role("link", name="Cancel…").click()
        page.get_by_role("button", name="Cancel the campaign").click()
        expect(page.locator("[data-field=state]")).to_have_text("cancelled")
    finally:
        context.close()
