"""The worker: claims due deliveries, renders, sends, and records each outcome.

The whole pipeline, top to bottom (compare listmonk's ``manager.go``, but with per-reader state):

1. ``Worker.run`` (the main thread) says it is alive, renews its leases, sets its share of the
   fleet's rate (``send_rate`` divided by the live workers), claims a batch of due deliveries
   with a lease, loads their readers, and queues them for the sender thread.
2. ``Sender.run`` (one thread driving ``send_concurrency`` reused SMTP connections) gives each
   idle connection the next delivery: renders it, takes a slot of the rate limit, re-reads the
   reader's status (the last word before SMTP: an unsubscribe committed a moment ago still stops
   the message) and writes it, then acts on the replies of whichever connection answers first,
   reconnecting when one drops. With a PIPELINING server each message goes out with the next
   reader's envelope: one round trip each.
3. ``Worker.record`` (the main thread again) commits the outcomes a few dozen at a time, in
   transactions of their own: ``sent`` only ever after the server's 250.

Crash windows, and why none loses a message or sends two different copies: killed after the
claim and before SMTP, the row's lease expires and it is resent (counted ``uncertain``); killed
between the server's 250 and the commit of ``sent``, the reader may get the same message twice,
with the same Message-ID (also counted ``uncertain``); the design accepts that, never the loss.
Stalled past its lease (the database locked, the process paused), a worker's rows may be taken
by another worker: its sender writes no message once the leases it last renewed have run out
(``Sender.lease_ran_out``), and gives those rows back instead.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import logging
import math
import os
import queue
import random
import select
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from newsletter.db import Database, utcnow
from newsletter.errors import DeliveryError, NewsletterError
from newsletter.settings import Settings
from scheduler import deliveries as outbox
from scheduler.deliveries import ClaimedDelivery, Recipient, State
from scheduler.smtp import (
    ConnectFailed,
    ConnectionDropped,
    Envelope,
    Exchanged,
    MessageRefused,
    RecipientRefused,
    SmtpConnection,
    prepare_data,
)
from subscribers.models import SUPPRESSED_STATUSES

log = logging.getLogger("scheduler.worker")

# The interpreter's switch interval for a worker process (``sys.setswitchinterval``): a sender
# thread woken by an SMTP reply waits at most this long for the GIL held by another thread.
# Measured with bench/send.py: 0.1 ms sends about a quarter more over one connection than 0.5 ms,
# at the same CPU time per message (the default 5 ms starves the senders).
SWITCH_INTERVAL = 0.0001

# The cyclic garbage collector's thresholds in a worker process (``gc.set_threshold``). With the
# defaults (700, 10, 10) it ran about 220 times in 10,000 messages, full passes over every object
# of the process among them: 8 to 18 µs of GIL time a message (bench/send.py, the article over
# sixteen connections). Messages make little cyclic garbage: a pass per 10,000 new objects is
# enough, and what the process loaded at start-up is frozen out of the passes (``gc.freeze``).
GC_THRESHOLDS = (10_000, 10, 10)

# How often the main thread looks for outcomes to commit while the sender thread sends.
GATHER_PAUSE = 0.01

# How often the sender looks for exchanges past their deadline (``smtp_timeout``): looking after
# every reply cost a pass over every connection.
DEADLINE_CHECK = 0.05

# How long a connection the relay would not open rests before the next try (``Sender.rest_lane``):
# the first rest, doubled after each refusal in a row up to the last.
FIRST_REST = 0.1
LONGEST_REST = 30.0

# While a connection is being opened (in a helper thread), how often the sender looks whether it
# is done: select() on the other connections cannot see it.
OPENING_POLL = 0.005

# How many times in a row a delivery's connection may drop before its message went out, each
# time sent again at once on whichever connection is free; after that it waits for a retry.
MAX_DROPS = 3

# How much larger each claim after a full one may be than the one before (``Worker.claim``).
CLAIM_RAMP = 4

# The share of a lease kept in hand: the sender stops writing messages this long before the
# leases it last renewed run out (``Worker.leases_until``), allowing for clocks that differ.
LEASE_MARGIN = 0.1
LEASE_RAN_OUT = "not sent: the worker's lease ran out before it could send (it is queued again)"
STOPPED_FIRST = "not sent: the worker stopped before a connection was open (it is queued again)"

# The renderer: one reader's copy of one message, as the bytes of an RFC 5322 message that
# carries ``delivery.message_id`` as its Message-ID.
Render = Callable[[ClaimedDelivery, Recipient], bytes]


def tune_interpreter() -> None:
    """Set this process up to send: the switch interval and the garbage collector above. Call
    it once start-up is over (modules imported, connections made), before sending."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker paces itself; the defaults suit production, tests shorten the times."""

    lease: timedelta = timedelta(seconds=60)  # renewed while alive; a dead worker's rows wait this
    poll_interval: float = 1.0  # seconds between looks for due work when there is none
    batch_size: int = 2000  # most deliveries claimed at once
    max_attempts: int = 8  # tries before a 4xx-refused delivery is failed
    retry_base: float = 60.0  # first backoff after a 4xx, doubled each try, with jitter
    retry_cap: float = 3600.0
    bounce_threshold: int = 1  # recipient 5xx bounces before the reader is marked bounced
    smtp_timeout: float = 30.0
    commit_interval: float = 0.1  # outcomes are committed together at most this often
    until_idle: bool = False  # stop once no delivery is queued, claimed or uncertain
    name: str | None = None


