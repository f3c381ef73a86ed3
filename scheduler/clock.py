"""The clock: APScheduler 3 turning due campaign runs (and other due work) into deliveries.

One ``BackgroundScheduler`` per process, its jobs in a ``SQLAlchemyJobStore`` on the product's
own database (table ``apscheduler_jobs``), so they survive restarts:

- a *date* job per scheduled campaign run, at its time (``schedule_campaign`` stores it, from
  any process, the CLI's included); when it fires, the run is enqueued by keyset batches and the
  worker sends it. A run whose time passed while no clock was running is started when a clock
  starts, unless it is later than the grace period (``NEWSLETTER_CAMPAIGN_GRACE``): then it is
  *held* until the marketer's ``newsletter campaign resume``.
- a *tick* every few seconds that calls each "due work" callable the shell passes in (for
  example the sequences' ``enqueue_due_steps(database, now)``), starts any due run whose job was
  lost (belt and braces: starting a run twice is harmless), and marks finished runs done.

Only one process may run the clock: ``should_run()`` says whether this one may (for example
holding PostgreSQL's advisory lock); the scheduler is started while it answers True and shut
down when it stops doing so. Without one, every clock runs (fine for a single process).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from campaigns.preflight import SPAMASSASSIN
from newsletter.db import Database, utcnow
from newsletter.settings import Settings
from scheduler import campaigns
from scheduler.cadence import Caps
from scheduler.campaigns import RunInfo

log = logging.getLogger("scheduler.clock")
# APScheduler logs every run of the tick at info level: keep its warnings and errors only.
for _name in ("apscheduler.scheduler", "apscheduler.executors.default"):
    logging.getLogger(_name).setLevel(logging.WARNING)

JOBS_TABLE = "apscheduler_jobs"
DueWork = Callable[[Database, datetime], Any]

# The clock of this process, which stored jobs reach when they fire (a job holds only names).
_current: Clock | None = None
_current_lock = threading.Lock()


def _job_id(run_id: int) -> str:
    return f"campaign-run-{run_id}"


class _SharedEngineJobStore(SQLAlchemyJobStore):
    """APScheduler's job store on the product's engine, which the store does not own."""

    def shutdown(self) -> None:
        # The stock store disposes of its engine here, pulling the pool from under the web app
        # and the sender that share it (a worker then waited forever for a connection).
        pass


def _new_scheduler(database: Database) -> BackgroundScheduler:
    store = _SharedEngineJobStore(engine=database.engine, tablename=JOBS_TABLE)
    return BackgroundScheduler(
        jobstores={"default": store, "memory": MemoryJobStore()},
        executors={"default": {"type": "threadpool", "max_workers": 4}},
        job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        timezone=UTC,
    )


def fire_campaign(run_id: int) -> None:
    """The stored job of a campaign run: start it on this process's clock."""
    clock = _current
    if clock is None:
        log.warning("event=campaign_job_without_clock run=%s", run_id)
        return
    clock.start_run(run_id)


def schedule_campaign(
    database: Database,
    settings: Settings,
    name: str,
    at: str | datetime,
    zone: str = "UTC",
    segment: str | None = None,
    *,
    now: datetime | None = None,
    content_root: Path | None = None,
    spamassassin: str | None = SPAMASSASSIN,
    reader_time: bool = False,
) -> RunInfo:
    """Schedule campaign ``name`` at ``at`` (wall-clock time in ``zone``, or with
    ``reader_time`` in each reader's zone) to ``segment``.

    Checks and records the run (``campaigns.create_run``: refusals are ``NewsletterError``s
    with a message saying what to do), then stores its job for whichever clock runs.
    """
    run = campaigns.create_run(
        database,
        settings,
        name,
        at,
        zone,
        segment,
        now=now,
        content_root=content_root,
        spamassassin=spamassassin,
        reader_time=reader_time,
    )
    scheduler = _new_scheduler(database)
    scheduler.start(paused=True)  # opens the job store only: nothing runs here
    try:
        scheduler.add_job(
            fire_campaign,
            trigger="date",
            run_date=run.send_at,
            args=[run.id],
            id=_job_id(run.id),
            name=f"campaign {name}",
            replace_existing=True,
        )
    finally:
        scheduler.shutdown(wait=False)
    return run


