"""A worker sends only while its leases hold. When its main thread stalls past the lease (here:
another connection holds the store's write lock, so leases can be neither renewed nor outcomes
recorded), another worker may take its rows and send them: so it sends none of them until it has
renewed its leases again, and then every reader still gets one copy."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.deliveries import delivery_counts, enqueue
from scheduler.worker import run_worker
from tests.conftest import SmtpServer, serving
from tests.scheduler.delivery_helpers import (
    FAST,
    SlowHandler,
    add_readers,
    make_render,
    reader_address,
)

MESSAGE = "campaign:leases"
READERS = 100
LEASE = 1.0


def test_a_worker_whose_leases_ran_out_sends_nothing_until_it_has_renewed_them(
    sqlite_database: Database, settings_for: Callable[..., Settings]
) -> None:
    # Each message taken after 50 ms: the worker claims faster than it sends, so it holds
    # many rows under its leases while it sends.
    with serving(SlowHandler(delay=0.05)) as smtp_server:
        send_through_a_stall(sqlite_database, smtp_server, settings_for)


def send_through_a_stall(
    database: Database, smtp_server: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, READERS)
    enqueue(database, MESSAGE)
    # One connection to a slow server: about twenty messages a second, and every row claimed
    # within the first second (claims grow while the ones before them are sent).
    settings = settings_for(database, smtp_server.url, send_concurrency=1)
    options = replace(FAST, lease=timedelta(seconds=LEASE))
    worker = threading.Thread(
        target=run_worker,
        args=(settings, database, make_render()),
        kwargs={"stop_event": threading.Event(), "options": options},
        daemon=True,
    )
    worker.start()
    smtp_server.wait_for(lambda messages: len(messages) >= 10)

    lock = sqlite3.connect(str(database.engine.url.database), timeout=10)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        time.sleep(LEASE + 0.5)  # the leases renewed last ran out; what was under way landed
        sent_when_leases_ran_out = len(smtp_server.messages)
        time.sleep(1.5)
        sent_before_the_stall_ended = len(smtp_server.messages)
    finally:
        lock.rollback()
        lock.close()
    worker.join(timeout=60)

    assert sent_before_the_stall_ended == sent_when_leases_ran_out
    assert sent_when_leases_ran_out < READERS
    copies = Counter(address for mail in smtp_server.messages for address in mail.rcpt_tos)
    assert copies == Counter(reader_address(n) for n in range(READERS))
    with database.session() as session:
        assert delivery_counts(session, MESSAGE)["sent"] == READERS
