"""The per-client signup limit counts each window in the limits library's notation."""

from __future__ import annotations

from subscribers.ratelimit import SignupLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_limit_of_the_notation_holds_and_resets_with_its_window() -> None:
    clock = Clock()
    limiter = SignupLimiter("2/minute;3/hour", clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 61
    assert [limiter.allow("a") for _ in range(2)] == [True, False]  # the hour allows 3 in all
    clock.now += 3600
    assert limiter.allow("a")


def test_clients_are_counted_apart() -> None:
    limiter = SignupLimiter("1/minute", clock=Clock())
    assert limiter.allow("a") and limiter.allow("b")
    assert not limiter.allow("a")


def test_forgotten_clients_are_purged_when_many_are_tracked() -> None:
    clock = Clock()
    limiter = SignupLimiter("1/second", clock=clock)
    for n in range(50_001):
        limiter.allow(f"client-{n}")
    clock.now += 5
    limiter.allow("late-a")
    limiter.allow("late-b")
    assert len(limiter.windows) <= 2
