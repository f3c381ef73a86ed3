"""Per-client signup limits (``NEWSLETTER_SIGNUP_LIMIT``), in the limits library's notation.

Per-address limits live in the store (one confirmation email per address per 10 minutes), so they
hold across processes; the per-client limit is per process, which is what it is for: a burst.
"""

from __future__ import annotations

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class SignupLimiter:
    """Counts signups per client address and says when one is over the limit."""

    def __init__(self, notation: str) -> None:
        self.limits = parse_many(notation)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def allow(self, client: str) -> bool:
        """Record one signup from ``client``; False when any limit is exceeded."""
        return all(self.limiter.hit(limit, "signup", client) for limit in self.limits)
