"""The renderer the worker calls: a message key and a reader to the bytes of their copy.

``Renderer`` turns ``campaign:NAME``, ``sequence:NAME:STEP_ID`` and ``system:KIND[:SUFFIX]`` into
content (read once per version of its file: the loaders cache it, and ``content_for`` asks them
at most once a second per key), builds the reader's signed links from ``NEWSLETTER_BASE_URL``
and the instance secret (``SignedLinks``: report and confirm only when a template reads them),
and calls ``templates.render`` with the delivery's Message-ID. ``plain_render`` (a small text
message) serves tests and benchmarks.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

from campaigns import Sequence, load_campaign, load_sequence, system_email
from campaigns.sequence import SEQUENCES_DIR
from newsletter.db import Database
from newsletter.errors import NotFoundError
from newsletter.settings import Settings
from scheduler.deliveries import ClaimedDelivery, Recipient
from scheduler.smtp import SmtpReady
from subscribers.tokens import Purpose, UrlSigner, token_payload
from templates import Content, Links, Reader, render
from templates.sandbox import allow_fields

_FILLER = b"This line pads the message to the size a real newsletter has, for measurements.\r\n"


def plain_render(
    delivery: ClaimedDelivery, subscriber: Recipient, *, sender: str, size: int = 0
) -> bytes:
    """A plain-text message for ``subscriber``, padded with filler lines to about ``size`` bytes."""
    head = (
        f"From: {sender}\r\n"
        f"To: {subscriber.email}\r\n"
        f"Subject: {delivery.message}\r\n"
        f"Date: {_date_now()}\r\n"
        f"Message-ID: {delivery.message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"Hello, this is {delivery.message}.\r\n"
    ).encode()
    filler = _filler(max(0, size - len(head)))
    unpaired = head.replace(b"\r\n", b"")
    if b"\r" in unpaired or b"\n" in unpaired or b"\n." in head:
        return head + filler  # a value broke a line: the sender normalises it
    return SmtpReady(head + filler)  # CRLF lines, none starting with a dot: no scan needed


@functools.lru_cache(maxsize=64)
def _filler(missing: int) -> bytes:
    """Whole filler lines covering ``missing`` bytes (made once per size: it is the same text,
    CRLF lines none of which starts with a dot)."""
    return _FILLER * (missing // len(_FILLER) + (1 if missing else 0))


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The ``Date`` header's value, formatted once a second rather than once a message."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, localtime=False))
    return _date_cache[1]


def placeholder_render(
    settings: Settings, size: int = 0
) -> Callable[[ClaimedDelivery, Recipient], bytes]:
    """A ``plain_render`` callable, for benchmarks that measure the sender alone."""

    def render(delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        return plain_render(delivery, subscriber, sender=settings.sender, size=size)

    return render


_sequences: dict[str, tuple[int, Sequence]] = {}


def _sequence(name: str) -> Sequence:
    """``load_sequence(name)``, parsed once per version of its file (not once per reader)."""
    try:
        stamp = (SEQUENCES_DIR / f"{name}.yaml").stat().st_mtime_ns
    except OSError:
        return load_sequence(name)  # it raises the error that names the problem
    cached = _sequences.get(name)
    if cached is None or cached[0] != stamp:
        cached = (stamp, load_sequence(name))
        _sequences[name] = cached
    return cached[1]


def _load_content(message: str, root: Path | None) -> Content:
    kind, _, rest = message.partition(":")
    if kind == "campaign" and rest:
        return load_campaign(rest, root).content
    if kind == "sequence" and rest.count(":") >= 1:
        name, _, step_id = rest.partition(":")
        return _sequence(name).step(step_id).content(root)
    if kind == "system" and rest:
        return system_email(rest.partition(":")[0], root)
    raise NotFoundError(
        f"message {message!r}: expected campaign:NAME, sequence:NAME:STEP or system:KIND"
    )


CONTENT_RECHECK = 1.0  # seconds between two looks at the files behind one message key
MAX_CONTENTS = 256
_contents: dict[tuple[str, Path | None], tuple[float, Content]] = {}


def content_for(message: str, root: Path | None = None) -> Content:
    """The content of a message key; ``NotFoundError`` for a key of no known kind.

    The loaders notice an edited file by its modification time, which costs a few ``stat`` calls
    and a directory listing: a worker asks for every reader, so each key's answer is kept for
    ``CONTENT_RECHECK`` seconds, and an edit takes effect within about a second. Errors are
    never kept: a key that fails is looked up again on the next call.
    """
    kind, _, rest = message.partition(":")
    if kind == "system":
        message = "system:" + rest.partition(":")[0]  # the suffix only tells copies apart
    key = (message, root)
    now = time.monotonic()
    cached = _contents.get(key)
    if cached is not None and now - cached[0] < CONTENT_RECHECK:
        return cached[1]
    content = _load_content(message, root)
    if len(_contents) >= MAX_CONTENTS:
        _contents.clear()
    _contents[key] = (now, content)
    return content


class LinkSigners:
    """A ``UrlSigner`` for each purpose, for one base URL and secret (built once a renderer)."""

    def __init__(self, base_url: str, secret_key: str) -> None:
        signers = {purpose: UrlSigner(base_url, secret_key, purpose) for purpose in Purpose}
        self.unsubscribe = signers[Purpose.UNSUBSCRIBE].url
        self.preferences = signers[Purpose.PREFERENCES].url
        self.report = signers[Purpose.REPORT].url
        self.confirm = signers[Purpose.CONFIRM].url


class SignedLinks(Links):
    """A reader's ``Links``, signed with the reader's payload encoded once. Every copy shows
    ``unsubscribe`` and ``preferences``; ``report`` and ``confirm`` are signed when first read,
    so that a copy signs only the links it shows: a campaign never shows ``confirm``
    (confirmation emails do), nor ``report`` to a reader who has the report. Reads like
    ``Links`` everywhere (templates, ``assemble``); ``dataclasses.replace`` is not supported."""

    _signers: LinkSigners
    _payload: bytes

    def __init__(self, signers: LinkSigners, subscriber_key: str, web_version: str | None) -> None:
        payload = token_payload(subscriber_key)
        # Links is frozen: the fields are set as its own __init__ sets them.
        setattr_ = object.__setattr__
        setattr_(self, "unsubscribe", signers.unsubscribe(payload))
        setattr_(self, "preferences", signers.preferences(payload))
        setattr_(self, "web_version", web_version)
        setattr_(self, "unsubscribe_mailto", None)
        setattr_(self, "_signers", signers)
        setattr_(self, "_payload", payload)

    @functools.cached_property
    def report(self) -> str:
        return self._signers.report(self._payload)

    @functools.cached_property
    def confirm(self) -> str:
        return self._signers.confirm(self._payload)


allow_fields(SignedLinks, frozenset(Links.__dataclass_fields__))


class Renderer:
    """The worker's ``Render``: each reader's real copy of each message."""

    def __init__(
        self, settings: Settings, database: Database, *, content_root: Path | None = None
    ) -> None:
        self.settings = settings
        self.secret_key = database.secret_key(settings)
        self._signers = LinkSigners(settings.base_url, self.secret_key)
        self.content_root = content_root

    def __call__(self, delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        content = content_for(delivery.message, self.content_root)
        reader = Reader(
            email=subscriber.email,
            name=subscriber.name,
            attributes=subscriber.attributes,
            tags=subscriber.tags,
            timezone=subscriber.timezone,
            has_report=subscriber.has_report,  # read with the claim
        )
        return render(
            content,
            reader,
            self.links(subscriber.key, content),
            message_id=delivery.message_id,
            settings=self.settings,
        )

    def links(self, key: str, content: Content) -> Links:
        """The reader's links (signed when a template first reads them)."""
        return SignedLinks(self._signers, key, content.web_url)
