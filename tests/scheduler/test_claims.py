"""How a worker claims: a small first claim after a pause, so that sending starts at once, then
claims that grow up to a batch while the ones before them are sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.deliveries import State, delivery_counts, enqueue
from scheduler.worker import CLAIM_RAMP, Outcome, Worker
from tests.scheduler.delivery_helpers import FAST, add_readers, make_render

MESSAGE = "campaign:claims"


@pytest.fixture
def make_worker(
    database: Database, make_settings: Callable[..., Settings]
) -> Callable[..., Worker]:
    """A worker on ``database`` with four connections (never opened here) and a fast rate,
    with a campaign to ``readers`` readers queued for it."""

    def build(readers: int, **overrides: object) -> Worker:
        add_readers(database, readers)
        enqueue(database, MESSAGE)
        values: dict[str, object] = {"send_concurrency": 4, "send_rate": 100_000, **overrides}
        settings = make_settings(database_url=database.url, **values)
        return Worker(settings, database, make_render(), threading.Event(), FAST)

    return build


def test_claims_start_at_a_few_a_connection_and_grow_to_a_batch(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker(3000)
    first = worker.first_claim_size()
    assert first == 4 * 8  # eight a connection

    sizes = [worker.claim() for _ in range(5)]

    growing = [first, first * CLAIM_RAMP, first * CLAIM_RAMP**2, 2000]
    assert sizes == [*growing, 3000 - sum(growing)]
    assert worker.work.qsize() == 3000


def test_after_a_short_claim_the_next_starts_small_again(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker(40)
    assert [worker.claim(), worker.claim()] == [32, 8]  # the second found less than it asked
    assert worker.claim_size == worker.first_claim_size()


def test_a_slow_rate_claims_no_more_than_half_a_second_of_sending(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker(100, send_rate=20)  # a batch is 11: half a second at 20 a second
    assert worker.batch_size() == 11
    assert [worker.claim() for _ in range(3)] == [11, 11, 11]


def test_outcomes_are_not_waited_for_while_the_next_claim_is_due(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker(3000)
    worker.claim()  # 32 rows: the next claim, of 128, is due while fewer than 64 are queued
    assert worker.claim_wanted()
    sent = worker.work.get()
    worker.results.put(Outcome(sent, State.SENT))

    started = time.monotonic()
    worker.record(wait=5.0)  # 31 outcomes still to come: it would gather them for 5 s

    assert time.monotonic() - started < 2.0
    with worker.database.session() as session:
        assert delivery_counts(session, MESSAGE)[State.SENT] == 1
