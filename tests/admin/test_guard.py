"""The dashboard's locks: nothing answers without a session, no change without the CSRF token,
a lockout after failed sign-ins that says nothing about which accounts exist, sessions that end
with a password change or a sign-out, and cookies a script cannot read."""

from __future__ import annotations

import pytest

from newsletter.admin.accounts import LOCKOUT_FAILURES, set_password
from newsletter.admin.sessions import COOKIE_NAME
from tests.admin.conftest import MARKETER, PASSWORD, READERS, AdminSite, csrf_token, sign_in

PAGES = [
    "/admin",
    "/admin/",
    "/admin/campaigns",
    "/admin/campaigns/vitamin-k2-bone-health",
    "/admin/campaigns/vitamin-k2-bone-health/frame",
    "/admin/campaigns/vitamin-k2-bone-health/cancel",
    "/admin/sequences",
    "/admin/subscribers",
    "/admin/subscribers?q=reader",
    "/admin/subscribers/1",
    "/admin/subscribers/1/erase",
    "/admin/subscribers/1/unsubscribe",
    "/admin/subscribers/import",
    "/admin/account",
]
ACTIONS = [
    "/admin/campaigns/vitamin-k2-bone-health/schedule",
    "/admin/campaigns/vitamin-k2-bone-health/pause",
    "/admin/campaigns/vitamin-k2-bone-health/resume",
    "/admin/campaigns/vitamin-k2-bone-health/cancel",
    "/admin/subscribers/1/unsubscribe",
    "/admin/subscribers/1/erase",
    "/admin/subscribers/import",
    "/admin/account",
    "/admin/sign-out",
]


def test_no_page_answers_without_a_session_but_sends_the_browser_to_sign_in(
    admin_site: AdminSite,
) -> None:
    with admin_site.client() as client:
        for path in PAGES:
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/admin/sign-in?next="), path
            assert "reader0" not in answer.text
        assert client.get("/admin/campaigns/vitamin-k2-bone-health/status.json").status_code == 401
        for path in ACTIONS:
            assert client.post(path, data={"csrf_token": "x"}).status_code in (303, 401), path


def test_a_forged_or_edited_session_cookie_is_no_session(admin_site: AdminSite) -> None:
    with admin_site.signed_in() as client:
        real = client.cookies[COOKIE_NAME]
    with admin_site.client() as client:
        signed, signature = real.rsplit(".", 1)
        # Edit the signature's first character: the last ones may hold only padding bits.
        edited = ("A" if signature[0] != "A" else "B") + signature[1:]
        client.cookies.set(COOKIE_NAME, f"{signed}.{edited}")
        assert client.get("/admin/").status_code == 303


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    admin_site: AdminSite,
) -> None:
    reader = admin_site.reader(READERS[0])
    assert reader is not None
    with admin_site.signed_in() as client:
        for data in ({}, {"csrf_token": "not-the-token"}):
            unsubscribe = client.post(f"/admin/subscribers/{reader.id}/unsubscribe", data=data)
            assert unsubscribe.status_code == 403
            erase = client.post(f"/admin/subscribers/{reader.id}/erase", data=data)
            assert erase.status_code == 403
            schedule = client.post(
                "/admin/campaigns/vitamin-k2-bone-health/schedule",
                data={**data, "date": "2030-01-01", "time": "09:00", "zone": "UTC"},
            )
            assert schedule.status_code == 403
            sign_out = client.post("/admin/sign-out", data=data)
            assert sign_out.status_code == 403
        assert client.get("/admin/campaigns/vitamin-k2-bone-health/status.json").status_code == 404
        assert client.get("/admin/").status_code == 200, "the session is still there"
    still = admin_site.reader(READERS[0])
    assert still is not None and still.status == "confirmed"


def test_the_right_csrf_token_lets_the_change_through(admin_site: AdminSite) -> None:
    reader = admin_site.reader(READERS[1])
    assert reader is not None
    with admin_site.signed_in() as client:
        token = csrf_token(client)
        answer = client.post(
            f"/admin/subscribers/{reader.id}/unsubscribe", data={"csrf_token": token}
        )
        assert answer.status_code == 303
        history = client.get(f"/admin/subscribers/{reader.id}").text
    assert admin_site.reader(READERS[1]).status == "unsubscribed"  # type: ignore[union-attr]
    assert "unsubscribed" in history and "admin:" in history


def test_the_sign_in_form_itself_needs_its_token(admin_site: AdminSite) -> None:
    with admin_site.client() as client:
        answer = client.post("/admin/sign-in", data={"email": MARKETER, "password": PASSWORD})
        assert answer.status_code == 403
        assert COOKIE_NAME not in client.cookies


