"""Dashboard sessions: a signed cookie naming the account, its session version and a CSRF token.

The cookie is signed with the instance secret (itsdangerous), so it cannot be forged or edited,
and expires after ``SESSION_MAX_AGE``. It is ``HttpOnly`` and ``SameSite=Lax`` always and
``Secure`` when ``NEWSLETTER_BASE_URL`` is https. The CSRF token is random per session; every
state-changing request must echo it (a form field or the ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE_NAME = "newsletter_admin"
COOKIE_PATH = "/admin"
SESSION_MAX_AGE = timedelta(hours=12)
_SALT = "newsletter.admin.session"


@dataclass(frozen=True)
class SessionCookie:
    """What a session cookie carries."""

    account_id: int
    session_version: int
    csrf_token: str

    def accepts(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (compared in constant time)."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token)


class SessionSigner:
    """Signs and reads session cookies with the instance secret."""

    def __init__(self, secret_key: str) -> None:
        self.serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)

    def issue(self, account_id: int, session_version: int) -> tuple[SessionCookie, str]:
        """A new session (with a fresh CSRF token) and its cookie value."""
        cookie = SessionCookie(account_id, session_version, secrets.token_urlsafe(32))
        value = self.serializer.dumps(
            {"a": cookie.account_id, "v": cookie.session_version, "c": cookie.csrf_token}
        )
        return cookie, value

    def read(self, value: str | None) -> SessionCookie | None:
        """The session in a cookie value, or None when it is missing, forged or expired."""
        if not value:
            return None
        try:
            data: Any = self.serializer.loads(value, max_age=int(SESSION_MAX_AGE.total_seconds()))
        except BadSignature:
            return None
        try:
            return SessionCookie(int(data["a"]), int(data["v"]), str(data["c"]))
        except (KeyError, TypeError, ValueError):
            return None


def cookie_options(base_url: str) -> dict[str, Any]:
    """The attributes of the session cookie for a product served at ``base_url``."""
    return {
        "key": COOKIE_NAME,
        "path": COOKIE_PATH,
        "max_age": int(SESSION_MAX_AGE.total_seconds()),
        "httponly": True,
        "samesite": "lax",
        "secure": base_url.lower().startswith("https://"),
    }
