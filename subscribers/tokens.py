"""Signed links: each carries a reader's key and one purpose, and some expire.

A token for one purpose is refused for another, so an unsubscribe link can never confirm anyone.
Tokens are itsdangerous ``URLSafeTimedSerializer`` tokens, read by itsdangerous itself; they are
made here without its per-call work (a campaign signs several links for every reader): the
derived key is turned into a prepared HMAC once per secret and purpose, a reader's payload is
encoded once for all their links, and the timestamp once a second.
"""

from __future__ import annotations

import enum
import time
from binascii import b2a_base64
from datetime import timedelta
from functools import lru_cache
from itertools import pairwise
from json import JSONEncoder
from math import log2

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


# The payload encoding (compact JSON, zlib when shorter, base64) depends on neither the secret
# nor the purpose: any serializer's ``dump_payload`` gives every serializer's payload.
_PAYLOAD = URLSafeTimedSerializer(b"payload encoding only", salt="payload")


def token_payload(subscriber_key: str) -> bytes:
    """The encoded reader's key that each of their tokens signs (see ``TokenSigner``):
    itsdangerous' own payload, byte for byte."""
    json = _JSON.encode(subscriber_key).encode("utf-8")
    if _incompressible(json):
        return base64_encode(json)  # what dump_payload returns when zlib does not help
    return _PAYLOAD.dump_payload(subscriber_key)


# itsdangerous' compact JSON (``_CompactJSON.dumps``), with its encoder built once.
_JSON = JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SMALL = 1024  # zlib writes inputs this small as one deflate block


def _incompressible(data: bytes) -> bool:
    """True when ``zlib.compress(data)`` is certainly not 2 bytes shorter than ``data``, so that
    itsdangerous would not use it: checked without zlib, whose call costs about 80 µs (it
    allocates and clears 256 KB of state) where this costs a few; a reader's key almost always
    passes (a random 22-character key fails about once in 60: zlib then decides).

    Without a repeated 3-byte sequence, deflate has no match to use: every byte is a literal.
    One block of literals costs at least 8 bits a byte when stored or under the fixed code; under
    a dynamic code, its header (3 + 14 + 4 x 3 bits), plus 8 bits for the run of unused codes
    128-255 when ``data`` is ASCII, plus the literals and the end-of-block code, which no prefix
    code writes in fewer bits than their entropy. zlib adds 6 bytes of header and checksum.
    """
    size = len(data)
    if size > _SMALL:
        return False
    distinct = len(set(data))
    # With one byte value repeated at most, no 3-byte sequence can occur twice; nor without a
    # repeated 2-byte one (the cheaper test).
    if (
        distinct < size - 1
        and len(set(pairwise(data))) < size - 1
        and len(set(zip(data, data[1:], data[2:], strict=False))) < size - 2
    ):
        return False  # a sequence repeats: deflate may find a match
    # The entropy is least when all the repeats are of one value.
    symbols = size + 1  # the literals and the end-of-block code
    most = size - distinct + 1
    entropy = symbols * log2(symbols) - most * log2(most)
    least_bits = 29 + (8 if data.isascii() else 0) + entropy
    # Compressed is used when 6 + ceil(bits / 8) < size - 1, so only if bits <= 8 * (size - 8).
    return least_bits > 8 * (size - 8) + 1e-6


class TokenSigner:
    """Makes ``make_token``'s tokens for one secret and purpose: the HMAC keyed once (where
    itsdangerous builds a signer and derives its key for every token), the payload given already
    encoded (``token_payload``, once for all of a reader's tokens)."""

    def __init__(self, secret_key: str, purpose: Purpose) -> None:
        signer = _serializer(secret_key, purpose).make_signer()
        self._sep = signer.sep
        # RFC 2104 HMAC with its keyed inner and outer hashes kept, to be copied for each token:
        # half the time of hmac.digest, which sets up OpenSSL's HMAC on every call.
        digest = signer.digest_method
        key = signer.derive_key()
        block_size = digest().block_size
        if len(key) > block_size:
            key = digest(key).digest()
        key = key.ljust(block_size, b"\0")
        self._inner = digest(key.translate(_INNER_PAD))
        self._outer = digest(key.translate(_OUTER_PAD))

    def _mac(self, value: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        mac: bytes = outer.digest()
        return mac

    def sign(self, payload: bytes) -> str:
        """The token carrying ``payload``: the string ``URLSafeTimedSerializer.dumps`` makes in
        the same second."""
        value = payload + self._sep + _timestamp()
        return (value + self._sep + _base64(self._mac(value))).decode("ascii")


_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


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
