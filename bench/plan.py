"""``newsletter plan --next 48h`` over 1,000,000 readers in SQLite: target under 10 s.

The store (built once, not timed, kept for reruns with ``--keep``): readers in ten zones, all in
the welcome sequence. Most confirmed weeks ago and passed both steps (two sent deliveries
each); one in a hundred confirmed within the last two days, so their article falls due within the
plan (waiting on its window in their zone); one campaign is scheduled in 24 hours to every
reader, and the cadence caps are on (20 hours between emails, no campaign in the first 3 days
of the welcome), so each reader's campaign time is decided from their own history.

Timed: ``plan(...)`` over the whole store, sorted as the command orders it (in this process);
then the command itself in a child process, to /dev/null: ``newsletter plan --next 48h`` (the
table: first rows and counts, one pass) and ``newsletter plan --next 48h --csv`` (every row).
Reported: wall and CPU seconds, rows planned, peak RSS, and the machine's load average.

    python bench/plan.py [--readers 1000000] [--keep /tmp/plan-bench.db]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from newsletter.db import Database  # noqa: E402
from scheduler.cadence import Caps  # noqa: E402
from scheduler.campaigns import CampaignRun  # noqa: E402
from scheduler.deliveries import Delivery  # noqa: E402
from scheduler.plan import Scope, plan  # noqa: E402
from scheduler.sequences import Enrolment, read_sequences, sequence_version  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402

ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "UTC",
]
CAPS = Caps(min_gap=timedelta(hours=20), quiet={"welcome": timedelta(days=3)})
# One reader in this many confirmed within the last two days (10,000 of a million: a busy
# list's signups) and is moving through the sequence; the others passed it weeks ago.
RECENT = 100
WELCOME = "sequence:welcome:welcome-report"
ARTICLE = "sequence:welcome:vitamin-k2"


def build(path: Path, readers: int, now: datetime, batch: int = 20_000) -> None:
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    sequence = dict(read_sequences())["welcome"]
    assert sequence is not None
    version = sequence_version(sequence)
    old = now - timedelta(days=40)
    for start in range(0, readers, batch):
        ids = range(start + 1, min(readers, start + batch) + 1)
        with database.session() as session:
            session.execute(
                insert(Subscriber),
                [
                    {
                        "id": n,
                        "email": f"reader{n}@example.com",
                        "key": f"k{n}",
                        "status": "confirmed",
                        "attributes": {},
                        "timezone": ZONES[n % len(ZONES)],
                        "created_at": old,
                        "status_changed_at": old,
                        "confirmed_at": old,
                    }
                    for n in ids
                ],
            )
            enrolments, deliveries = [], []
            for n in ids:
                recent = n % RECENT == 0
                confirmed = now - timedelta(minutes=(n * 7) % 2880) if recent else old
                enrolments.append(
                    {
                        "sequence": "welcome",
                        "subscriber_id": n,
                        "state": "active" if recent else "completed",
                        "version": version,
                        "enrolled_at": confirmed,
                        "anchor_at": confirmed,
                        "next_step": "vitamin-k2" if recent else None,
                        "next_due_at": None,
                        "waiting_message": None,
                        "updated_at": confirmed,
                    }
                )
                messages = [(WELCOME, confirmed)] if recent else [(WELCOME, old), (ARTICLE, old)]
                for message, at in messages:
                    deliveries.append(
                        {
                            "message": message,
                            "subscriber_id": n,
                            "state": "sent",
                            "attempts": 1,
                            "uncertain_count": 0,
                            "next_attempt_at": at,
                            "created_at": at,
                            "sent_at": at,
                        }
                    )
            session.execute(insert(Enrolment), enrolments)
            session.execute(insert(Delivery), deliveries)
    with database.session() as session:
        session.add(
            CampaignRun(
                name="bench-news",
                message="campaign:bench-news",
                state="scheduled",
                send_at=now + timedelta(hours=24),
                zone="UTC",
                created_at=now,
                state_changed_at=now,
            )
        )
    with database.engine.connect() as connection:
        connection.execute(text("ANALYZE"))
    database.dispose()


def measure(path: Path, now: datetime) -> dict[str, float]:
    database = Database(f"sqlite:///{path}")
    scope = Scope(now, now + timedelta(hours=48), CAPS, "UTC")
    wall, cpu = time.perf_counter(), time.process_time()
    sends = sorted(plan(database, scope))  # as the command orders them
    result = {
        "plan_wall_s": round(time.perf_counter() - wall, 2),
        "plan_cpu_s": round(time.process_time() - cpu, 2),
        "rows": len(sends),
        "deferred": sum(1 for s in sends if s.reason),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    database.dispose()
    return result


def measure_command(path: Path, *options: str) -> dict[str, float]:
    """The command end to end (start-up, plan, output to /dev/null), on the real clock."""
    env = {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{path}",
        "NEWSLETTER_CADENCE_MIN_GAP": "20h",
        "NEWSLETTER_CADENCE_QUIET": "welcome:3d",
    }
    newsletter = str(Path(sys.executable).parent / "newsletter")
    command = [newsletter, "plan", "--next", "48h", *options]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    with open(os.devnull, "w") as sink:
        subprocess.run(command, env=env, stdout=sink, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    name = "command_csv" if options else "command"
    return {
        f"{name}_wall_s": round(time.perf_counter() - wall, 2),
        f"{name}_cpu_s": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="Reuse (or build) this store.")
    args = parser.parse_args()
    # The store is built relative to the real now, so that the command (on the real clock)
    # plans the same 48 hours; a kept store older than a day is rebuilt.
    path = args.keep or Path(f"/tmp/plan-bench-{args.readers}.db")
    now = datetime.now(UTC)
    if not path.exists() or time.time() - path.stat().st_mtime > 86400:
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        build(path, args.readers, now)
        print(f"built {args.readers} readers in {time.perf_counter() - started:.0f} s", flush=True)
    result: dict[str, float] = {"readers": args.readers, "load_average": os.getloadavg()[0]}
    result |= measure(path, datetime.now(UTC))
    result |= measure_command(path)
    result |= measure_command(path, "--csv")
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result))
    if args.keep is None:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
