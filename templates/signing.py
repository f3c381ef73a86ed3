"""DKIM signatures (dkimpy) with the key from ``NEWSLETTER_DKIM_KEY``; the domain is the
``From`` domain. The signature covers the headers RFC 8058 and the project's rules name."""

from __future__ import annotations

import threading
from pathlib import Path

import dkim

from newsletter.errors import SettingsError, TemplateError

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-id",
    b"mime-version",
    b"content-type",
)

_keys: dict[tuple[str, int], bytes] = {}
_lock = threading.Lock()


def load_key(path: Path) -> bytes:
    """The PEM private key at ``path``, read once per version of the file."""
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
        with _lock:
            key = _keys.get(stamp)
        if key is None:
            key = path.read_bytes()
            with _lock:
                _keys[stamp] = key
    except OSError as error:
        raise SettingsError(f"NEWSLETTER_DKIM_KEY: cannot read {path} ({error.strerror})") from None
    if b"PRIVATE KEY" not in key:
        raise SettingsError(f"NEWSLETTER_DKIM_KEY: {path} is not a PEM private key")
    return key


def sign(message: bytes, *, key: bytes, selector: str, domain: str) -> bytes:
    """``message`` with a ``DKIM-Signature`` header in front (relaxed/relaxed, rsa-sha256)."""
    try:
        signature = dkim.sign(
            message,
            selector.encode("ascii"),
            domain.encode("ascii"),
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
    except (dkim.DKIMException, UnicodeEncodeError, ValueError) as error:
        raise TemplateError(f"DKIM signing failed for {domain} ({error})") from None
    return signature + message
