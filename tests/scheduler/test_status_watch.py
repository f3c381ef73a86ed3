"""``newsletter campaign status NAME --watch``: a progress bar, in another terminal, that follows
a sending campaign and returns when it is done."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from newsletter.db import Database
from newsletter.settings import Settings
from scheduler import campaigns
from tests.scheduler.campaign_helpers import WorkerThread, marketer_settings, wait_until
from tests.scheduler.test_campaigns import start
from tests.scheduler.test_campaigns_cli import environment


def test_watch_follows_a_sending_campaign_and_returns_when_it_is_done(
    sqlite_database: Database,
    make_settings: Callable[..., Settings],
    settings_for: Callable[..., Settings],
    smtp_server,
    tmp_path: Path,
) -> None:
    run = start(sqlite_database, marketer_settings(make_settings, sqlite_database), 8)
    watch = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "campaign", "status", run.name, "--watch"],
        env={**environment(sqlite_database), "COLUMNS": "100"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with WorkerThread(settings_for(sqlite_database, smtp_server.url), sqlite_database):
            wait_until(lambda: len(smtp_server.messages) == 8)
        assert watch.poll() is None, "the watch returned before the campaign was done"
        assert campaigns.finish_runs(sqlite_database) == [run.name]  # the clock's next tick
        shown, errors = watch.communicate(timeout=30)
    finally:
        watch.kill()

    assert watch.returncode == 0, errors
    assert f"{run.name} (done)" in shown
    assert "8/8" in shown
