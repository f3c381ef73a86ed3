"""SIGKILL the worker at 20 random moments of a 5,000-reader campaign, restarting it each time
(on a SQLite file, then on PostgreSQL).

What the design promises, and this test holds it to: every reader gets the message, and no reader
gets two *different* Message-IDs for it. What it allows: a worker killed between the server's 250
and the commit of ``sent`` leaves a row whose outcome is unknown; the next worker resends it with
the *same* Message-ID (the reader's mail program shows one message), and counts it in
``uncertain_total``. So the server's log may hold more copies than readers, never more than that.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.db import Database
from scheduler.deliveries import Delivery, delivery_counts, enqueue, message_id_for
from tests.conftest import SmtpServer
from tests.scheduler.delivery_helpers import (
    SENDER,
    PipeliningHandler,
    add_readers,
    message_id_of,
    reader_address,
)

MESSAGE = "campaign:vitamin-k2-bone-health"  # rendered for real by the worker
READERS = 5000
KILLS = 20


def start_worker(env: dict[str, str], cwd: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "worker",
            "--lease",
            "1",
            "--poll-interval",
            "0.05",
            *extra,
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# SQLite here; PostgreSQL's crash test runs four workers at once in test_fleet.py.
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigkill_at_20_random_moments_loses_nothing_and_never_sends_two_copies(
    database: Database, pipelining_server: SmtpServer, tmp_path: Path
) -> None:
    smtp_server = pipelining_server  # a relay as production has: one round trip a message
    add_readers(database, READERS)
    assert enqueue(database, MESSAGE) == READERS
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER")},
        "NEWSLETTER_DATABASE_URL": database.url,
        "NEWSLETTER_SMTP_URL": smtp_server.url,
        "NEWSLETTER_FROM": SENDER,
        "NEWSLETTER_SECRET_KEY": "crash-test",
        "NEWSLETTER_SEND_RATE": "600",
        "NEWSLETTER_SEND_CONCURRENCY": "4",
    }
    rng = random.Random(20)
    for _ in range(KILLS):
        before = len(smtp_server.messages)
        worker = start_worker(env, tmp_path)
        # A random moment: sometimes during start-up, mostly while sending (up to 150 more).
        target = before + rng.choice([0, rng.randint(1, 150)])
        deadline = time.monotonic() + 15
        while len(smtp_server.messages) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert len({m.rcpt_tos[0] for m in smtp_server.messages}) < READERS, "killed too late"

    final = start_worker(env, tmp_path, "--until-idle")
    assert final.wait(timeout=120) == 0

    copies: dict[str, list[str]] = defaultdict(list)
    for mail in smtp_server.messages:
        copies[mail.rcpt_tos[0]].append(message_id_of(mail.raw))
    with database.session() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        counts = delivery_counts(session, MESSAGE)

    # Every reader has the message, each under one Message-ID: the one derived from its row.
    for n, row in enumerate(rows):
        expected = message_id_for(row.id, MESSAGE, row.subscriber_id, "example.org")
        assert set(copies[reader_address(n)]) == {expected}, (
            reader_address(n),
            row.state,
            row.attempts,
            row.uncertain_count,
            row.last_error,
        )
    # The counts match the server's log: one sent per reader, and the extra copies the server
    # took are fewer than the outcomes the workers could not know.
    assert counts["sent"] == len(copies) == READERS
    assert counts["queued"] == counts["claimed"] == counts["uncertain"] == counts["failed"] == 0
    extra_copies = len(smtp_server.messages) - READERS
    assert extra_copies <= counts["uncertain_total"]
    assert counts["uncertain_total"] > 0, "no kill landed while deliveries were claimed"
    # The kills landed on a pipelining sender: messages went out with the next envelope.
    assert isinstance(smtp_server.handler, PipeliningHandler)
    assert smtp_server.handler.messages_ahead > 0
