"""Signed links: each carries a reader's key and one purpose, and some expire.

A token for one purpose is refused for another, so an unsubscribe link can never confirm anyone.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from functools import lru_cache

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

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


def make_token(secret_key: str, purpose: Purpose, subscriber_key: str) -> str:
    """A URL-safe signed token for ``purpose`` carrying the reader's key."""
    return _serializer(secret_key, purpose).dumps(subscriber_key)


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
