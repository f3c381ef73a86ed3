"""The DATA payload: what the sender puts on the wire after the server's 354."""

from __future__ import annotations

import pytest

from campaigns import load_campaign, system_email
from newsletter.settings import Settings
from scheduler.deliveries import ClaimedDelivery, Recipient
from scheduler.rendering import plain_render
from scheduler.smtp import SmtpReady, prepare_data
from templates import Content, Links, Reader, render
from templates.message import CrlfMessage


def claimed(email: str, message: str = "campaign:test") -> ClaimedDelivery:
    recipient = Recipient(1, email, "key", None, "confirmed", {}, None, ())
    return ClaimedDelivery(1, message, 1, 0, 0, "<d1.abc@example.org>", recipient)


def test_prepare_data_ends_lines_with_crlf_doubles_leading_dots_and_adds_the_final_dot() -> None:
    assert prepare_data(b".first\nsecond\r\n.third\rlast") == (
        b"..first\r\nsecond\r\n..third\r\nlast\r\n.\r\n"
    )


def test_bytes_the_renderer_vouches_for_only_get_the_final_dot() -> None:
    assert prepare_data(SmtpReady(b"Subject: x\r\n\r\nbody\r\n")) == (
        b"Subject: x\r\n\r\nbody\r\n.\r\n"
    )


def test_the_placeholder_renderer_vouches_only_for_clean_lines() -> None:
    delivery = claimed("reader@example.org")
    assert delivery.recipient is not None
    clean = plain_render(delivery, delivery.recipient, sender="a@example.org", size=3000)
    assert isinstance(clean, SmtpReady) and len(clean) >= 3000
    assert prepare_data(clean) == prepare_data(bytes(clean))  # the scan would change nothing

    broken = claimed("reader@example.org", message="campaign:x\n.y")
    assert broken.recipient is not None
    raw = plain_render(broken, broken.recipient, sender="a@example.org", size=100)
    assert not isinstance(raw, SmtpReady)
    assert b"\r\n..y" in prepare_data(raw)


def test_a_message_vouched_crlf_only_gets_its_leading_dots_doubled() -> None:
    assert prepare_data(CrlfMessage(b"Subject: x\r\n\r\n.one\r\ntwo.\r\n..three\r\n")) == (
        b"Subject: x\r\n\r\n..one\r\ntwo.\r\n...three\r\n.\r\n"
    )


SETTINGS = Settings(sender="Gut Health Letter <news@example.org>", base_url="https://n.example.org")
LINKS = Links("https://n.example.org/unsubscribe/t", "https://n.example.org/preferences/t")


def rendered(body: str) -> bytes:
    content = Content(subject="S", body=body, source="test.md")
    return render(
        content, Reader("r@example.org", "R"), LINKS, message_id="<m@x>", settings=SETTINGS
    )


def test_a_rendered_line_starting_with_a_dot_is_doubled_on_the_wire() -> None:
    raw = rendered("First paragraph.\n\n.5 mg a day is the dose.\n")
    # The renderer vouches for its line endings, not for dots: the sender doubles them.
    assert isinstance(raw, CrlfMessage) and not isinstance(raw, SmtpReady)
    assert b"\r\n.5 mg" in raw
    data = prepare_data(raw)
    assert b"\r\n..5 mg" in data and b"\r\n.5 mg" not in data
    assert data == prepare_data(bytes(raw))  # what the full scan of plain bytes gives


def test_a_copy_without_lines_starting_with_a_dot_goes_out_unscanned() -> None:
    raw = rendered("Hello {{ reader.name }}.\n")
    assert isinstance(raw, SmtpReady)  # MRML's style line starting with a dot is indented
    assert b"\n." not in raw
    assert prepare_data(raw) == prepare_data(bytes(raw)) == raw + b".\r\n"


def test_a_printed_value_starting_with_a_dot_is_doubled_when_it_starts_a_line() -> None:
    content = Content(subject="S", body="Dear\n{{ reader.name }}\n", source="test.md")
    raw = render(
        content, Reader("r@example.org", ".R"), LINKS, message_id="<m@x>", settings=SETTINGS
    )
    assert isinstance(raw, CrlfMessage) and not isinstance(raw, SmtpReady)
    assert prepare_data(raw) == prepare_data(bytes(raw))


def test_a_template_that_writes_a_bare_lf_is_not_vouched_for_and_gets_crlf_on_the_wire() -> None:
    raw = rendered('{% filter replace("x", "\\n") %}axb{% endfilter %}\n')
    assert not isinstance(raw, CrlfMessage)
    assert b"a\nb" in raw and b"a\r\nb" not in raw
    data = prepare_data(raw)
    assert b"a\r\nb" in data
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")


@pytest.mark.parametrize("kind", ["confirmation", "welcome", "unsubscribed"])
def test_the_shipped_emails_need_no_dot_scan_on_the_wire(kind: str) -> None:
    for content in (system_email(kind), load_campaign("vitamin-k2-bone-health").content):
        raw = render(
            content, Reader("r@example.org", "Ann"), LINKS, message_id="<s@x>", settings=SETTINGS
        )
        assert isinstance(raw, SmtpReady)
        assert b"\n." not in raw and prepare_data(raw) == prepare_data(bytes(raw))
