"""The DATA payload: what the sender puts on the wire after the server's 354."""

from __future__ import annotations

from scheduler.deliveries import ClaimedDelivery, Recipient
from scheduler.rendering import plain_render
from scheduler.smtp import SmtpReady, prepare_data


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
