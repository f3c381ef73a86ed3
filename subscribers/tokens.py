"""Signed links: each carries a reader's key and one purpose, and some expire.

A token for one purpose is refused for another, so an unsubscribe link can never confirm anyone.
Tokens are itsdangerous ``URLSafeTimedSerializer`` tokens, read by itsdangerous itself; they are
made here without its per-call work (a campaign signs several links for every reader): the HMAC
is keyed once per secret and purpose, a reader's payload is encoded once for all their links,
and the timestamp once a second.
"""

from __future__ import annotations

import enum
import hmac
import time
from binascii import b2a_base64
from datetime import timedelta
from functools import lru_cache
from json import JSONEncoder

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes

from newsletter.errors import TokenError


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    REPORT = "report"


# Unsubscribe and preferences links never expire: RFC 8058 links must work from any old email.
MAX_AGE: dict[Purpose, timedelta | None] = {
    Purpose.CONFIRM: timedelta(days=7),
    Purpose.REPORT: timedelta(days=365),
    Purpose.UNSUBSCRIBE: None,
    Purpose.PREFERENCES: None,
}

EXPIRED_MESSAGE = {
    Purpose.CONFIRM: "This confirmation link has expired. Subscribe again to get a new one.",
    Purpose.REPORT: "This download link has expired. Ask for the report again from the latest "
    "email.",
}


@lru_cache(maxsize=32)
def _serializer(secret_key: str, purpose: Purpose) -> URLSafeTimedSerializer:
    # Built once per key and purpose: a campaign signs four links for every reader.
    return URLSafeTimedSerializer(secret_key, salt=purpose.value)


def token_payload(subscriber_key: str) -> bytes:
    """The encoded reader's key that each of their tokens signs (see ``TokenSigner``).

    itsdangerous' payload (compact JSON in URL-safe base64), never zlib-compressed: ``loads``
    reads either form, a reader's key is too short and random for zlib to shorten, and one
    ``zlib.compress`` (which itsdangerous tries on every token) costs more than the rest of
    the token."""
    return base64_encode(_JSON.encode(subscriber_key).encode("utf-8"))


# itsdangerous' compact JSON (``_CompactJSON.dumps``), with its encoder built once.
_JSON = JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class TokenSigner:
    """Makes ``make_token``'s tokens for one secret and purpose: the HMAC keyed once (where
    itsdangerous builds a signer and derives its key for every token), the payload given already
    encoded (``token_payload``, once for all of a reader's tokens)."""

    def __init__(self, secret_key: str, purpose: Purpose) -> None:
        signer = _serializer(secret_key, purpose).make_signer()
        self._sep = signer.sep
        self._keyed = hmac.new(signer.derive_key(), digestmod=signer.digest_method)

    def sign(self, payload: bytes) -> str:
        """The token carrying ``payload``, as ``URLSafeTimedSerializer.dumps`` signs it."""
        value = payload + self._sep + _timestamp()
        mac = self._keyed.copy()
        mac.update(value)
        return (value + self._sep + _base64(mac.digest())).decode("ascii")


@lru_cache(maxsize=32)
def token_signer(secret_key: str, purpose: Purpose) -> TokenSigner:
    """The ``TokenSigner`` of ``secret_key`` and ``purpose`` (built once)."""
    return TokenSigner(secret_key, purpose)


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _base64(data: bytes) -> bytes:
    """itsdangerous' ``base64_encode`` (URL-safe alphabet, no padding) without its checks."""
    return b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


_timestamp_cache: tuple[int, bytes] = (-1, b"")


def _timestamp() -> bytes:
    """itsdangerous' encoded signing time (whole seconds), encoded once a second."""
    global _timestamp_cache
    now = int(time.time())  # what TimestampSigner.get_timestamp returns
    cached = _timestamp_cache
    if cached[0] != now:
        cached = (now, base64_encode(int_to_bytes(now)))
        _timestamp_cache = cached
    return cached[1]


def make_token(secret_key: str, purpose: Purpose, subscriber_key: str) -> str:
    """A URL-safe signed token for ``purpose`` carrying the reader's key."""
    return token_signer(secret_key, purpose).sign(token_payload(subscriber_key))


def read_token(secret_key: str, purpose: Purpose, token: str) -> str:
    """The reader's key; ``TokenError`` when forged, for another purpose, or expired."""
    serializer = _serializer(secret_key, purpose)
    max_age = MAX_AGE[purpose]
    try:
        key = serializer.loads(
            token, max_age=None if max_age is None else int(max_age.total_seconds())
        )
    except SignatureExpired:
        raise TokenError(EXPIRED_MESSAGE.get(purpose, "This link has expired.")) from None
    except BadSignature:
        raise TokenError("This link is not valid. Check that it was copied whole.") from None
    if not isinstance(key, str):
        raise TokenError("This link is not valid. Check that it was copied whole.")
    return key


PATHS = {
    Purpose.CONFIRM: "/confirm/",
    Purpose.UNSUBSCRIBE: "/unsubscribe/",
    Purpose.PREFERENCES: "/preferences/",
    Purpose.REPORT: "/report/",
}


def signed_url(base_url: str, secret_key: str, purpose: Purpose, subscriber_key: str) -> str:
    """The absolute URL of a reader's page for ``purpose``, as put in emails."""
    return base_url + PATHS[purpose] + make_token(secret_key, purpose, subscriber_key)


class UrlSigner:
    """``signed_url`` for one base URL, secret and purpose, given a reader's ``token_payload``."""

    def __init__(self, base_url: str, secret_key: str, purpose: Purpose) -> None:
        self.prefix = base_url + PATHS[purpose]
        self.tokens = token_signer(secret_key, purpose)

    def url(self, payload: bytes) -> str:
        return self.prefix + self.tokens.sign(payload)
