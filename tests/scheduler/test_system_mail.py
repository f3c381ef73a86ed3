"""System emails through the deliveries outbox: the confirmation is a row committed with the
signup, so a process killed at any moment after the commit loses nothing; confirmed readers
enter the welcome sequence, unsubscribed ones leave it, all over a real SMTP server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from campaigns.sequence import load_sequence
from newsletter.db import Database, utcnow
from newsletter.settings import Settings
from scheduler.deliveries import Delivery, State
from scheduler.sequences import Enrolment, enqueue_due_steps, sequence_status
from scheduler.system_mail import OutboxEvents, message_render
from scheduler.worker import WorkerOptions, run_worker
from subscribers import signup as flow
from subscribers.models import Subscriber
from tests.conftest import SmtpServer
from tests.subscribers.conftest import links_in

ROOT = Path(__file__).resolve().parents[2]
EVENTS = OutboxEvents()


def sign_up(database: Database, email: str, now: object = None) -> int:
    """A signup and its confirmation request, in one transaction, as the web route does."""
    with database.session() as session:
        outcome = flow.signup(session, flow.SignupRequest(email=email), now=now)  # type: ignore[arg-type]
        assert outcome.subscriber_id is not None
        if outcome.send_confirmation:
            EVENTS.confirmation_requested(session, outcome.subscriber_id)
        return outcome.subscriber_id


def messages_of(database: Database, subscriber_id: int) -> dict[str, str]:
    with database.session() as session:
        rows = session.execute(
            select(Delivery.message, Delivery.state).where(Delivery.subscriber_id == subscriber_id)
        ).all()
    return dict(rows)  # type: ignore[arg-type]


def send_all(settings: Settings, database: Database) -> None:
    render = message_render(settings, database.secret_key(settings))
    options = WorkerOptions(until_idle=True, poll_interval=0.05, lease=timedelta(seconds=2))
    run_worker(settings, database, render, stop_event=threading.Event(), options=options)


def test_each_confirmation_the_store_allows_gets_its_own_key(sqlite_database: Database) -> None:
    start = utcnow()
    reader = sign_up(sqlite_database, "again@example.org", start)
    sign_up(sqlite_database, "again@example.org", start + timedelta(minutes=5))  # rate-limited
    sign_up(sqlite_database, "again@example.org", start + timedelta(minutes=11))

    assert messages_of(sqlite_database, reader) == {
        "system:confirmation:1": State.QUEUED,
        "system:confirmation:2": State.QUEUED,
    }


def test_a_signup_that_rolls_back_queues_no_confirmation(sqlite_database: Database) -> None:
    with pytest.raises(RuntimeError), sqlite_database.session() as session:
        outcome = flow.signup(session, flow.SignupRequest(email="gone@example.org"))
        assert outcome.subscriber_id is not None
        EVENTS.confirmation_requested(session, outcome.subscriber_id)
        raise RuntimeError("the request failed after the signup")
    with sqlite_database.session() as session:
        assert session.scalars(select(Delivery)).all() == []


KILLED_WORKER = """
import sys, threading, time
from datetime import timedelta
from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.worker import WorkerOptions, run_worker

url, smtp_url, marker = sys.argv[1:4]
settings = Settings(database_url=url, smtp_url=smtp_url, secret_key="k",
                    sender="News <news@example.org>")

def render(delivery, reader):
    open(marker, "w").write(delivery.message)  # claimed: now kill me before SMTP
    time.sleep(120)
    raise SystemExit

options = WorkerOptions(lease=timedelta(seconds=1), poll_interval=0.05)
run_worker(settings, Database(url), render, stop_event=threading.Event(), options=options)
"""


def test_a_confirmation_whose_worker_is_killed_before_sending_is_sent_after_restart(
    database: Database,
    smtp_server: SmtpServer,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    settings = make_settings(database_url=database.url, smtp_url=smtp_server.url)
    sign_up(database, "killed@example.org")
    marker = tmp_path / "claimed"
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, database.url, smtp_server.url, str(marker)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the worker never claimed the confirmation"
            assert worker.poll() is None, "the worker ended early"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert marker.read_text() == "system:confirmation:1"
    assert smtp_server.messages == []

    send_all(settings, database)  # a new worker, once the dead one's lease ran out

    [mail] = smtp_server.to("killed@example.org")
    assert links_in(mail, "/confirm/")
    assert messages_of(database, reader_id(database, "killed@example.org")) == {
        "system:confirmation:1": State.SENT
    }


def reader_id(database: Database, email: str) -> int:
    with database.session() as session:
        found = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    assert found is not None
    return found


def test_confirmed_readers_get_the_welcome_then_the_article_and_one_who_left_gets_nothing(
    database: Database, smtp_server: SmtpServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=database.url, smtp_url=smtp_server.url)
    readers = {email: sign_up(database, email) for email in ("stay@example.org", "go@example.org")}
    for reader in readers.values():
        with database.session() as session:
            key = session.get(Subscriber, reader).key  # type: ignore[union-attr]
            _subscriber, newly = flow.confirm(session, key)
            assert newly
            EVENTS.confirmed(session, reader)
    send_all(settings, database)
    for email in readers:
        subjects = [str(mail.message["Subject"]) for mail in smtp_server.to(email)]
        assert len(subjects) == 2, subjects  # the confirmation and the welcome with the report
        assert [bool(links_in(mail, "/report/")) for mail in smtp_server.to(email)].count(True) == 1

    with database.session() as session:
        key = session.get(Subscriber, readers["go@example.org"]).key  # type: ignore[union-attr]
        flow.unsubscribe(session, key, source="test")
        EVENTS.unsubscribed(session, readers["go@example.org"])
    # A week passes: every time the sequence knows moves back seven days.
    with database.session() as session:
        for delivery in session.scalars(select(Delivery).where(Delivery.sent_at.is_not(None))):
            delivery.sent_at = delivery.sent_at - timedelta(days=7)  # type: ignore[operator]
        for enrolment in session.scalars(select(Enrolment)):
            enrolment.enrolled_at -= timedelta(days=7)
            enrolment.anchor_at -= timedelta(days=7)

    assert enqueue_due_steps(database) == 1
    send_all(settings, database)

    assert len(smtp_server.to("stay@example.org")) == 3
    assert len(smtp_server.to("go@example.org")) == 2
    with database.session() as session:
        status = sequence_status(session, load_sequence("welcome"))
    assert status["steps"]["welcome-report"]["sent"] == 2
    assert status["steps"]["vitamin-k2"]["sent"] == 1
    assert status["steps"]["vitamin-k2"]["left"] == 1
