"""A fleet: several worker processes on one PostgreSQL database.

- Leadership: one process leads at a time (PostgreSQL's advisory lock, SQLite's file lock); when
  the leader is killed another takes over within seconds, and sampling never sees two leaders.
- Four ``newsletter worker`` processes share a campaign: every reader gets exactly one
  Message-ID, each worker sends part of it, and together they stay within ``send_rate``.
- The crash test of the delivery issue with four workers: random workers are SIGKILLed at random
  moments and restarted; every reader gets the message, none two different Message-IDs.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import func, select

from newsletter.db import Database, utcnow
from scheduler.deliveries import Delivery, DeliveryWorker, delivery_counts, enqueue, message_id_for
from scheduler.leader import Leadership
from tests.conftest import _empty_postgres, free_port
from tests.scheduler.delivery_helpers import (
    SENDER,
    Pipelining,
    add_readers,
    message_id_of,
    reader_address,
)

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = "campaign:vitamin-k2-bone-health"  # rendered for real by the worker

# ---------------------------------------------------------------- leadership


@pytest.fixture
def postgres_database(postgres_server_url: str) -> Iterator[Database]:
    """A migrated, empty PostgreSQL database (the fleet needs one)."""
    _empty_postgres(postgres_server_url)
    database = Database(postgres_server_url)
    database.upgrade()
    yield database
    database.dispose()


def test_one_leader_at_a_time_and_release_hands_over(database: Database) -> None:
    first = Leadership(database, check_interval=0.2)
    second = Leadership(database, check_interval=0.2)
    try:
        assert first.acquire() and first.is_leader()
        assert not second.acquire() and not second.is_leader()
        assert first.check()
        first.release()
        assert not first.is_leader()
        assert second.acquire() and second.is_leader()
        assert not first.acquire()
    finally:
        first.release()
        second.release()


HOLDER = """
import os, sys, time
from newsletter.db import Database
from scheduler.leader import Leadership

leadership = Leadership(Database(sys.argv[1]), check_interval=0.5).start()
state = sys.argv[2]
while True:
    with open(state + ".tmp", "w") as out:
        out.write("1" if leadership.is_leader() else "0")
    os.replace(state + ".tmp", state)
    time.sleep(0.01)
"""


def _leaders(states: dict[int, Path], alive: set[int]) -> list[int]:
    leaders = []
    for n in alive:
        try:
            if states[n].read_text() == "1":
                leaders.append(n)
        except FileNotFoundError:
            pass
    return leaders


@pytest.mark.slow
def test_killing_the_leader_hands_leadership_to_another_within_seconds_never_two(
    postgres_database: Database, tmp_path: Path
) -> None:
    # On PostgreSQL only: on SQLite the lock is the kernel's flock, released with the process
    # (the test above covers that it excludes a second holder).
    database = postgres_database
    states = {n: tmp_path / f"holder-{n}" for n in range(3)}
    holders = {
        n: subprocess.Popen(
            [sys.executable, "-c", HOLDER, database.url, str(states[n])],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        for n in range(3)
    }
    alive = set(holders)
    try:
        for _round in range(2):  # kill the first leader, then its successor
            deadline = time.monotonic() + 30
            leaders: list[int] = []
            while time.monotonic() < deadline:
                leaders = _leaders(states, alive)
                assert len(leaders) <= 1, f"two leaders at once: {leaders}"
                if leaders:
                    break
                time.sleep(0.01)
            assert len(leaders) == 1, "nobody became the leader"
            for _ in range(30):  # a steady leader stays alone
                assert _leaders(states, alive) == leaders
                time.sleep(0.01)
            killed = leaders[0]
            holders[killed].send_signal(signal.SIGKILL)
            holders[killed].wait()
            alive.discard(killed)
            killed_at = time.monotonic()
            while True:
                leaders = _leaders(states, alive)
                assert len(leaders) <= 1, f"two leaders at once: {leaders}"
                if leaders:
                    break
                assert time.monotonic() - killed_at < 5, "no one took over within 5 s"
                time.sleep(0.005)
    finally:
        for holder in holders.values():
            holder.kill()
            holder.wait()


# ---------------------------------------------------------------- worker processes


@dataclass
class TimedHandler(Pipelining):
    """An aiosmtpd handler keeping each message's recipient, Message-ID and arrival time; it
    offers PIPELINING, as production relays do."""

    received: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        message_id = message_id_of(envelope.original_content or b"")
        with self.lock:
            for address in envelope.rcpt_tos:
                self.received.append((time.monotonic(), address, message_id))
        return "250 OK"

    def snapshot(self) -> list[tuple[float, str, str]]:
        with self.lock:
            return list(self.received)


@pytest.fixture
def timed_server() -> Iterator[tuple[str, TimedHandler]]:
    handler = TimedHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", handler
    finally:
        controller.stop()


def worker_env(database: Database, smtp_url: str, send_rate: int) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER")},
        "NEWSLETTER_DATABASE_URL": database.url,
        "NEWSLETTER_SMTP_URL": smtp_url,
        "NEWSLETTER_FROM": SENDER,
        "NEWSLETTER_SECRET_KEY": "fleet-test",
        "NEWSLETTER_SEND_RATE": str(send_rate),
        "NEWSLETTER_SEND_CONCURRENCY": "2",
    }


def start_worker(env: dict[str, str], cwd: Path, *, lease: float = 1) -> subprocess.Popen[bytes]:
    """``newsletter worker --until-idle``; a short ``lease`` lets a killed worker's rows come
    back within the test (a live worker that stalls longer than it could have its rows resent)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "worker",
            "--until-idle",
            "--lease",
            str(lease),
            "--poll-interval",
            "0.05",
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def live_workers(database: Database) -> int:
    with database.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(DeliveryWorker)
                .where(DeliveryWorker.seen_at >= utcnow() - timedelta(seconds=2))
            )
            or 0
        )