class Clock:
    """The clock of one process; ``start()`` it, ``stop()`` it on shutdown."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        due_work: Sequence[DueWork] = (),
        should_run: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime] = utcnow,
        tick_seconds: float = 5.0,
        leadership_check_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.database = database
        self.due_work = list(due_work)
        self.should_run = should_run
        self.now = now
        self.tick_seconds = tick_seconds
        self.leadership_check_seconds = leadership_check_seconds
        self.grace = timedelta(seconds=settings.campaign_grace)
        self.scheduler: BackgroundScheduler | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.starting: set[int] = set()  # runs being enqueued by this process
        self.lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Clock:
        """Start the supervising thread: the scheduler runs while ``should_run()`` says so."""
        global _current
        with _current_lock:
            _current = self
        self.thread = threading.Thread(target=self._supervise, name="clock", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the scheduler, waiting for a running job (an enqueue) to finish its batch."""
        global _current
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
        with _current_lock:
            if _current is self:
                _current = None

    @property
    def running(self) -> bool:
        return self.scheduler is not None

    def _supervise(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    leader = bool(self.should_run())
                except Exception:
                    log.exception("event=should_run_failed")
                    leader = False
                if leader and self.scheduler is None:
                    self._start_scheduler()
                elif not leader and self.scheduler is not None:
                    log.info("event=clock_stopped reason=not_leader")
                    self._stop_scheduler()
                self.stopping.wait(self.leadership_check_seconds)
        finally:
            self._stop_scheduler()

    def _start_scheduler(self) -> None:
        scheduler = _new_scheduler(self.database)
        scheduler.add_job(
            self.tick,
            trigger="interval",
            seconds=self.tick_seconds,
            id="due-work-tick",
            jobstore="memory",
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()
        self.scheduler = scheduler
        log.info("event=clock_started jobs=%s", len(scheduler.get_jobs()))

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            scheduler, self.scheduler = self.scheduler, None
            scheduler.shutdown(wait=True)

    # ------------------------------------------------------------ work

    def start_run(self, run_id: int) -> str:
        """Start campaign run ``run_id`` unless this process is doing so already."""
        with self.lock:
            if run_id in self.starting:
                return "busy"
            self.starting.add(run_id)
        try:
            return campaigns.start_run(
                self.database,
                run_id,
                grace=self.grace,
                now=self.now(),
                caps=Caps.from_settings(self.settings),
                default_zone=self.settings.timezone,
            )
        except Exception:
            log.exception("event=campaign_start_failed run=%s", run_id)
            return "error"
        finally:
            with self.lock:
                self.starting.discard(run_id)

    def tick(self) -> None:
        """The periodic job: due work, due runs whose job is missing, finished runs."""
        now = self.now()
        for work in self.due_work:
            try:
                work(self.database, now)
            except Exception:
                log.exception("event=due_work_failed work=%s", getattr(work, "__name__", work))
        try:
            for run_id in campaigns.due_runs(self.database, now):
                self.start_run(run_id)
            campaigns.finish_runs(self.database, self.now())
        except Exception:
            log.exception("event=tick_failed")


def start_clock(
    settings: Settings,
    database: Database,
    *,
    due_work: Sequence[DueWork] = (),
    should_run: Callable[[], bool] = lambda: True,
    now: Callable[[], datetime] = utcnow,
    tick_seconds: float = 5.0,
) -> Clock:
    """Start this process's clock in the background; call ``.stop()`` on shutdown."""
    return Clock(
        settings,
        database,
        due_work=due_work,
        should_run=should_run,
        now=now,
        tick_seconds=tick_seconds,
    ).start()


def run_clock(
    settings: Settings,
    database: Database,
    *,
    stop_event: threading.Event,
    due_work: Sequence[DueWork] = (),
    should_run: Callable[[], bool] = lambda: True,
) -> None:
    """Run the clock until ``stop_event`` is set."""
    clock = start_clock(settings, database, due_work=due_work, should_run=should_run)
    try:
        stop_event.wait()
    finally:
        clock.stop()
