"""Subscription bombing, bots and repeat signups: limits hold, and nothing is revealed."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from newsletter.db import Database, open_database, utcnow
from newsletter.settings import Settings
from subscribers.addresses import address_hash
from subscribers.models import Status, Suppression
from subscribers.signup import SignupRequest, signup
from tests.conftest import SmtpServer
from tests.subscribers.conftest import Site, start_site, stop_site


def test_one_address_gets_one_confirmation_however_often_it_signs_up(sqlite_site: Site) -> None:
    with sqlite_site.client() as client:
        answers = {
            client.post("/subscribe", json={"email": "bomb@example.org"}).status_code
            for _ in range(15)
        }
    assert answers == {202}
    sqlite_site.smtp.wait_for(lambda mails: len(mails) >= 1)
    time.sleep(0.5)  # a second confirmation, were one sent, would have arrived by now
    assert len(sqlite_site.smtp.to("bomb@example.org")) == 1
    assert sqlite_site.snapshot()["subscribers"] == 1


def test_a_second_confirmation_is_sent_only_after_ten_minutes(
    make_settings: Callable[..., Settings],
) -> None:
    database = open_database(make_settings())
    start = utcnow()
    request = SignupRequest(email="later@example.org")
    outcomes = []
    for offset in (0, 5, 9, 10, 15, 21):
        with database.session() as session:
            outcomes.append(
                signup(session, request, now=start + timedelta(minutes=offset)).send_confirmation
            )
    assert outcomes == [True, False, False, True, False, True]


def test_signing_up_again_answers_the_same_whatever_the_address_state(sqlite_site: Site) -> None:
    with sqlite_site.client() as client:
        first = client.post("/subscribe", json={"email": "known@example.org"})
        again = client.post("/subscribe", json={"email": "known@example.org"})
        unknown = client.post("/subscribe", json={"email": "unknown@example.org"})
    assert first.status_code == again.status_code == unknown.status_code == 202
    assert first.json() == again.json() == unknown.json()


def test_a_filled_honeypot_looks_accepted_but_keeps_nothing(sqlite_site: Site) -> None:
    with sqlite_site.client() as client:
        response = client.post(
            "/subscribe", data={"email": "bot@example.org", "website": "http://spam.example"}
        )
    assert response.status_code == 303
    time.sleep(0.3)
    assert sqlite_site.subscriber("bot@example.org") is None
    assert sqlite_site.smtp.messages == []


def test_a_client_over_the_signup_limit_gets_429(
    make_settings: Callable[..., Settings], smtp_server: SmtpServer
) -> None:
    site = start_site(make_settings, smtp_server, signup_limit="3/minute")
    try:
        with site.client() as client:
            codes = [
                client.post("/subscribe", json={"email": f"r{n}@example.org"}).status_code
                for n in range(5)
            ]
            form = client.post("/subscribe", data={"email": "r9@example.org"})
    finally:
        stop_site(site)
    assert codes == [202, 202, 202, 429, 429]
    assert form.status_code == 429
    assert "Too many signups" in form.text


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(
    make_settings: Callable[..., Settings], smtp_server: SmtpServer
) -> None:
    site = start_site(
        make_settings, smtp_server, signup_limit="1/minute", trusted_proxies=["127.0.0.1"]
    )
    try:
        with site.client() as client:
            codes = [
                client.post(
                    "/subscribe",
                    json={"email": f"p{n}@example.org"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                ).status_code
                for n in range(3)
            ]
            repeat = client.post(
                "/subscribe",
                json={"email": "p9@example.org"},
                headers={"X-Forwarded-For": "203.0.113.1"},
            ).status_code
    finally:
        stop_site(site)
    assert codes == [202, 202, 202]
    assert repeat == 429


def test_an_erased_address_is_never_added_back(sqlite_site: Site) -> None:
    with sqlite_site.database.session() as session:
        session.add(Suppression(address_hash=address_hash("gone@example.org"), reason="erased"))
    with sqlite_site.client() as client:
        response = client.post("/subscribe", json={"email": "Gone@Example.org"})
    assert response.status_code == 202
    time.sleep(0.3)
    assert sqlite_site.subscriber("gone@example.org") is None
    assert sqlite_site.smtp.messages == []


def test_an_unsubscribed_reader_can_subscribe_again_through_confirmation(
    make_settings: Callable[..., Settings],
) -> None:
    database: Database = open_database(make_settings())
    request = SignupRequest(email="back@example.org")
    with database.session() as session:
        signup(session, request)
        from sqlalchemy import select

        from subscribers.models import Subscriber

        reader = session.scalars(select(Subscriber)).one()
        reader.status = Status.UNSUBSCRIBED.value
    with database.session() as session:
        outcome = signup(session, request, now=utcnow() + timedelta(hours=1))
        reader = session.scalars(select(Subscriber)).one()
        assert outcome.send_confirmation
        assert reader.status == Status.PENDING
        assert [c.kind for c in reader.consents] == ["signup", "signup"]