@dataclass
class WorkerReport:
    """What one run of a worker did."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


def run_worker(
    settings: Settings,
    database: Database,
    render: Render,
    *,
    stop_event: threading.Event,
    options: WorkerOptions | None = None,
) -> WorkerReport:
    """Send due deliveries until ``stop_event`` is set (or, with ``until_idle``, none is left).

    ``render(delivery, subscriber) -> bytes`` builds each message; it must put
    ``delivery.message_id`` in the Message-ID header. Mail goes to ``settings.smtp_url``, or to
    the capture inbox on ``settings.capture_port`` when no relay is set.
    """
    return Worker(settings, database, render, stop_event, options or WorkerOptions()).run()


@dataclass
class Outcome:
    """What became of one claimed delivery, waiting to be committed."""

    delivery: ClaimedDelivery
    state: State  # SENT, QUEUED (retry), FAILED, BOUNCED or SKIPPED
    uncertain: int = 0
    error: str | None = None
    at: datetime | None = None  # a retry's next attempt (now when unset)


class RateLimiter:
    """Spaces sends evenly at ``rate`` per second across every thread of this worker."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_slot = time.monotonic()
        self.lock = threading.Lock()

    def set_rate(self, rate: float) -> None:
        with self.lock:
            self.interval = 1.0 / rate

    def ready(self) -> bool:
        """True when a send now would not have to wait."""
        return self.next_slot <= time.monotonic()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(self.next_slot, now)
            self.next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class ReaderStatus:
    """Reads a reader's status outside any transaction: on SQLite it takes no write lock."""

    def __init__(self, url: str) -> None:
        postgres = url.startswith("postgres")
        connect_args: dict[str, Any] = {"autocommit": True} if postgres else {"timeout": 60}
        self.engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        self.sqlite = not postgres
        self.sql = f"SELECT status FROM subscribers WHERE id = {'%s' if postgres else '?'}"
        self.connection: Any = None

    def __call__(self, subscriber_id: int | None) -> str | None:
        """The reader's status, or None when the reader was erased."""
        if subscriber_id is None:
            return None
        if self.connection is None:
            self.connection = self.engine.raw_connection()
            if self.sqlite:
                # Point lookups by id: a small page cache, so memory does not grow with the list.
                self.connection.execute("PRAGMA cache_size = -256")
        cursor = self.connection.cursor()
        try:
            cursor.execute(self.sql, (subscriber_id,))
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else str(row[0])

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.engine.dispose()


def _fields(**values: Any) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items() if value is not None)


