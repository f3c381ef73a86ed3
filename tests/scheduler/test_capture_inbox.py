"""The capture inbox takes mail from any program over SMTP, keeps it in the database across
restarts, and shows each message as HTML (sandboxed), text, headers and raw source."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import httpx
import pytest
from fastapi import FastAPI

from newsletter.db import Database, open_database
from newsletter.settings import Settings
from scheduler import capture
from scheduler.capture import CaptureInbox
from scheduler.web import create_inbox_router
from tests.conftest import LiveServer, free_port, start_live_server, stop_live_server


@dataclass
class Inbox:
    smtp_port: int
    database: Database
    server: CaptureInbox
    web: LiveServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.web.url, timeout=30)

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10)


@pytest.fixture
def inbox(make_settings: Callable[..., Settings]) -> Iterator[Inbox]:
    database = open_database(make_settings())
    port = free_port()
    server = CaptureInbox(database, port=port)
    server.start()
    app = FastAPI()
    app.include_router(create_inbox_router(database, port))
    web = start_live_server(app)
    yield Inbox(port, database, server, web)
    stop_live_server(web)
    server.stop()
    database.dispose()


def html_email(subject: str = "Größe matters: a test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Some Other Program <robot@example.net>"
    message["To"] = "designer@example.org"
    message["Subject"] = subject
    message.set_content("Plain words from another program.\n")
    message.add_alternative(
        "<p>Rich <b>words</b></p><script>parent.document.title='owned'</script>", subtype="html"
    )
    return message


def test_a_message_sent_with_smtplib_from_outside_the_product_is_listed_and_shown(
    inbox: Inbox,
) -> None:
    with inbox.smtp() as smtp:
        smtp.send_message(html_email())
    [stored] = capture.list_messages(inbox.database)
    assert stored.subject == "Größe matters: a test"
    assert stored.mail_from == "robot@example.net"
    assert stored.recipients == ["designer@example.org"]

    with inbox.client() as client:
        listing = client.get("/inbox").text
        assert "Größe matters: a test" in listing
        assert "robot@example.net" in listing and "designer@example.org" in listing
        assert "1 message" in listing

        page = client.get(f"/inbox/{stored.id}").text
        assert "Plain words from another program." in page
        assert "Subject: =?utf-8?" in page  # headers as received, encoded words included
        assert '<iframe sandbox referrerpolicy="no-referrer"' in page
        assert "allow-same-origin" not in page

        html = client.get(f"/inbox/{stored.id}/html")
        assert html.headers["content-security-policy"].startswith("sandbox;")
        assert "<b>words</b>" in html.text

        raw = client.get(f"/inbox/{stored.id}/raw")
        assert raw.headers["content-type"].startswith("text/plain")
        assert raw.content == stored.raw


def test_any_program_gets_through_login_smtputf8_and_over_long_lines(inbox: Inbox) -> None:
    long_line = "x" * 3000
    raw = (
        "From: zoë@exämple.org\r\nTo: ånn@example.org\r\nSubject: über\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Grüße\r\n{long_line}\r\n"
    ).encode()
    with inbox.smtp() as smtp:
        smtp.login("any-user", "any-password")
        smtp.sendmail("zoë@exämple.org", ["ånn@example.org"], raw, mail_options=["SMTPUTF8"])
        smtp.sendmail("", ["bounce-target@example.org"], b"Subject: null sender\r\n\r\nhi\r\n")
    stored = capture.list_messages(inbox.database)
    assert [m.subject for m in stored] == ["null sender", "über"]
    assert stored[1].recipients == ["ånn@example.org"]
    assert long_line.encode() in stored[1].raw


def test_a_message_whose_headers_do_not_parse_is_still_captured(inbox: Inbox) -> None:
    raw = b"Subject: =?unknown-charset?Q?=FF=FE?=\r\nFrom: <<broken@@\r\n\r\nbody\r\n"
    with inbox.smtp() as smtp:
        smtp.sendmail("a@example.org", ["b@example.org"], raw)
    [stored] = capture.list_messages(inbox.database)
    with inbox.client() as client:
        assert client.get(f"/inbox/{stored.id}").status_code == 200
        assert client.get("/inbox").status_code == 200


def test_captured_messages_survive_a_restart(
    inbox: Inbox, make_settings: Callable[..., Settings]
) -> None:
    with inbox.smtp() as smtp:
        smtp.send_message(html_email("Kept across restarts"))
    inbox.server.stop()
    database = open_database(make_settings())
    try:
        restarted = CaptureInbox(database, port=free_port())
        restarted.start()
        restarted.stop()
        assert [m.subject for m in capture.list_messages(database)] == ["Kept across restarts"]
    finally:
        database.dispose()
    inbox.server.start()


def test_the_clear_button_empties_the_inbox_but_not_from_another_site(inbox: Inbox) -> None:
    with inbox.smtp() as smtp:
        smtp.send_message(html_email())
    with inbox.client() as client:
        refused = client.post("/inbox/clear", headers={"Sec-Fetch-Site": "cross-site"})
        assert refused.status_code == 403
        assert capture.count_messages(inbox.database) == 1
        cleared = client.post("/inbox/clear", headers={"Sec-Fetch-Site": "same-origin"})
        assert cleared.status_code == 303
    assert capture.count_messages(inbox.database) == 0
