"""PLACEHOLDER renderer for ``newsletter worker`` until the real one (``templates.render``) lands.

``plain_render`` builds a small, valid RFC 5322 text message carrying the delivery's Message-ID.
The lead replaces ``placeholder_render`` with a callable that loads the message's content and
calls ``templates.render(content, reader, links, message_id=delivery.message_id, settings=…)``.
Tests and benchmarks use ``plain_render`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate

from newsletter.settings import Settings
from scheduler.deliveries import ClaimedDelivery, Recipient

_FILLER = b"This line pads the message to the size a real newsletter has, for measurements.\r\n"


def plain_render(
    delivery: ClaimedDelivery, subscriber: Recipient, *, sender: str, size: int = 0
) -> bytes:
    """A plain-text message for ``subscriber``, padded with filler lines to about ``size`` bytes."""
    head = (
        f"From: {sender}\r\n"
        f"To: {subscriber.email}\r\n"
        f"Subject: {delivery.message}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: {delivery.message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"Hello, this is {delivery.message}.\r\n"
    ).encode()
    missing = max(0, size - len(head))
    return head + _FILLER * (missing // len(_FILLER) + (1 if missing else 0))


def placeholder_render(
    settings: Settings, size: int = 0
) -> Callable[[ClaimedDelivery, Recipient], bytes]:
    """PLACEHOLDER: the render callable ``newsletter worker`` uses until templates are wired."""

    def render(delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        return plain_render(delivery, subscriber, sender=settings.sender, size=size)

    return render
