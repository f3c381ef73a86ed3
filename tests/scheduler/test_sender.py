"""The sender against a real SMTP server: what a reader receives, and when nothing is sent."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import select, update

from newsletter.db import Database, utcnow
from newsletter.errors import TemplateError
from newsletter.settings import Settings
from scheduler.deliveries import (
    ClaimedDelivery,
    Delivery,
    Recipient,
    State,
    delivery_counts,
    enqueue,
    enqueue_one,
    message_id_for,
    retry_failed,
)
from scheduler.worker import run_worker
from subscribers.models import Status, StatusChange, Subscriber
from tests.conftest import SmtpServer
from tests.scheduler.delivery_helpers import (
    FAST,
    PipeliningHandler,
    add_readers,
    make_render,
    message_id_of,
    reader_address,
)

MESSAGE = "campaign:vitamin-k2"


def send_all(settings: Settings, database: Database, **options: object) -> dict[str, int]:
    report = run_worker(
        settings,
        database,
        make_render(),
        stop_event=threading.Event(),
        options=replace(FAST, **options),  # type: ignore[arg-type]
    )
    return report.counts


def test_every_confirmed_reader_gets_one_message_with_the_rows_message_id(
    database: Database, relay: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    ids = add_readers(database, 40)
    add_readers(database, 5, status=Status.PENDING, start=100)
    assert enqueue(database, MESSAGE, batch_size=7) == 40

    counts = send_all(settings_for(database, relay.url), database)

    assert counts.get("sent") == 40
    messages = relay.messages
    assert sorted(m.rcpt_tos[0] for m in messages) == sorted(reader_address(n) for n in range(40))
    with database.session() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        assert [row.subscriber_id for row in rows] == ids
        expected = {
            reader_address(n): message_id_for(row.id, MESSAGE, row.subscriber_id, "example.org")
            for n, row in enumerate(rows)
        }
        assert all(row.state == State.SENT and row.sent_at for row in rows)
        assert delivery_counts(session, MESSAGE) | {"total": 0} == {
            "queued": 0,
            "claimed": 0,
            "sent": 40,
            "failed": 0,
            "bounced": 0,
            "skipped": 0,
            "uncertain": 0,
            "total": 0,
            "uncertain_total": 0,
        }
    assert {m.rcpt_tos[0]: message_id_of(m.raw) for m in messages} == expected
    assert all(m.mail_from == "news@example.org" for m in messages)
    if isinstance(relay.handler, PipeliningHandler):  # messages went with the next envelope
        assert relay.handler.messages_ahead > 0


def test_enqueueing_again_creates_nothing_and_resends_nothing(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, 10)
    assert enqueue(database, MESSAGE) == 10
    send_all(settings_for(database, smtp_server.url), database)
    add_readers(database, 3, start=10)

    assert enqueue(database, MESSAGE, batch_size=4) == 3
    send_all(settings_for(database, smtp_server.url), database)

    assert len(smtp_server.messages) == 13
    assert len({m.rcpt_tos[0] for m in smtp_server.messages}) == 13


def test_a_segment_narrows_the_readers(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    ids = add_readers(database, 20)
    chosen = set(ids[::3])
    assert enqueue(database, MESSAGE, segment=lambda: Subscriber.id.in_(chosen), batch_size=3) == 7


def test_a_reader_who_unsubscribes_mid_campaign_gets_nothing_more(
    database: Database, relay: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    ids = add_readers(database, 300)
    enqueue(database, MESSAGE)
    stop = threading.Event()
    # 200 a second: the unsubscribe below has 0.75 s to commit before reader 200's turn.
    settings = settings_for(database, relay.url, send_rate=200, send_concurrency=2)
    worker = threading.Thread(
        target=run_worker,
        args=(settings, database, make_render()),
        kwargs={"stop_event": stop, "options": FAST},
    )
    worker.start()
    relay.wait_for(lambda messages: len(messages) >= 50)
    # The last readers' deliveries are claimed (queued in the worker) by now: the status is
    # read again right before SMTP, so the change still stops them.
    late = ids[-100:]
    with database.session() as session:
        session.execute(
            update(Subscriber).where(Subscriber.id.in_(late)).values(status=Status.UNSUBSCRIBED)
        )
    unsubscribed_at = len(relay.messages)
    worker.join(timeout=60)
    assert not worker.is_alive()

    received = {m.rcpt_tos[0] for m in relay.messages}
    late_addresses = {reader_address(n) for n in range(200, 300)}
    assert not received & late_addresses
    assert unsubscribed_at < 200
    with database.session() as session:
        counts = delivery_counts(session, MESSAGE)
    assert counts["skipped"] == 100
    assert counts["sent"] == 200


def test_erased_and_bounced_readers_are_skipped(
    database: Database, relay: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    ids = add_readers(database, 4)
    enqueue(database, MESSAGE)
    with database.session() as session:
        session.execute(update(Subscriber).where(Subscriber.id == ids[0]).values(status="bounced"))
        session.delete(session.get(Subscriber, ids[1]))

    send_all(settings_for(database, relay.url), database)

    assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
        reader_address(2),
        reader_address(3),
    ]
    with database.session() as session:
        counts = delivery_counts(session, MESSAGE)
    assert (counts["sent"], counts["skipped"]) == (2, 2)


def test_the_rate_limit_holds(
    sqlite_database: Database, relay: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    add_readers(sqlite_database, 60)
    enqueue(sqlite_database, MESSAGE)
    settings = settings_for(sqlite_database, relay.url, send_rate=40, send_concurrency=4)

    started = time.monotonic()
    send_all(settings, sqlite_database)
    elapsed = time.monotonic() - started

    assert len(relay.messages) == 60
    # 60 messages at 40 a second take at least 59 intervals of 25 ms.
    assert elapsed >= 59 / 40


def test_a_system_email_is_one_delivery_per_reader(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    (reader,) = add_readers(database, 1, status=Status.PENDING)
    with database.session() as session:
        enqueue_one(session, "system:confirmation", reader)
        enqueue_one(session, "system:confirmation", reader)

    send_all(settings_for(database, smtp_server.url), database)

    assert [m.rcpt_tos for m in smtp_server.messages] == [[reader_address(0)]]


def test_a_recipient_refused_with_5xx_bounces_and_failed_deliveries_can_be_retried(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    ids = add_readers(database, 3)
    enqueue(database, MESSAGE)
    refuse = {reader_address(0)}

    original = smtp_server.handler.__class__

    class Refusing(original):  # type: ignore[misc,valid-type]
        async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            if address in refuse:
                return "550 5.1.1 No such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    smtp_server.handler.__class__ = Refusing
    send_all(settings_for(database, smtp_server.url), database)

    with database.session() as session:
        counts = delivery_counts(session, MESSAGE)
        assert (counts["sent"], counts["bounced"]) == (2, 1)
        reader = session.get(Subscriber, ids[0])
        assert reader is not None and reader.status == Status.BOUNCED
        change = session.scalars(
            select(StatusChange).where(StatusChange.subscriber_id == ids[0])
        ).one()
        assert (change.old_status, change.new_status, change.source) == (
            "confirmed",
            "bounced",
            "bounce",
        )
        # A failed delivery (4xx until the last attempt) goes out again on retry_failed; a
        # bounced one does not.
        session.execute(
            update(Delivery).where(Delivery.subscriber_id == ids[1]).values(state="failed")
        )
        assert retry_failed(session, MESSAGE) == 1
    send_all(settings_for(database, smtp_server.url), database)
    assert len(smtp_server.to(reader_address(1))) == 2
    assert smtp_server.to(reader_address(0)) == []


def test_4xx_is_retried_with_backoff_then_failed_at_the_limit(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, 2)
    enqueue(database, MESSAGE)
    original = smtp_server.handler.__class__

    class Busy(original):  # type: ignore[misc,valid-type]
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            if reader_address(0) in envelope.rcpt_tos:
                return "451 4.3.0 Busy"
            return await super().handle_DATA(server, session, envelope)

    smtp_server.handler.__class__ = Busy
    before = utcnow()
    send_all(settings_for(database, smtp_server.url), database, max_attempts=4)

    with database.session() as session:
        rows = {r.subscriber_id: r for r in session.scalars(select(Delivery))}
        failed = [r for r in rows.values() if r.state == State.FAILED]
        assert len(failed) == 1 and failed[0].attempts == 4
        assert "451" in (failed[0].last_error or "")
        assert failed[0].next_attempt_at > before
        assert delivery_counts(session, MESSAGE)["sent"] == 1


@pytest.mark.parametrize("count", [0])
def test_delivery_counts_of_an_unknown_message_are_all_zero(database: Database, count: int) -> None:
    with database.session() as session:
        counts = delivery_counts(session, "campaign:none")
    assert set(counts.values()) == {count}
    assert {"queued", "sent", "failed", "bounced", "skipped", "uncertain"} <= counts.keys()


def test_stopping_gives_back_what_was_not_tried_and_a_restart_finishes_the_campaign(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, 300)
    enqueue(database, MESSAGE)
    settings = settings_for(database, smtp_server.url, send_rate=200, send_concurrency=2)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker,
        args=(settings, database, make_render()),
        kwargs={"stop_event": stop, "options": replace(FAST, until_idle=False)},
    )
    worker.start()
    smtp_server.wait_for(lambda messages: len(messages) >= 30)
    stop.set()
    worker.join(timeout=30)

    with database.session() as session:
        counts = delivery_counts(session, MESSAGE)
    assert counts["claimed"] == 0
    assert counts["sent"] == len(smtp_server.messages) < 300
    assert counts["queued"] == 300 - counts["sent"]

    send_all(settings_for(database, smtp_server.url), database)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        reader_address(n) for n in range(300)
    )
    with database.session() as session:
        assert delivery_counts(session, MESSAGE)["uncertain_total"] == 0


def test_log_lines_at_info_never_show_an_address(
    database: Database,
    smtp_server,
    settings_for: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = add_readers(database, 3)
    enqueue(database, MESSAGE)
    with database.session() as session:
        session.execute(
            update(Subscriber).where(Subscriber.id == ids[2]).values(status="complained")
        )
    original = smtp_server.handler.__class__

    class Refusing(original):  # type: ignore[misc,valid-type]
        async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            if address == reader_address(0):
                return f"550 5.1.1 <{address}>: Recipient address rejected"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    smtp_server.handler.__class__ = Refusing
    with caplog.at_level("INFO", logger="scheduler"):
        send_all(settings_for(database, smtp_server.url), database)

    lines = [record.getMessage() for record in caplog.records if record.levelno >= 20]
    assert any("event=bounced" in line for line in lines)
    assert any("event=skipped" in line for line in lines)
    assert not [line for line in lines if "@example.com" in line]
    with database.session() as session:
        errors = session.scalars(select(Delivery.last_error)).all()
    assert not [error for error in errors if error and "@example.com" in error]


def test_two_workers_share_a_campaign_without_taking_the_same_delivery(
    database: Database, smtp_server, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, 400)
    enqueue(database, MESSAGE)
    settings = settings_for(database, smtp_server.url, send_concurrency=2)
    reports: list[dict[str, int]] = []

    def work(name: str) -> None:
        options = replace(FAST, name=name)
        report = run_worker(
            settings, database, make_render(), stop_event=threading.Event(), options=options
        )
        reports.append(report.counts)

    workers = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    recipients = [m.rcpt_tos[0] for m in smtp_server.messages]
    assert sorted(recipients) == sorted(reader_address(n) for n in range(400))
    assert sum(report.get("sent", 0) for report in reports) == 400
    with database.session() as session:
        assert delivery_counts(session, MESSAGE)["uncertain_total"] == 0


def test_a_passing_render_fault_is_retried_but_a_broken_template_fails_the_delivery(
    database: Database, relay: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    """A store that is busy for a moment (after a killed worker, SQLite recovers its WAL) must
    not cost a reader the message; a template that cannot render is failed for the marketer."""
    add_readers(database, 6)
    enqueue(database, MESSAGE)
    plain = make_render()
    busy_once: set[str] = set()

    def render(delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        if subscriber.email == reader_address(5):
            raise TemplateError("article.md:3: 'reader' has no attribute 'nmae'")
        if subscriber.email not in busy_once:
            busy_once.add(subscriber.email)
            raise sqlite3.OperationalError("database is locked")
        return plain(delivery, subscriber)

    report = run_worker(
        settings_for(database, relay.url),
        database,
        render,
        stop_event=threading.Event(),
        options=FAST,
    )

    assert report.counts.get("sent") == 5 and report.counts.get("failed") == 1
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == [reader_address(n) for n in range(5)]
    with database.session() as session:
        failed = session.scalars(select(Delivery).where(Delivery.state == State.FAILED)).one()
        assert failed.last_error is not None and "nmae" in failed.last_error


def test_a_worker_process_collects_garbage_rarely_and_leaves_its_start_up_objects_alone() -> None:
    # In a process of its own: the test process's collector is not the one under test.
    script = (
        "import gc, sys\n"
        "from scheduler.worker import GC_THRESHOLDS, SWITCH_INTERVAL, tune_interpreter\n"
        "before = gc.get_freeze_count()\n"
        "tune_interpreter()\n"
        "print(gc.get_threshold() == GC_THRESHOLDS, gc.get_freeze_count() > before,\n"
        "      abs(sys.getswitchinterval() - SWITCH_INTERVAL) < 1e-6, GC_THRESHOLDS[0] > 700)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == ["True", "True", "True", "True"]