def assert_one_message_id_per_reader(
    database: Database, received: list[tuple[float, str, str]], readers: int
) -> dict[str, int]:
    copies: dict[str, set[str]] = defaultdict(set)
    for _at, address, message_id in received:
        copies[address].add(message_id)
    with database.session() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        counts = delivery_counts(session, MESSAGE)
    assert len(rows) == readers
    for n, row in enumerate(rows):
        expected = message_id_for(row.id, MESSAGE, row.subscriber_id, "example.org")
        assert copies[reader_address(n)] == {expected}, reader_address(n)
    assert counts["sent"] == len(copies) == readers
    assert counts["queued"] == counts["claimed"] == counts["uncertain"] == counts["failed"] == 0
    return counts


@pytest.mark.slow
def test_four_workers_share_a_campaign_within_the_fleet_rate_without_taking_a_row_twice(
    postgres_database: Database, timed_server: tuple[str, TimedHandler], tmp_path: Path
) -> None:
    readers, send_rate = 1600, 200
    smtp_url, handler = timed_server
    add_readers(postgres_database, readers)
    assert enqueue(postgres_database, MESSAGE) == readers
    env = worker_env(postgres_database, smtp_url, send_rate)
    # Nobody is killed here: a long lease, so that a worker the machine stalls keeps its rows.
    workers = [start_worker(env, tmp_path, lease=10) for _ in range(4)]
    try:
        # The fleet's rate, measured once all four have said they are alive (and have had a
        # heartbeat to take their quarter of it): within send_rate, and not starved either.
        deadline = time.monotonic() + 60
        while live_workers(postgres_database) < 4:
            assert time.monotonic() < deadline, "the four workers did not all start"
            time.sleep(0.05)
        start = time.monotonic() + 1.2
        window = 2.0
        time.sleep(1.2 + window + 0.2)
        sent_in_window = sum(1 for at, _, _ in handler.snapshot() if start <= at < start + window)
        assert sent_in_window <= send_rate * window * 1.15 + 10, sent_in_window
        assert sent_in_window >= send_rate * window * 0.25, sent_in_window
        outputs = [worker.communicate(timeout=120)[0].decode() for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert all(worker.returncode == 0 for worker in workers), outputs

    # No duplicates at all: nobody was killed, so no outcome was ever unknown.
    received = handler.snapshot()
    assert len(received) == readers
    assert_one_message_id_per_reader(postgres_database, received, readers)
    sent_by = [int(re.search(r"sent=(\d+)", out).group(1)) for out in outputs]  # type: ignore[union-attr]
    assert sum(sent_by) == readers
    assert all(sent > 0 for sent in sent_by), sent_by


@pytest.mark.slow
def test_sigkill_of_random_workers_among_four_loses_nothing_and_never_sends_two_copies(
    postgres_database: Database, timed_server: tuple[str, TimedHandler], tmp_path: Path
) -> None:
    readers, kills = 1500, 5
    smtp_url, handler = timed_server
    add_readers(postgres_database, readers)
    assert enqueue(postgres_database, MESSAGE) == readers
    env = worker_env(postgres_database, smtp_url, send_rate=400)
    rng = random.Random(4)
    workers = [start_worker(env, tmp_path) for _ in range(4)]
    everyone = list(workers)
    try:
        # Wait for sending to begin, then kill a random worker at a random moment, and restart it.
        deadline = time.monotonic() + 60
        while not handler.snapshot():
            assert time.monotonic() < deadline, "nothing was sent"
            time.sleep(0.01)
        for _ in range(kills):
            time.sleep(rng.uniform(0.1, 0.6))
            n = rng.randrange(len(workers))
            workers[n].send_signal(signal.SIGKILL)
            workers[n].wait()
            workers[n] = start_worker(env, tmp_path)
            everyone.append(workers[n])
        assert len({address for _, address, _ in handler.snapshot()}) < readers, "killed too late"
        # The last four finish the campaign, taking over the rows the killed ones held.
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    finally:
        for worker in everyone:
            worker.kill()
            worker.communicate()

    received = handler.snapshot()
    counts = assert_one_message_id_per_reader(postgres_database, received, readers)
    # Extra copies (same Message-ID) only where a worker died with the outcome unknown.
    assert len(received) - readers <= counts["uncertain_total"]
    assert counts["uncertain_total"] > 0, "no kill landed while deliveries were claimed"
