"""Per-client signup limits (``NEWSLETTER_SIGNUP_LIMIT``), in the limits library's notation.

Per-address limits live in the store (one confirmation email per address per 10 minutes), so they
hold across processes; the per-client limit is per process, which is what it is for: a burst.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from limits import parse_many

# Forget clients whose every window has ended once this many are tracked.
PURGE_ABOVE = 50_000


class SignupLimiter:
    """Counts signups per client address in fixed windows and says when one is over the limit.

    The notation is parsed by ``limits``; the counting is kept here because its in-memory
    storage starts a timer thread to expire entries, which cost about a millisecond a signup.
    """

    def __init__(self, notation: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = [(item.amount, float(item.get_expiry())) for item in parse_many(notation)]
        self.clock = clock
        self.windows: dict[str, list[tuple[float, int]]] = {}
        self.lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Record one signup from ``client``; False (and nothing counted) when over a limit."""
        now = self.clock()
        with self.lock:
            windows = [
                (start, count) if now - start < period else (now, 0)
                for (start, count), (_amount, period) in zip(
                    self.windows.get(client) or [(now, 0)] * len(self.limits),
                    self.limits,
                    strict=True,
                )
            ]
            if any(
                count >= amount
                for (_s, count), (amount, _p) in zip(windows, self.limits, strict=True)
            ):
                self.windows[client] = windows
                return False
            self.windows[client] = [(start, count + 1) for start, count in windows]
            if len(self.windows) > PURGE_ABOVE:
                self._purge(now)
            return True

    def _purge(self, now: float) -> None:
        longest = max(period for _amount, period in self.limits)
        self.windows = {
            client: windows
            for client, windows in self.windows.items()
            if any(now - start < longest for start, _count in windows)
        }
