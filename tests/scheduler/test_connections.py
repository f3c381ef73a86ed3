"""One sender thread drives every SMTP connection of a worker: the connections really work at
once, one that falls silent holds up neither the others nor its own reader for good, and one the
relay will not open holds up no other."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.deliveries import State, delivery_counts, enqueue
from scheduler.worker import run_worker
from tests.conftest import RecordingHandler, SmtpServer, serving
from tests.scheduler.delivery_helpers import (
    FAST,
    Pipelining,
    SlowHandler,
    add_readers,
    make_render,
    message_id_of,
    reader_address,
)

MESSAGE = "campaign:lanes"


@dataclass
class PipeliningSlowHandler(Pipelining, SlowHandler):
    pass


@dataclass
class FallsSilentHandler(Pipelining, RecordingHandler):
    """Takes one reader's first message and then never answers on that connection."""

    silent_for: str = reader_address(3)
    fell_silent: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.silent_for in envelope.rcpt_tos and not self.fell_silent:
            self.fell_silent.append(message_id_of(envelope.original_content or b""))
            await asyncio.sleep(30)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(params=["pipelining", "one command at a time"])
def slow_server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    handler = PipeliningSlowHandler() if request.param == "pipelining" else SlowHandler()
    with serving(handler) as server:
        yield server


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_four_connections_carry_four_messages_at_once(
    database: Database, slow_server: SmtpServer, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, 16)
    enqueue(database, MESSAGE)
    settings = settings_for(database, slow_server.url, send_concurrency=4)

    run_worker(settings, database, make_render(), stop_event=threading.Event(), options=FAST)

    handler = slow_server.handler
    assert isinstance(handler, SlowHandler)
    assert len(slow_server.messages) == 16
    assert handler.most_at_once == 4  # every connection was busy with a message at one moment


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_connection_that_falls_silent_holds_up_no_one_and_its_reader_gets_the_message(
    database: Database, settings_for: Callable[..., Settings]
) -> None:
    add_readers(database, 40)
    enqueue(database, MESSAGE)
    handler = FallsSilentHandler()
    with serving(handler) as server:
        settings = settings_for(database, server.url, send_concurrency=2)
        report = run_worker(
            settings,
            database,
            make_render(),
            stop_event=threading.Event(),
            # Long enough for the healthy connection's replies on a busy machine.
            options=replace(FAST, smtp_timeout=2.0),
        )
        received = {
            address: [message_id_of(mail.raw) for mail in server.to(address)]
            for address in map(reader_address, range(40))
        }
        last_two = [mail.rcpt_tos[0] for mail in server.messages[-2:]]

    # The silent connection's message may have been taken: it is resent with the same
    # Message-ID, counted uncertain, and everyone else's went out meanwhile.
    assert handler.fell_silent
    assert received[handler.silent_for] == handler.fell_silent
    # The others did not wait for its timeout: only the reader whose envelope went out with
    # the silent message, on the same connection, came after it.
    assert handler.silent_for in last_two
    assert all(len(ids) == 1 for address, ids in received.items() if address != handler.silent_for)
    assert report.counts.get("uncertain") == 1
    with database.session() as session:
        counts = delivery_counts(session, MESSAGE)
    assert counts[State.SENT.value] == 40


@dataclass
class SessionLimit:
    """How many sessions a relay takes at once from this client, and what it turned away."""

    most: int
    open: int = 0
    refused: int = 0


class LimitedSMTP(SMTP):
    """Greets with 421 and hangs up once ``limit.most`` sessions are open, as relays do."""

    limit: SessionLimit
    turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.limit.open >= self.limit.most:
            self.limit.refused += 1
            self.turned_away = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections from your host\r\n")
            transport.close()
            return
        self.limit.open += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.turned_away:
            return
        self.limit.open -= 1
        super().connection_lost(error)


@contextmanager
def relay_taking(most: int) -> Iterator[tuple[SmtpServer, SessionLimit]]:
    limit = SessionLimit(most)

    def limited(handler: Any, **options: Any) -> SMTP:
        session = LimitedSMTP(handler, **options)
        session.limit = limit
        return session

    with serving(RecordingHandler(), limited) as server:
        yield server, limit


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_connections_the_relay_refuses_hold_up_none_of_those_it_takes(
    database: Database, settings_for: Callable[..., Settings]
) -> None:
    readers = 60
    add_readers(database, readers)
    enqueue(database, MESSAGE)
    stop = threading.Event()
    with relay_taking(2) as (server, limit):
        # Four connections configured, two allowed: the relay says 421 to the other two.
        settings = settings_for(database, server.url, send_concurrency=4)
        worker = threading.Thread(
            target=run_worker,
            args=(settings, database, make_render()),
            kwargs={"stop_event": stop, "options": FAST},
            daemon=True,
        )
        started = time.monotonic()
        worker.start()
        worker.join(timeout=20)
        stop.set()
        took = time.monotonic() - started

    assert not worker.is_alive() and took < 10
    assert limit.refused >= 2
    copies = Counter(address for mail in server.messages for address in mail.rcpt_tos)
    assert copies == Counter(reader_address(n) for n in range(readers))
    with database.session() as session:
        assert delivery_counts(session, MESSAGE)[State.SENT] == readers


class SlowGreetingSMTP(SMTP):
    """Greets half a second after each connection, as a distant relay with TLS and a login
    takes several round trips before the first message."""

    async def _handle_client(self) -> None:
        await asyncio.sleep(GREETING_DELAY)
        await super()._handle_client()


GREETING_DELAY = 0.5


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_connections_open_at_once_while_the_others_send(
    database: Database, settings_for: Callable[..., Settings]
) -> None:
    readers = 8
    add_readers(database, readers)
    enqueue(database, MESSAGE)

    with serving(RecordingHandler(), SlowGreetingSMTP) as server:
        settings = settings_for(database, server.url, send_concurrency=4)
        started = time.monotonic()
        run_worker(settings, database, make_render(), stop_event=threading.Event(), options=FAST)
        took = time.monotonic() - started

    # One after the other, four greetings alone would take 2 s.
    assert took < 4 * GREETING_DELAY * 0.7
    copies = Counter(address for mail in server.messages for address in mail.rcpt_tos)
    assert copies == Counter(reader_address(n) for n in range(readers))
