"""A campaign to 100,000 and to 1,000,000 readers in SQLite: time and peak memory.

Each size runs in a fresh process, which inserts the readers (in batches), enqueues the campaign
(keyset pagination, ``enqueue``), and sends it with ``run_worker`` into postfix's ``smtp-sink``.
It reports each phase's time and the process's peak RSS: memory must not grow with the list.

    python bench/scale.py --readers 100000 1000000 [--size 2000] [--connections 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from bench.send import SENDER, free_port, start_sink  # noqa: E402
from newsletter.db import Database, utcnow  # noqa: E402
from newsletter.settings import Settings  # noqa: E402
from scheduler.deliveries import ClaimedDelivery, Recipient, delivery_counts, enqueue  # noqa: E402
from scheduler.rendering import plain_render  # noqa: E402
from scheduler.worker import WorkerOptions, run_worker  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402

MESSAGE = "campaign:scale"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def insert_readers(database: Database, count: int, batch: int = 10_000) -> None:
    for start in range(0, count, batch):
        now = utcnow()
        with database.session() as session:
            session.execute(
                insert(Subscriber),
                [
                    {
                        "email": f"reader{n}@example.com",
                        "key": f"k{n}",
                        "status": "confirmed",
                        "attributes": {},
                        "created_at": now,
                        "status_changed_at": now,
                    }
                    for n in range(start, min(count, start + batch))
                ],
            )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--size", type=int, default=2000, help="bytes per message")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--phase", choices=["setup", "campaign"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "setup":
        setup(args.path, args.readers[0])
        return
    if args.phase == "campaign":
        figures = campaign(args.path, args.readers[0], args.size, args.connections, args.port)
        print(json.dumps(figures), flush=True)
        return
    port = free_port()
    sink = start_sink(port)
    common = ["--size", str(args.size), "--connections", str(args.connections)]
    try:
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
                            str(port),
                            *common,
                        ],
                        check=True,
                    )
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
