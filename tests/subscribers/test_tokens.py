"""Tokens made without itsdangerous' per-call work are still itsdangerous tokens: for a reader's
key, the same strings its ``dumps`` makes in the same second; for any key, read by ``read_token``
as before."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from newsletter.errors import TokenError
from subscribers.tokens import (
    Purpose,
    UrlSigner,
    make_token,
    read_token,
    signed_url,
    token_payload,
    token_signer,
)

# Readers' keys are token_urlsafe(16): too short and random for zlib to shorten.
READER_KEYS = [secrets.token_urlsafe(16) for _ in range(20)]
# Keys zlib does shorten (itsdangerous then compresses them; we never do) and odd characters.
KEYS = [*READER_KEYS, "", "é", "ab" * 40, "x" * 300, 'a"\\b']


def same_second(make: Callable[[], str], reference: Callable[[], str]) -> tuple[str, str]:
    """Both tokens, made within one second (tried again when a second boundary fell between)."""
    while True:
        second = int(time.time())
        ours, theirs = make(), reference()
        if int(time.time()) == second:
            return ours, theirs


def both_tokens(secret: str, purpose: Purpose, key: str) -> tuple[str, str]:
    reference = URLSafeTimedSerializer(secret, salt=purpose.value)
    return same_second(lambda: make_token(secret, purpose, key), lambda: reference.dumps(key))


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_token_is_the_string_itsdangerous_dumps_makes_in_the_same_second(
    purpose: Purpose,
) -> None:
    for secret in ("secret", "a much longer instance secret " * 4):
        for key in READER_KEYS:
            ours, theirs = both_tokens(secret, purpose, key)
            assert ours == theirs


@settings(max_examples=300, deadline=None, database=None)
@given(key=st.text(max_size=60) | st.text(alphabet="ab-", max_size=60))
def test_itsdangerous_reads_a_readers_payload_back_for_any_key(key: str) -> None:
    assert URLSafeTimedSerializer("s").load_payload(token_payload(key)) == key


@pytest.mark.parametrize("key", KEYS)
def test_a_fast_token_reads_back_for_its_purpose_only(key: str) -> None:
    payload = token_payload(key)
    for purpose in Purpose:
        token = token_signer("secret", purpose).sign(payload)
        assert read_token("secret", purpose, token) == key
        for other in set(Purpose) - {purpose}:
            with pytest.raises(TokenError, match="not valid"):
                read_token("secret", other, token)
        with pytest.raises(TokenError, match="not valid"):
            read_token("another secret", purpose, token)


def test_a_fast_confirmation_token_expires_after_a_week_and_not_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = make_token("secret", Purpose.CONFIRM, "reader-key")
    signed_at = time.time()
    monkeypatch.setattr(time, "time", lambda: signed_at + 6 * 86400)
    assert read_token("secret", Purpose.CONFIRM, token) == "reader-key"
    monkeypatch.setattr(time, "time", lambda: signed_at + 8 * 86400)
    with pytest.raises(TokenError, match="expired"):
        read_token("secret", Purpose.CONFIRM, token)


def test_a_url_signer_makes_signed_urls_from_a_readers_payload() -> None:
    signer = UrlSigner("https://news.example", "secret", Purpose.UNSUBSCRIBE)
    ours, theirs = same_second(
        lambda: signer.url(token_payload("reader-key")),
        lambda: signed_url("https://news.example", "secret", Purpose.UNSUBSCRIBE, "reader-key"),
    )
    assert ours == theirs
    assert ours.startswith("https://news.example/unsubscribe/")
