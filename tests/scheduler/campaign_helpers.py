"""Helpers for the campaign and clock tests: settings, scheduling with a fake clock, a worker in
a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from newsletter.db import Database
from newsletter.settings import Settings
from scheduler.campaigns import RunInfo
from scheduler.clock import schedule_campaign
from scheduler.rendering import Renderer
from scheduler.worker import WorkerOptions, WorkerReport, run_worker
from tests.scheduler.delivery_helpers import FAST, SENDER

CAMPAIGN = "vitamin-k2-bone-health"
MESSAGE = f"campaign:{CAMPAIGN}"
# The fake "now" of the tests: a Saturday before the campaign time.
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def marketer_settings(make_settings: Callable[..., Settings], database: Database) -> Settings:
    """The marketer's settings: no relay (the capture inbox), so the preflight check passes."""
    return make_settings(database_url=database.url, sender=SENDER)


def schedule(
    database: Database,
    settings: Settings,
    at: str | datetime = "2026-12-01 09:00",
    zone: str = "America/New_York",
    segment: str | None = None,
    *,
    name: str = CAMPAIGN,
    now: datetime = NOW,
    **options: Any,
) -> RunInfo:
    return schedule_campaign(
        database, settings, name, at, zone, segment, now=now, spamassassin=None, **options
    )


@dataclass
class WorkerThread:
    """``run_worker`` with the real renderer, in a thread, until stopped."""

    settings: Settings
    database: Database
    options: WorkerOptions = field(default_factory=lambda: replace(FAST, until_idle=False))
    stop: threading.Event = field(default_factory=threading.Event)
    report: WorkerReport | None = None

    def __post_init__(self) -> None:
        self.render = Renderer(self.settings, self.database)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.report = run_worker(
            self.settings, self.database, self.render, stop_event=self.stop, options=self.options
        )

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)