class Worker:
    """One worker process's sender: see the module docstring for the pipeline."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        render: Render,
        stop_event: threading.Event,
        options: WorkerOptions,
    ) -> None:
        self.settings = settings
        self.database = database
        self.render = render
        self.stop_event = stop_event
        self.options = options
        self.name = (
            options.name or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.report = WorkerReport(self.name)
        self.smtp_url = settings.smtp_url or f"smtp://127.0.0.1:{settings.capture_port}"
        self.sender = settings.sender_address
        self.domain = self.sender.rpartition("@")[2] or "localhost"
        self.concurrency = settings.send_concurrency
        self.limiter = RateLimiter(settings.send_rate)
        self.rate = settings.send_rate
        self.work: queue.SimpleQueue[ClaimedDelivery | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.in_flight = 0  # claimed and not yet recorded; touched by the main thread only
        self.unrecorded: list[Outcome] = []  # taken from ``results``, commit failed
        self.closing = threading.Event()
        self.next_renewal = 0.0
        # Monotonic time until which no other worker can take the rows this one holds (less the
        # margin): a stalled main thread renews nothing, and then the sender must not send.
        self.leases_until = math.inf
        self.next_claim = 0.0  # monotonic time before which claiming again would find nothing
        self.claim_size = self.first_claim_size()

    # ------------------------------------------------------------ 1. claim (main thread)

    def run(self) -> WorkerReport:
        log.info(
            "event=worker_started %s",
            _fields(worker=self.name, rate=self.rate, connections=self.concurrency),
        )
        # One sender thread drives every connection (see ``Sender``).
        sender = threading.Thread(target=self.send_loop, name="sender", daemon=True)
        sender.start()
        beat_every = min(1.0, self.options.lease.total_seconds() / 3)
        next_beat = 0.0
        try:
            while not self.stop_event.is_set():
                try:
                    if time.monotonic() >= next_beat:
                        self.heartbeat()
                        next_beat = time.monotonic() + beat_every
                    claimed = self.claim() if self.claim_wanted() else 0
                    if self.in_flight:
                        # Outcomes are waited for only when no claim is due (a ramp's next is).
                        wait = 0.0 if self.claim_wanted() else self.options.commit_interval
                        self.record(wait=wait)
                    elif not claimed:
                        if self.options.until_idle and self.nothing_left():
                            break
                        self.stop_event.wait(self.options.poll_interval)
                except DBAPIError as error:
                    # The database went away or stayed locked: outcomes wait in memory (the
                    # rows stay claimed under their lease) until it answers again.
                    log.warning(
                        "event=database_error %s",
                        _fields(worker=self.name, error=repr(str(error)[:200])),
                    )
                    self.stop_event.wait(max(self.options.poll_interval, 1.0))
        finally:
            self.shut_down(sender)
        log.info(
            "event=worker_stopped %s %s", _fields(worker=self.name), _fields(**self.report.counts)
        )
        return self.report

    def batch_size(self) -> int:
        """About half a second of sending at this worker's share of the rate."""
        return max(self.concurrency * 2, min(self.options.batch_size, int(self.rate / 2) + 1))

    def first_claim_size(self) -> int:
        """The claim after a pause: a few messages a connection, so that sending starts at once
        rather than after a whole batch is read (2,000 rows take tens of milliseconds)."""
        return min(self.batch_size(), self.concurrency * 8)

    def heartbeat(self) -> None:
        """Say this worker is alive, take its share of the rate, renew leases a third in."""
        started = time.monotonic()
        renewing = started >= self.next_renewal
        with self.database.session() as session:
            live = outbox.heartbeat(session, self.name, alive_within=timedelta(seconds=5))
            if renewing:
                outbox.renew_leases(session, self.name, self.options.lease)
        if renewing:  # committed: every row held is leased until ``started`` + lease at least
            self.leases_until = started + self.lease_in_hand()
            self.next_renewal = time.monotonic() + self.options.lease.total_seconds() / 3
        rate = self.settings.send_rate / live
        if rate != self.rate:
            self.rate = rate
            self.limiter.set_rate(rate)
            log.info(
                "event=rate_changed %s",
                _fields(worker=self.name, live_workers=live, rate=round(rate, 2)),
            )

    def claim_wanted(self) -> bool:
        """Claim when the queue runs below half the next claim; after a claim that found less
        than it asked for, not again before ``poll_interval``: nothing more was due a moment ago."""
        wanted = min(self.claim_size, self.batch_size()) / 2
        return self.work.qsize() < wanted and time.monotonic() >= self.next_claim

    def claim(self) -> int:
        """Claim the next batch. After a pause the first claim is small and each full one is
        followed by one ``CLAIM_RAMP`` times larger, up to ``batch_size``: a row costs far less
        to read than to send, so the next claim is read while the one before is sent."""
        batch = min(self.claim_size, self.batch_size())
        started = time.monotonic()
        with self.database.session() as session:
            claimed = outbox.claim_due_deliveries(
                session, self.name, batch=batch, lease=self.options.lease, domain=self.domain
            )
        if claimed:
            self.leases_until = min(self.leases_until, started + self.lease_in_hand())
        short = len(claimed) < batch
        self.next_claim = time.monotonic() + self.options.poll_interval if short else 0.0
        self.claim_size = self.first_claim_size() if short else batch * CLAIM_RAMP
        if not claimed:
            return 0
        resent = sum(1 for delivery in claimed if delivery.is_resend)
        log.debug(
            "event=claimed %s", _fields(worker=self.name, count=len(claimed), resent=resent or None)
        )
        for delivery in claimed:
            self.work.put(delivery)
        self.in_flight += len(claimed)
        return len(claimed)

    def lease_in_hand(self) -> float:
        """Seconds of a lease the sender may use."""
        return self.options.lease.total_seconds() * (1 - LEASE_MARGIN)

    def nothing_left(self) -> bool:
        with self.database.session() as session:
            return not outbox.has_pending(session)

    # ------------------------------------------------------------ 2. send (the sender thread)

    def send_loop(self) -> None:
        Sender(self).run()

    def prepare(self, delivery: ClaimedDelivery) -> bytes | Outcome:
        """The ``DATA`` payload of ``delivery``, or its outcome when there is nothing to send."""
        reader = delivery.recipient
        if reader is None:
            return Outcome(delivery, State.SKIPPED, error="reader erased")
        try:
            return prepare_data(self.render(delivery, reader))
        except Exception as error:
            log.warning(
                "event=render_failed %s",
                _fields(
                    delivery=delivery.id,
                    message=delivery.message,
                    subscriber=reader.id,
                    error=repr(error),
                ),
            )
            if isinstance(error, NewsletterError):  # the content or template: fix, retry-failed
                return Outcome(delivery, State.FAILED, error=f"render: {error}")
            # Anything else may pass (the store busy while it recovers from a killed worker's
            # WAL, say): failing the delivery for good would lose the reader's message.
            return self.retry(delivery, 0, f"render: {error!r}")

    def refused(self, delivery: ClaimedDelivery, uncertain: int, error: DeliveryError) -> Outcome:
        """What a refusal (not a drop) makes of a delivery."""
        if isinstance(error, RecipientRefused):
            return Outcome(delivery, State.BOUNCED, uncertain, error.message)
        if isinstance(error, MessageRefused):
            return Outcome(delivery, State.FAILED, uncertain, error.message)
        return self.retry(delivery, uncertain, error.message)

    def retry(
        self, delivery: ClaimedDelivery, uncertain: int, error: str, *, now: bool = False
    ) -> Outcome:
        """A 4xx: queue again after an exponential backoff with jitter, or fail at the limit."""
        attempt = delivery.attempts + 1
        if attempt >= self.options.max_attempts and not now:
            return Outcome(delivery, State.FAILED, uncertain, f"gave up after {attempt}: {error}")
        delay = 0.0
        if not now:
            delay = min(self.options.retry_cap, self.options.retry_base * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
        return Outcome(
            delivery, State.QUEUED, uncertain, error, at=utcnow() + timedelta(seconds=delay)
        )

    # ------------------------------------------------------------ 3. record (main thread)

    def record(self, wait: float) -> None:
        """Commit the outcomes that arrive within ``wait`` seconds, in one transaction.

        If the commit fails, the outcomes are kept for the next call: none is forgotten.
        """
        outcomes, self.unrecorded = self.unrecorded, []
        deadline = time.monotonic() + wait
        # Stop early once every claimed delivery has its outcome: nothing more can come.
        wanted = min(2000, self.in_flight)
        if len(outcomes) < wanted and wait > 0:
            with contextlib.suppress(queue.Empty):  # wait for the first one...
                outcomes.append(self.results.get(timeout=wait))
        self.gather(outcomes, wanted)
        while len(outcomes) < wanted and time.monotonic() < deadline and not self.claim_wanted():
            # ...then let the others gather: waking for each would take the GIL from the
            # sender thread once a message.
            time.sleep(max(0.0, min(GATHER_PAUSE, deadline - time.monotonic())))
            self.gather(outcomes, wanted)
        if outcomes:
            try:
                self.commit(outcomes)
            except BaseException:
                self.unrecorded = outcomes
                raise

    def gather(self, outcomes: list[Outcome], wanted: int) -> None:
        """Add the outcomes already waiting, up to ``wanted`` in all."""
        while len(outcomes) < wanted:
            try:
                outcomes.append(self.results.get_nowait())
            except queue.Empty:
                return

    def commit(self, outcomes: list[Outcome]) -> None:
        sent = [(o.delivery.id, o.uncertain) for o in outcomes if o.state == State.SENT]
        retries = [
            (o.delivery.id, o.uncertain, o.at or utcnow(), o.error or "")
            for o in outcomes
            if o.state == State.QUEUED
        ]
        finals = {
            state: [
                (o.delivery.id, o.uncertain, o.error or "") for o in outcomes if o.state == state
            ]
            for state in (State.FAILED, State.BOUNCED, State.SKIPPED)
        }
        with self.database.session() as session:
            outbox.mark_sent(session, sent, utcnow())
            outbox.mark_retry(session, self.name, retries)
            for state, items in finals.items():
                outbox.mark_final(session, self.name, state, items)
            bounced_readers = [
                o.delivery.subscriber_id
                for o in outcomes
                if o.state == State.BOUNCED and o.delivery.subscriber_id is not None
            ]
            marked = [
                reader
                for reader in bounced_readers
                if outbox.record_bounce(session, reader, self.options.bounce_threshold)
            ]
        self.in_flight -= len(outcomes)
        for outcome in outcomes:
            self.report.add(outcome.state.value if outcome.state != State.QUEUED else "retried")
            if outcome.uncertain:
                self.report.add("uncertain", outcome.uncertain)
            if outcome.state != State.SENT:
                level = logging.INFO if outcome.state == State.SKIPPED else logging.WARNING
                log.log(
                    level,
                    "event=%s %s",
                    outcome.state.value if outcome.state != State.QUEUED else "retry",
                    _fields(
                        worker=self.name,
                        delivery=outcome.delivery.id,
                        message=outcome.delivery.message,
                        subscriber=outcome.delivery.subscriber_id,
                        error=repr(outcome.error),
                    ),
                )
        for reader in marked:
            log.warning("event=reader_bounced %s", _fields(subscriber=reader))

    # ------------------------------------------------------------ stopping

    def shut_down(self, sender: threading.Thread) -> None:
        """Give back what was never tried, let the sender finish what it began, record all."""
        self.closing.set()
        untried: list[int] = []
        while True:
            try:
                item = self.work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                untried.append(item.id)
        self.work.put(None)
        sender.join()
        self.record(wait=0)
        while self.unrecorded or not self.results.empty():
            self.record(wait=0)
        with self.database.session() as session:
            outbox.release(session, self.name, untried)
            outbox.forget_worker(session, self.name)
        self.in_flight -= len(untried)


@dataclass
class Flight:
    """An exchange started on a lane: the held message it finishes, the delivery it begins."""

    held: tuple[ClaimedDelivery, bytes] | None
    starting: tuple[ClaimedDelivery, bytes] | None
    deadline: float = 0.0


class Lane:
    """One SMTP connection of the sender, and the exchange under way on it."""

    def __init__(self, connection: SmtpConnection) -> None:
        self.connection = connection
        self.held: tuple[ClaimedDelivery, bytes] | None = None  # envelope taken, message not sent
        self.flight: Flight | None = None  # written, replies awaited
        self.owed: dict[int, ClaimedDelivery] = {}  # taken from the queue, outcome not yet given
        self.fd = -1  # the connection's socket while an exchange is under way
        self.resting_until = 0.0  # monotonic time before which the relay is not asked again
        self.opening: concurrent.futures.Future[None] | None = None  # being opened meanwhile
        self.rest = FIRST_REST  # the next rest, should the relay refuse this connection again


class Sender:
    """The sender thread: step 2 of the pipeline, every SMTP connection (``Lane``) in one loop.

    One thread drives them all, writing on one connection while the others wait for their
    replies: the renderer is Python, and with a thread a connection the GIL changed hands at
    every socket and database call (bench/send.py, the article email over four connections:
    four threads spent 760–835 µs of CPU a message, against 433 µs for one).

    When the server offers PIPELINING, a delivery's envelope (``MAIL``, ``RCPT``, ``DATA``) goes
    out in the same write as the previous delivery's message, so each message costs one round
    trip: the delivery whose envelope was taken is *held* until the next one comes (or the queue
    is empty, or the rate limit says wait: then it is sent alone at once). Without PIPELINING
    the same exchange goes one command a reply. The reader's status is re-read just before their
    envelope is written, one round trip before their message. Connections are opened in helper
    threads (``opener``) while the others send; one the relay refuses rests a while
    (``rest_lane``). After a drop, a message that cannot have arrived goes again on the next free
    connection (``again``); one that may have arrived is queued again, counted uncertain.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.lanes = [
            Lane(SmtpConnection(worker.smtp_url, timeout=worker.options.smtp_timeout))
            for _ in range(worker.concurrency)
        ]
        self.status = ReaderStatus(worker.database.url)
        # Opens connections while the sender sends on the others: a relay takes several round
        # trips to greet, upgrade to TLS and log in.
        self.opener = concurrent.futures.ThreadPoolExecutor(
            max_workers=worker.concurrency, thread_name_prefix="smtp-open"
        )
        # Taken from the queue and rendered while every lane waited for its server.
        self.ahead: deque[tuple[ClaimedDelivery, bytes | Outcome]] = deque()
        self.stopping = False  # the queue said stop: finish what is under way, take nothing
        self.next_deadline_check = 0.0  # monotonic time of the next look for silent servers
        self.drops: dict[int, int] = {}  # deliveries whose connection dropped: how often in a row

    def run(self) -> None:
        try:
            while not (self.stopping and self.quiet()):
                self.fill_lanes()
                self.await_replies()
        finally:
            self.opener.shutdown(wait=True)
            for lane in self.lanes:
                lane.connection.close()
            self.status.close()

    def quiet(self) -> bool:
        """True when no lane has an exchange under way or a message held, none is rendered."""
        return not self.ahead and all(
            lane.flight is None and lane.held is None for lane in self.lanes
        )

    def fill_lanes(self) -> None:
        """Start an exchange on every lane without one: the next delivery, or the held message
        alone when there is no delivery to send with it now."""
        now = time.monotonic()
        closing = self.worker.closing.is_set()  # then resting lanes too give back what they take
        for lane in self.lanes:
            if lane.opening is not None:
                if not lane.opening.done():
                    continue
                self.opened(lane)
            if lane.flight is not None or (lane.resting_until > now and not closing):
                continue
            taken = self.next_delivery()
            if taken is not None:
                delivery, data = taken
                lane.owed[delivery.id] = delivery
                self.guarded(lane, lambda: self.step(lane, delivery, data))  # noqa: B023
            elif lane.held is not None:
                self.guarded(lane, lambda: self.send_held(lane))  # noqa: B023
        if all(
            lane.flight is not None or lane.opening is not None or lane.resting_until > now
            for lane in self.lanes
        ):
            self.render_ahead()

    def next_delivery(self) -> tuple[ClaimedDelivery, bytes | Outcome] | None:
        """The next delivery to start and its ``DATA``, or None: none queued, no rate slot yet,
        or stopping. Waits for the queue only when nothing is under way."""
        if not self.worker.limiter.ready():
            return None
        if self.ahead:
            return self.ahead.popleft()
        delivery = self.take(block=self.quiet())
        return None if delivery is None else (delivery, self.worker.prepare(delivery))

    def take(self, *, block: bool) -> ClaimedDelivery | None:
        """The next delivery from the queue; None when it is empty or says stop."""
        if self.stopping:
            return None
        try:
            delivery = self.worker.work.get(block=block)
        except queue.Empty:
            return None
        if delivery is None:
            self.stopping = True
        return delivery

    def render_ahead(self) -> None:
        """While every connection waits for its server, render the next deliveries (at most
        one a connection): the CPU work overlaps the round trips instead of following them."""
        while len(self.ahead) < len(self.lanes):
            delivery = self.take(block=False)
            if delivery is None:
                return
            self.ahead.append((delivery, self.worker.prepare(delivery)))

    def await_replies(self) -> None:
        """Act on the replies that arrive before the next rate slot or the next look for
        exchanges past their deadline."""
        # By socket: given the lanes, select() would call each one's fileno(), in Python.
        flying = {lane.fd: lane for lane in self.lanes if lane.flight is not None}
        opening = [lane.opening for lane in self.lanes if lane.opening is not None]
        now = time.monotonic()
        wait = self.worker.limiter.next_slot - now
        if not flying:
            if wait > 0 and (self.ahead or not self.stopping):
                time.sleep(wait)
            elif opening:
                concurrent.futures.wait(
                    opening,
                    timeout=self.worker.options.smtp_timeout,
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
            elif (rest := self.rest_left(now)) > 0 and not self.worker.closing.is_set():
                self.worker.closing.wait(rest)
            return
        timeout = max(0.0, self.next_deadline_check - now)
        if wait > 0 and (self.ahead or not self.worker.work.empty()):
            timeout = min(timeout, wait)
        if opening:
            timeout = min(timeout, OPENING_POLL)
        readable, _, _ = select.select(list(flying), [], [], timeout)
        for fd in readable:
            lane = flying[fd]
            self.guarded(lane, lambda: self.on_readable(lane))  # noqa: B023
        if time.monotonic() >= self.next_deadline_check:
            self.give_up_on_silent(list(flying.values()))
            self.next_deadline_check = time.monotonic() + DEADLINE_CHECK

    def rest_left(self, now: float) -> float:
        """Seconds until a lane may be used: 0 unless every lane rests."""
        return max(0.0, min(lane.resting_until for lane in self.lanes) - now)

    def give_up_on_silent(self, lanes: list[Lane]) -> None:
        """Abandon the exchanges past their deadline that have nothing to read: a reply that
        came while the loop was busy elsewhere (reconnecting another lane, say) still counts."""
        now = time.monotonic()
        late = {
            lane.fd: lane
            for lane in lanes
            if lane.flight is not None and lane.flight.deadline <= now
        }
        if not late:
            return
        answered, _, _ = select.select(list(late), [], [], 0)
        silent = TimeoutError(f"no reply within {self.worker.options.smtp_timeout} s")
        for fd, lane in late.items():
            if fd in answered:
                self.guarded(lane, lambda: self.on_readable(lane))  # noqa: B023
            else:
                self.guarded(lane, lambda: self.land(lane, lane.connection.abandon(silent)))  # noqa: B023

    def guarded(self, lane: Lane, action: Callable[[], None]) -> None:
        """Run ``action``; a bug must not leave a row claimed for good: retry what is owed."""
        try:
            action()
        except Exception as error:
            log.exception("event=send_crashed %s", _fields(deliveries=list(lane.owed) or None))
            lane.connection.close_quietly()
            lane.held = lane.flight = None
            for delivery in list(lane.owed.values()):
                self.give(lane, self.worker.retry(delivery, 0, f"internal error: {error!r}"))

    def give(self, lane: Lane, outcome: Outcome) -> None:
        lane.owed.pop(outcome.delivery.id, None)
        self.drops.pop(outcome.delivery.id, None)
        self.worker.results.put(outcome)

    def again(
        self, lane: Lane, delivery: ClaimedDelivery, data: bytes, error: ConnectionDropped
    ) -> None:
        """Send ``delivery`` again on whichever connection is free first: the connection it was
        on dropped before its message went out whole, so its reader has nothing. After
        ``MAX_DROPS`` such drops in a row it waits for a retry, with backoff."""
        drops = self.drops.get(delivery.id, 0) + 1
        if drops > MAX_DROPS:
            self.give(lane, self.worker.retry(delivery, 0, error.message))
            return
        self.drops[delivery.id] = drops
        lane.owed.pop(delivery.id, None)
        self.ahead.appendleft((delivery, data))

    def step(self, lane: Lane, delivery: ClaimedDelivery, data: bytes | Outcome) -> None:
        worker = self.worker
        if isinstance(data, Outcome):
            self.give(lane, data)
            return
        if self.lease_ran_out():
            self.give_back(lane, delivery)
            return
        connection = lane.connection
        if lane.held is None and not connection.is_open:
            if worker.closing.is_set():  # stopping: no new connection, it waits for the next start
                self.give(lane, worker.retry(delivery, 0, STOPPED_FIRST, now=True))
                return
            # Opened meanwhile; the delivery goes on this lane or another, whichever comes first.
            lane.opening = self.opener.submit(connection.open)
            lane.owed.pop(delivery.id, None)
            self.ahead.appendleft((delivery, data))
            return
        worker.limiter.wait()  # a slot is ready: this takes it without waiting
        skipped = self.suppressed(delivery)
        if skipped is not None:
            self.give(lane, skipped)
            return
        assert delivery.recipient is not None  # prepare() skipped an erased reader
        held, lane.held = lane.held, None
        envelope = Envelope.of(worker.sender, delivery.recipient.email, data)
        self.launch(lane, Flight(held, (delivery, data)), held[1] if held else None, envelope)

    def send_held(self, lane: Lane) -> None:
        if self.lease_ran_out():
            self.give_back(lane, None)
            return
        held, lane.held = lane.held, None
        if held is not None:
            self.launch(lane, Flight(held, None), held[1], None)

    def lease_ran_out(self) -> bool:
        """True once another worker may have taken this worker's rows: its main thread has not
        renewed their leases in time (stalled, or the database stopped answering)."""
        return time.monotonic() >= self.worker.leases_until

    def give_back(self, lane: Lane, delivery: ClaimedDelivery | None) -> None:
        """Send neither ``delivery`` nor the lane's held message, whose leases ran out (another
        worker may be sending them): the held message's transaction is dropped unsent, and both
        go back to the queue, due at once, if this worker still holds them when it records."""
        held, lane.held = lane.held, None
        if held is not None:
            lane.connection.close_quietly()
        for item in (held[0] if held else None, delivery):
            if item is not None:
                self.give(lane, self.worker.retry(item, 0, LEASE_RAN_OUT, now=True))

    def launch(
        self, lane: Lane, flight: Flight, message: bytes | None, envelope: Envelope | None
    ) -> None:
        flight.deadline = time.monotonic() + self.worker.options.smtp_timeout
        lane.flight = flight
        outcome = lane.connection.start(message, envelope)
        if outcome is not None:  # the write failed
            self.land(lane, outcome)
        else:
            lane.fd = lane.connection.fileno()

    def on_readable(self, lane: Lane) -> None:
        outcome = lane.connection.poll()
        if outcome is not None:
            self.land(lane, outcome)
        elif lane.flight is not None:  # a reply came (one command at a time): wait afresh
            lane.flight.deadline = time.monotonic() + self.worker.options.smtp_timeout

    def land(self, lane: Lane, outcome: Exchanged) -> None:
        """Give the outcomes of a finished exchange; keep the delivery whose envelope was taken."""
        finished, refused = outcome
        flight, lane.flight = lane.flight, None
        assert flight is not None
        if flight.held is not None:
            self.after_message(lane, flight.held, finished)
        if flight.starting is None:
            return
        delivery, data = flight.starting
        if refused is None:
            lane.held = flight.starting
        elif isinstance(refused, ConnectionDropped):
            self.again(lane, delivery, data, refused)
        else:
            self.give(lane, self.worker.refused(delivery, 0, refused))

    def after_message(
        self, lane: Lane, held: tuple[ClaimedDelivery, bytes], error: DeliveryError | None
    ) -> None:
        delivery, data = held
        if error is None:
            self.give(lane, Outcome(delivery, State.SENT))
        elif not isinstance(error, ConnectionDropped):
            self.give(lane, self.worker.refused(delivery, 0, error))
        elif error.outcome_unknown:
            # The message went out whole and its answer never came: it may have arrived. Queued
            # again at once, counted uncertain, resent with the same Message-ID.
            self.give(lane, self.worker.retry(delivery, 1, error.message, now=True))
        else:
            self.again(lane, delivery, data, error)

    def suppressed(self, delivery: ClaimedDelivery) -> Outcome | None:
        """The last word before SMTP: ``skipped`` if the reader is now unsubscribed, bounced,
        complained or erased, else None."""
        current = self.status(delivery.subscriber_id)
        if current is None or current in SUPPRESSED_STATUSES:
            return Outcome(delivery, State.SKIPPED, error=f"reader {current or 'erased'}")
        return None

    def opened(self, lane: Lane) -> None:
        """Take the outcome of the lane's opening, done in the opener's thread."""
        opening, lane.opening = lane.opening, None
        assert opening is not None
        error = opening.exception()
        if error is None:
            lane.rest = FIRST_REST
        else:
            self.rest_lane(lane, error.message if isinstance(error, ConnectFailed) else repr(error))

    def rest_lane(self, lane: Lane, why: str) -> None:
        """A lane the relay would not open (down, or taking no more sessions from this client:
        a 421 greeting) rests ``FIRST_REST``, twice as long after each refusal in a row up to
        ``LONGEST_REST``, while the others send."""
        log.warning(
            "event=connect_failed %s",
            _fields(worker=self.worker.name, error=why, retry_in=lane.rest),
        )
        lane.resting_until = time.monotonic() + lane.rest
        lane.rest = min(lane.rest * 2, LONGEST_REST)
