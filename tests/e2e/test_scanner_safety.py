"""Corporate link scanners open every link in an email within seconds, without running scripts:
they must confirm nobody and unsubscribe nobody, while a person still confirms in one click."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from newsletter.settings import Settings
from subscribers.models import Consent, Status
from tests.conftest import ReceivedMail, SmtpServer
from tests.subscribers.conftest import LINK, Site, links_in, start_site, stop_site


@pytest.fixture
def scanner_site(make_settings: Callable[..., Settings], smtp_server: SmtpServer) -> Iterator[Site]:
    site = start_site(make_settings, smtp_server)
    yield site
    stop_site(site)


def scan(mail: ReceivedMail, site: Site) -> int:
    """Open every link of every part and header, as a scanner does (GET and HEAD, no script).

    Only the product's own links: this machine reaches no other host."""
    text = "".join(
        str(part.get_content()) for part in mail.message.walk() if not part.is_multipart()
    )
    found = set(LINK.findall(text)) | set(LINK.findall(str(mail.message["List-Unsubscribe"])))
    links = {link.rstrip(">").rstrip(")") for link in found if link.startswith(site.url)}
    with httpx.Client(headers={"User-Agent": "SafeLinks-Scanner/1.0"}, timeout=10) as scanner:
        for link in links:
            scanner.head(link)
            scanner.get(link, follow_redirects=True)
    return len(links)


def test_a_scanner_opening_every_link_confirms_nobody(scanner_site: Site) -> None:
    with scanner_site.client() as client:
        client.post("/subscribe", json={"email": "scanned@example.org"})
    [mail] = scanner_site.smtp.wait_for(lambda mails: len(mails) == 1)
    assert scan(mail, scanner_site) >= 3
    assert scanner_site.subscriber("scanned@example.org").status == Status.PENDING


def test_a_scanner_opening_every_link_unsubscribes_nobody(scanner_site: Site) -> None:
    with scanner_site.client() as client:
        client.post("/subscribe", json={"email": "kept@example.org"})
        [confirmation] = scanner_site.smtp.wait_for(lambda mails: len(mails) == 1)
        client.post(links_in(confirmation, "/confirm/")[0])
    welcome = scanner_site.smtp.wait_for(lambda mails: len(mails) == 2)[1]
    assert scan(welcome, scanner_site) >= 3
    assert scanner_site.subscriber("kept@example.org").status == Status.CONFIRMED


def test_a_person_confirms_in_one_click_and_the_evidence_is_kept(
    page: Page, scanner_site: Site
) -> None:
    with scanner_site.client() as client:
        client.post("/subscribe", json={"email": "person@example.org"})
    [mail] = scanner_site.smtp.wait_for(lambda mails: len(mails) == 1)
    [confirm_link] = links_in(mail, "/confirm/")
    page.goto(confirm_link)
    expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
    reader = scanner_site.subscriber("person@example.org")
    assert reader.status == Status.CONFIRMED
    with scanner_site.database.session() as session:
        from sqlalchemy import select

        evidence = session.scalars(
            select(Consent).where(
                Consent.subscriber_id == reader.id, Consent.kind == "confirmation"
            )
        ).one()
        assert "Chrome" in (evidence.user_agent or "")
        assert evidence.seconds_after_email is not None and evidence.seconds_after_email >= 0


def test_a_person_without_javascript_confirms_with_the_button(
    browser: object, scanner_site: Site
) -> None:
    with scanner_site.client() as client:
        client.post("/subscribe", json={"email": "nojs-confirm@example.org"})
    [mail] = scanner_site.smtp.wait_for(lambda mails: len(mails) == 1)
    [link] = links_in(mail, "/confirm/")
    context = browser.new_context(java_script_enabled=False)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(link)
    assert scanner_site.subscriber("nojs-confirm@example.org").status == Status.PENDING
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
    context.close()
    assert scanner_site.subscriber("nojs-confirm@example.org").status == Status.CONFIRMED