@pytest.mark.parametrize("address", [MARKETER, "nobody-has-this@example.org"])
def test_repeated_failures_lock_the_address_out_with_the_same_words_for_any_address(
    admin_site: AdminSite, address: str
) -> None:
    with admin_site.client() as client:
        for _ in range(LOCKOUT_FAILURES):
            wrong = sign_in(client, address, "not the password at all")
            assert wrong.status_code == 401
            assert "The address or the password is wrong." in wrong.text
        locked = sign_in(client, address, PASSWORD)
        assert locked.status_code == 429
        assert "Too many failed sign-ins for this address" in locked.text
        assert COOKIE_NAME not in client.cookies
    # Another address is not locked by these failures.
    with admin_site.client() as client:
        other = "second@example.org"
        with admin_site.database.session() as session:
            from newsletter.admin.accounts import create_account

            create_account(session, other, PASSWORD)
        assert sign_in(client, other, PASSWORD).status_code == 303


def test_changing_the_password_ends_the_other_sessions_but_keeps_this_one(
    admin_site: AdminSite,
) -> None:
    new_password = "a brand new passphrase"
    with admin_site.signed_in() as other, admin_site.signed_in() as this:
        assert other.get("/admin/").status_code == 200
        changed = this.post(
            "/admin/account",
            data={
                "csrf_token": csrf_token(this),
                "current_password": PASSWORD,
                "new_password": new_password,
                "repeat_password": new_password,
            },
        )
        assert changed.status_code == 303
        assert this.get("/admin/").status_code == 200
        assert other.get("/admin/").status_code == 303
        assert other.get("/admin/campaigns/x/status.json").status_code == 401
    with admin_site.client() as client:
        assert sign_in(client, MARKETER, PASSWORD).status_code == 401
        assert sign_in(client, MARKETER, new_password).status_code == 303


def test_set_password_from_the_command_line_signs_the_account_out(admin_site: AdminSite) -> None:
    with admin_site.signed_in() as client:
        with admin_site.database.session() as session:
            set_password(session, MARKETER, "changed by the operator")
        assert client.get("/admin/").status_code == 303


def test_a_wrong_current_password_changes_nothing(admin_site: AdminSite) -> None:
    with admin_site.signed_in() as client:
        answer = client.post(
            "/admin/account",
            data={
                "csrf_token": csrf_token(client),
                "current_password": "not my password",
                "new_password": "whatever new one",
                "repeat_password": "whatever new one",
            },
        )
        assert answer.status_code == 422
        assert "This is not your password." in answer.text
    with admin_site.client() as client:
        assert sign_in(client, MARKETER, PASSWORD).status_code == 303


def test_sign_out_ends_the_session_in_the_browser(admin_site: AdminSite) -> None:
    with admin_site.signed_in() as client:
        answer = client.post("/admin/sign-out", data={"csrf_token": csrf_token(client)})
        assert answer.status_code == 303
        assert COOKIE_NAME not in client.cookies
        assert client.get("/admin/").status_code == 303


def test_the_session_cookie_is_http_only_and_same_site_lax(admin_site: AdminSite) -> None:
    with admin_site.client() as client:
        answer = sign_in(client, MARKETER, PASSWORD)
    header = next(
        value
        for value in answer.headers.get_list("set-cookie")
        if value.startswith(COOKIE_NAME + "=")
    )
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/admin" in lowered
    assert "secure" not in lowered, "http://127.0.0.1 cannot carry a Secure cookie"


def test_sign_in_goes_back_to_a_dashboard_page_never_to_another_site(
    admin_site: AdminSite,
) -> None:
    with admin_site.client() as client:
        form = client.get("/admin/sign-in", params={"next": "https://evil.example/"})
        assert 'value="/admin/"' in form.text
        form = client.get("/admin/sign-in", params={"next": "/admin/sequences"})
        assert 'value="/admin/sequences"' in form.text


def test_a_search_term_is_data_not_sql(admin_site: AdminSite) -> None:
    with admin_site.signed_in() as client:
        found = client.get("/admin/subscribers", params={"q": "reader1"})
        assert "reader1@example.com" in found.text and "reader2@example.com" not in found.text
        injected = client.get("/admin/subscribers", params={"q": "' OR 1=1 --"})
        assert injected.status_code == 200
        assert "reader1@example.com" not in injected.text
        wildcard = client.get("/admin/subscribers", params={"q": "%"})
        assert "reader1@example.com" not in wildcard.text
