"""Signed links: one purpose each, some expire, and opening one with GET never unsubscribes."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer

from newsletter.errors import TokenError
from subscribers.models import Status
from subscribers.tokens import MAX_AGE, Purpose, make_token, read_token, signed_url
from tests.subscribers.conftest import Site, links_in, unsubscribe_url


def test_a_token_for_one_purpose_is_refused_for_another() -> None:
    token = make_token("secret", Purpose.UNSUBSCRIBE, "reader-key")
    assert read_token("secret", Purpose.UNSUBSCRIBE, token) == "reader-key"
    with pytest.raises(TokenError):
        read_token("secret", Purpose.CONFIRM, token)


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = make_token("other-secret", Purpose.CONFIRM, "reader-key")
    with pytest.raises(TokenError, match="not valid"):
        read_token("secret", Purpose.CONFIRM, token)


def test_a_confirmation_link_expires_after_a_week() -> None:
    max_age = MAX_AGE[Purpose.CONFIRM]
    assert max_age == timedelta(days=7)
    serializer = URLSafeTimedSerializer("secret", salt="confirm")
    # Sign as if eight days ago: itsdangerous reads the signing time from the token.
    old = serializer.dumps("reader-key")
    real_time = time.time
    try:
        time.time = lambda: real_time() + 8 * 86400  # type: ignore[assignment]
        with pytest.raises(TokenError, match="expired"):
            read_token("secret", Purpose.CONFIRM, old)
    finally:
        time.time = real_time  # type: ignore[assignment]


def test_unsubscribe_links_never_expire() -> None:
    assert MAX_AGE[Purpose.UNSUBSCRIBE] is None


def _confirmed_reader(site: Site, email: str) -> tuple[str, str]:
    """Subscribe and confirm ``email``; returns its unsubscribe URL and the welcome's raw bytes."""
    with site.client() as client:
        client.post("/subscribe", json={"email": email})
        [mail] = site.smtp.wait_for(lambda mails: len(mails) == 1)
        client.post(links_in(mail, "/confirm/")[0])
    welcome = site.smtp.wait_for(lambda mails: len(mails) == 2)[1]
    return unsubscribe_url(welcome), welcome.message["To"]


def test_opening_the_unsubscribe_page_changes_nothing(sqlite_site: Site) -> None:
    url, _ = _confirmed_reader(sqlite_site, "scanner@example.org")
    with sqlite_site.client() as client:
        page = client.get(url)
        client.head(url)
    assert page.status_code == 200
    assert "<button" in page.text and 'method="post"' in page.text
    assert sqlite_site.subscriber("scanner@example.org").status == Status.CONFIRMED


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_at_once_without_cookie_or_redirect(
    sqlite_site: Site, encoding: str
) -> None:
    url, _ = _confirmed_reader(sqlite_site, f"{encoding}@example.org")
    with sqlite_site.client() as client:
        if encoding == "multipart":
            response = client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        else:
            response = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert sqlite_site.subscriber(f"{encoding}@example.org").status == Status.UNSUBSCRIBED
    reader = sqlite_site.subscriber(f"{encoding}@example.org")
    with sqlite_site.database.session() as session:
        from subscribers.models import Subscriber

        history = session.get(Subscriber, reader.id).history
        assert history[-1].source == "unsubscribe:one-click"


@pytest.mark.parametrize("path", ["/confirm/", "/unsubscribe/", "/preferences/", "/report/"])
def test_a_forged_link_gets_a_page_saying_so(sqlite_site: Site, path: str) -> None:
    with sqlite_site.client() as client:
        response = client.get(path + "forged.token.value")
    assert response.status_code == 400
    assert "This link does not work" in response.text


def test_an_unsubscribe_link_cannot_confirm_anyone(sqlite_site: Site) -> None:
    with sqlite_site.client() as client:
        client.post("/subscribe", json={"email": "pending@example.org"})
        [mail] = sqlite_site.smtp.wait_for(lambda mails: len(mails) == 1)
        unsubscribe_token = unsubscribe_url(mail).rsplit("/", 1)[1]
        response = client.post(f"/confirm/{unsubscribe_token}")
    assert response.status_code == 400
    assert sqlite_site.subscriber("pending@example.org").status == Status.PENDING


def test_links_in_emails_point_at_the_base_url(sqlite_site: Site) -> None:
    url = signed_url("https://news.example", "s", Purpose.PREFERENCES, "k")
    assert url.startswith("https://news.example/preferences/")
