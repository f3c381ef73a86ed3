"""A campaign to 100,000 and to 1,000,000 readers: time and peak memory; and a fleet on PostgreSQL.

SQLite (the default): each size runs in a fresh process, which inserts the readers (in batches),
enqueues the campaign (keyset pagination, ``enqueue``), and sends it with ``run_worker`` into
postfix's ``smtp-sink``. It reports each phase's time and the process's peak RSS: memory must not
grow with the list.

    python bench/scale.py --readers 100000 1000000 [--size 2000] [--connections 4]

PostgreSQL (``--database``): the readers are inserted once into that database (its tables are
emptied first: give it a database of its own), then for each worker count the campaign is enqueued
afresh and sent by that many worker processes (``run_worker``, ``--connections`` SMTP connections
each) into one ``smtp-sink``. Each line gives the wall time, messages per second, and where the CPU
went (the workers, the sink, the PostgreSQL backends serving the workers, the whole machine), so the
bottleneck shows: CPU, the sink, or the database.

    python bench/scale.py --database postgresql+psycopg://postgres@127.0.0.1:5432/bench \
        --workers 1,2,4 --readers 1000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

from bench.send import SENDER, _worker_process, insert_readers  # noqa: E402
from bench.sink import running_sink  # noqa: E402
from newsletter.db import Database  # noqa: E402
from newsletter.settings import Settings  # noqa: E402
from scheduler.deliveries import (  # noqa: E402
    ClaimedDelivery,
    Recipient,
    delivery_counts,
    enqueue,
)
from scheduler.rendering import plain_render  # noqa: E402
from scheduler.worker import WorkerOptions, run_worker, tune_interpreter  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402

MESSAGE = "campaign:scale"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(path: Path, readers: int) -> None:
    """A database with ``readers`` confirmed readers (its own process: not part of the figures)."""
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    insert_readers(database, readers)
    database.dispose()


def campaign(path: Path, readers: int, size: int, connections: int, port: int) -> dict[str, float]:
    """Enqueue and send the campaign; the figures of this process are the benchmark's."""
    result: dict[str, float] = {"readers": readers, "rss_at_start_mb": round(peak_rss_mb(), 1)}
    database = Database(f"sqlite:///{path}")
    started = time.perf_counter()
    created = enqueue(database, MESSAGE)
    result["enqueue_s"] = round(time.perf_counter() - started, 1)
    result["rss_after_enqueue_mb"] = round(peak_rss_mb(), 1)
    assert created == readers, created

    settings = Settings(
        database_url=database.url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        sender=SENDER,
        send_rate=1_000_000,
        send_concurrency=connections,
    )

    def render(delivery: ClaimedDelivery, reader: Recipient) -> bytes:
        return plain_render(delivery, reader, sender=SENDER, size=size)

    tune_interpreter()  # as the ``newsletter worker`` command does once started
    started = time.perf_counter()
    run_worker(
        settings,
        database,
        render,
        stop_event=threading.Event(),
        options=WorkerOptions(poll_interval=0.05, until_idle=True),
    )
    elapsed = time.perf_counter() - started
    result["send_s"] = round(elapsed, 1)
    result["send_per_s"] = round(readers / elapsed)
    with database.session() as session:
        result["sent"] = delivery_counts(session, MESSAGE)["sent"]
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    database.dispose()
    return result


# ---------------------------------------------------------------- a fleet on PostgreSQL

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class BackendSampler:
    """Samples the CPU of the PostgreSQL backends serving ``database_name`` (same machine)."""

    def __init__(self, database: Database, database_name: str) -> None:
        self.database = database
        self.name = database_name
        self.cpu: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.25):
            with self.database.engine.connect() as connection:
                pids = connection.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": self.name},
                ).scalars()
                for pid in pids:
                    self.cpu[pid] = max(self.cpu.get(pid, 0.0), process_cpu_s(pid))

    def __enter__(self) -> BackendSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def fleet_setup(url: str, readers: int) -> Database:
    """The database, migrated, with exactly ``readers`` readers (inserted only when needed)."""
    database = Database(url)
    database.upgrade()
    with database.session() as session:
        have = session.scalar(select(func.count()).select_from(Subscriber)) or 0
    if have != readers:
        print(f"inserting {readers} readers", file=sys.stderr, flush=True)
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "TRUNCATE deliveries, delivery_workers, subscriber_tags, status_changes,"
                    " consents, subscribers RESTART IDENTITY CASCADE"
                )
            )
        insert_readers(database, readers)
        with database.engine.connect() as connection:
            connection.execute(text("COMMIT"))
            connection.execute(text("ANALYZE"))
    return database


def fleet_round(
    database: Database, port: int, sink_pid: int, workers: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Enqueue the campaign afresh and send it with ``workers`` processes."""
    with database.engine.begin() as connection:
        connection.execute(text("TRUNCATE deliveries, delivery_workers RESTART IDENTITY"))
    started = time.perf_counter()
    created = enqueue(database, MESSAGE)
    enqueue_s = time.perf_counter() - started
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    processes = [
        context.Process(
            target=_worker_process,
            args=(database.url, port, args.connections, args.size, f"scale-{workers}-{n}", go),
        )
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    time.sleep(3 + workers)  # let them import everything before the clock starts
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink_before = process_cpu_s(sink_pid)
    busy_before, total_before = machine_busy()
    name = database.engine.url.database or ""
    with BackendSampler(database, name) as backends:
        started = time.perf_counter()
        go.set()
        for process in processes:
            process.join()
        elapsed = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_after, total_after = machine_busy()
    with database.session() as session:
        sent = delivery_counts(session, MESSAGE)["sent"]
    cores = os.cpu_count() or 1
    worker_cpu = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return {
        "workers": workers,
        "connections_each": args.connections,
        "readers": created,
        "sent": sent,
        "enqueue_s": round(enqueue_s, 1),
        "send_s": round(elapsed, 1),
        "send_per_s": round(sent / elapsed),
        "cpu_workers_s": round(worker_cpu, 1),
        "cpu_sink_s": round(process_cpu_s(sink_pid) - sink_before, 1),
        "cpu_postgres_s": round(sum(backends.cpu.values()), 1),
        "machine_busy_pct": round(
            100 * (busy_after - busy_before) / max(1, total_after - total_before), 1
        ),
        "cores": cores,
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "peak_rss_worker_mb": round(children.ru_maxrss / 1024, 1),
    }


def fleet(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.workers.split(",")]
    database = fleet_setup(args.database, args.readers[0])
    try:
        with running_sink() as sink:
            for workers in counts:
                print(
                    json.dumps(fleet_round(database, sink.port, sink.pid, workers, args)),
                    flush=True,
                )
    finally:
        database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--size", type=int, default=2000, help="bytes per message")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--phase", choices=["setup", "campaign"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help="a PostgreSQL URL: measure a fleet of worker processes")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, with --database")
    args = parser.parse_args()
    if args.database:
        fleet(args)
        return
    if args.phase == "setup":
        setup(args.path, args.readers[0])
        return
    if args.phase == "campaign":
        figures = campaign(args.path, args.readers[0], args.size, args.connections, args.port)
        print(json.dumps(figures), flush=True)
        return
    common = ["--size", str(args.size), "--connections", str(args.connections)]
    with running_sink() as sink:
        for readers in args.readers:
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "scale.db"
                for phase in ("setup", "campaign"):
                    subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--phase",
                            phase,
                            "--path",
                            str(path),
                            "--readers",
                            str(readers),
                            "--port",
                            str(sink.port),
                            *common,
                        ],
                        check=True,
                    )


if __name__ == "__main__":
    main()
