"""A reader's whole journey over HTTP and a real SMTP server: form, confirmation email, confirm
link, report email, one-click unsubscribe, and silence after it."""

from __future__ import annotations

import time

from subscribers.models import Status
from tests.subscribers.conftest import Site, links_in, unsubscribe_url


def test_a_reader_subscribes_confirms_gets_the_report_and_unsubscribes_in_one_click(
    site: Site,
) -> None:
    with site.client() as client:
        response = client.post("/subscribe", data={"email": "Reader@Example.org", "name": "Ada"})
        assert response.status_code == 303
        assert response.headers["location"] == "/subscribe/thanks"

        [confirmation] = site.smtp.wait_for(lambda mails: len(mails) == 1)
        assert confirmation.rcpt_tos == ["reader@example.org"]
        assert site.subscriber("reader@example.org").status == Status.PENDING
        [confirm_link] = links_in(confirmation, "/confirm/")

        # The link opens a page; the person's browser confirms with a POST.
        assert "Confirm my subscription" in client.get(confirm_link).text
        assert site.subscriber("reader@example.org").status == Status.PENDING
        confirmed = client.post(confirm_link)
        assert confirmed.status_code == 200
        assert "You are subscribed" in confirmed.text
        reader = site.subscriber("reader@example.org")
        assert reader.status == Status.CONFIRMED
        assert reader.confirmed_at is not None

        mails = site.smtp.wait_for(lambda mails: len(mails) == 2)
        welcome = mails[1]
        [report_link] = links_in(welcome, "/report/")
        report = client.get(report_link)
        assert report.status_code == 200
        assert "7 Core Strategies" in report.text

        one_click_url = unsubscribe_url(welcome)
        assert welcome.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        one_click = client.post(one_click_url, data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
        assert site.subscriber("reader@example.org").status == Status.UNSUBSCRIBED

        # Following the old links again sends nothing and subscribes nobody.
        assert client.post(confirm_link).status_code == 400
        client.post(one_click_url, data={"List-Unsubscribe": "One-Click"})
        time.sleep(0.5)
        assert len(site.smtp.messages) == 2
        assert site.subscriber("reader@example.org").status == Status.UNSUBSCRIBED


def test_the_signup_records_consent_with_form_address_user_agent_and_text(site: Site) -> None:
    with site.client(headers={"User-Agent": "ConsentTest/1.0"}) as client:
        client.post("/subscribe", json={"email": "consent@example.org", "form": "sidebar"})
    with site.database.session() as session:
        from sqlalchemy import select

        from subscribers.models import Consent, StatusChange, Subscriber

        reader = session.scalars(select(Subscriber)).one()
        [consent] = session.scalars(select(Consent)).all()
        [change] = session.scalars(select(StatusChange)).all()
        assert consent.subscriber_id == reader.id
        assert consent.form == "sidebar"
        assert consent.ip == "127.0.0.1"
        assert consent.user_agent == "ConsentTest/1.0"
        assert "free report" in (consent.consent_text or "")
        assert consent.at.tzinfo is not None
        assert (change.old_status, change.new_status) == (None, "pending")
        assert change.source == "signup:sidebar"


def test_confirming_records_the_confirmation_as_consent_evidence(site: Site) -> None:
    with site.client(headers={"User-Agent": "Person/1.0"}) as client:
        client.post("/subscribe", json={"email": "evidence@example.org"})
        [mail] = site.smtp.wait_for(lambda mails: len(mails) == 1)
        client.post(links_in(mail, "/confirm/")[0])
    reader = site.subscriber("evidence@example.org")
    with site.database.session() as session:
        from subscribers.models import Subscriber

        stored = session.get(Subscriber, reader.id)
        kinds = [(c.kind, c.user_agent) for c in stored.consents]
        history = [(h.old_status, h.new_status, h.source) for h in stored.history]
    assert kinds == [("signup", "Person/1.0"), ("confirmation", "Person/1.0")]
    assert history == [(None, "pending", "signup:default"), ("pending", "confirmed", "confirm")]


def test_json_signup_is_accepted_with_202(site: Site) -> None:
    with site.client() as client:
        response = client.post("/subscribe", json={"email": "json@example.org", "name": "Jo"})
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    site.smtp.wait_for(lambda mails: len(mails) == 1)
