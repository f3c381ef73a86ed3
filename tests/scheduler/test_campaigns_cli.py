"""``newsletter campaign schedule|status|pause|resume|cancel`` and ``newsletter worker`` as the
marketer runs them: separate processes sharing one database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from newsletter.db import Database, utcnow
from scheduler.campaigns import CampaignRun
from tests.scheduler.campaign_helpers import CAMPAIGN
from tests.scheduler.delivery_helpers import SENDER, add_readers, reader_address


def environment(database: Database, **extra: str) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER")},
        "NEWSLETTER_DATABASE_URL": database.url,
        "NEWSLETTER_FROM": SENDER,
        "NEWSLETTER_SECRET_KEY": "cli-test",
        **extra,
    }


def newsletter(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_refused_schedule_exits_1_with_one_line_naming_the_problem(
    sqlite_database: Database, tmp_path: Path
) -> None:
    env = environment(sqlite_database)
    past = newsletter(
        env, tmp_path, "campaign", "schedule", CAMPAIGN, "--at", "2020-01-01 09:00", "--tz", "UTC"
    )
    assert past.returncode == 1
    assert past.stderr.strip().splitlines() == [
        "error: 2020-01-01 09:00 UTC is in the past; pick a time from now on"
    ]


def test_a_campaign_scheduled_from_the_cli_is_sent_by_the_worker_and_counted_by_status(
    sqlite_database: Database, tmp_path: Path, smtp_server
) -> None:
    add_readers(sqlite_database, 6)
    marketer = environment(sqlite_database)
    at = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    scheduled = newsletter(
        marketer, tmp_path, "campaign", "schedule", CAMPAIGN, "--at", at, "--tz", "UTC"
    )
    assert scheduled.returncode == 0, scheduled.stderr
    assert f"campaign '{CAMPAIGN}' scheduled for" in scheduled.stdout
    # An hour passes (the clock's tick starts a due run even before its stored job fires).
    with sqlite_database.session() as session:
        session.execute(update(CampaignRun).values(send_at=utcnow()))

    worker = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "worker", "--poll-interval", "0.1"],
        env=environment(sqlite_database, NEWSLETTER_SMTP_URL=smtp_server.url),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        smtp_server.wait_for(lambda messages: len(messages) >= 6, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0, errors
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        reader_address(n) for n in range(6)
    )
    status = json.loads(
        newsletter(marketer, tmp_path, "campaign", "status", CAMPAIGN, "--json").stdout
    )
    assert {k: status[k] for k in ("queued", "sent", "failed", "bounced", "skipped")} == {
        "queued": 0, "sent": 6, "failed": 0, "bounced": 0, "skipped": 0,
    }  # fmt: skip
    assert status["state"] in ("sending", "done")  # done at the clock's next tick
