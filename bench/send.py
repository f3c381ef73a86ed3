"""End-to-end sending speed against its ceiling, in one run.

Starts postfix's ``smtp-sink`` (a C SMTP sink), then measures:

- the ceiling: ``smtp-source`` (postfix's C load generator) sending N messages of SIZE bytes over
  C connections, each kept open for the next message (``-d``), as a pooled sender does;
- the product: a campaign of N readers in a fresh SQLite database, sent by ``run_worker`` with
  ``send_concurrency`` = C: claim, render (a SIZE-byte message), send, mark sent.

    python bench/send.py --messages 5000 --connections 4 --size 28000 [--rounds 3]
    python bench/send.py --messages 5000 --connections 4 --article   # the real article email

With ``--article`` the worker renders the shipped Vitamin K2 campaign for every reader with the
product's own renderer (``scheduler.rendering.Renderer``: content, signed links, the compiled
MJML template, Jinja, MIME), and the ceiling carries messages of that email's size.

Prints one JSON line per round and a summary; the ratio is product / ceiling within a round.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from bench.sink import Sink, running_sink  # noqa: E402
from newsletter.db import Database, utcnow  # noqa: E402
from newsletter.settings import Settings  # noqa: E402
from scheduler.deliveries import ClaimedDelivery, Recipient, delivery_counts, enqueue  # noqa: E402
from scheduler.rendering import Renderer, plain_render  # noqa: E402
from scheduler.worker import WorkerOptions, run_worker, tune_interpreter  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402

SENDER = "Bench <bench@example.org>"
PLACEHOLDER = "campaign:bench"
ARTICLE = "campaign:vitamin-k2-bone-health"


def article_size() -> int:
    """The size of the article email as a reader gets it, for the ceiling's messages."""
    from campaigns import load_campaign, sample_links, sample_reader
    from templates import render

    settings = Settings(sender=SENDER)
    content = load_campaign(ARTICLE.partition(":")[2]).content
    links = sample_links(settings)
    reader = sample_reader(content)
    return len(render(content, reader, links, message_id="<size@example.org>", settings=settings))


@dataclass(frozen=True)
class Measured:
    """One side of a round: its rate, and CPU time per message of the sender and of the sink."""

    per_s: float
    sender_cpu_us: float  # smtp-source's, or the worker process's (claim, render, send, record)
    sink_cpu_us: float


def cpu_s(who: int) -> float:
    """User + system CPU seconds of this process (``RUSAGE_SELF``) or its children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def ceiling(sink: Sink, messages: int, connections: int, size: int) -> Measured:
    """Messages per second smtp-source reaches."""
    port = sink.port
    children, sink_before = cpu_s(resource.RUSAGE_CHILDREN), sink.cpu_s()
    started = time.perf_counter()
    subprocess.run(
        [
            shutil.which("smtp-source") or "/usr/sbin/smtp-source",
            "-c",
            "-d",
            "-l",
            str(size),
            "-m",
            str(messages),
            "-s",
            str(connections),
            "-f",
            "a@example.org",
            "-t",
            "b@example.org",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    elapsed = time.perf_counter() - started
    return Measured(
        messages / elapsed,
        1e6 * (cpu_s(resource.RUSAGE_CHILDREN) - children) / messages,
        1e6 * (sink.cpu_s() - sink_before) / messages,
    )


def insert_readers(database: Database, count: int, batch: int = 10_000) -> None:
    """``count`` confirmed readers, ``reader{n}@example.com``, in batches of ``batch``."""
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


def prepare_campaign(directory: Path, messages: int, message: str) -> Database:
    database = Database(f"sqlite:///{directory / 'bench.db'}")
    database.upgrade()
    insert_readers(database, messages)
    enqueue(database, message)
    return database


def send_campaign(
    url: str, port: int, connections: int, size: int, name: str, article: bool = False
) -> None:
    """One worker, as ``newsletter worker --until-idle`` runs it."""
    settings = Settings(
        database_url=url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        sender=SENDER,
        send_rate=1_000_000,
        send_concurrency=connections,
    )

    def placeholder(delivery: ClaimedDelivery, subscriber: Recipient) -> bytes:
        return plain_render(delivery, subscriber, sender=SENDER, size=size)

    database = Database(url)
    renderer = Renderer(settings, database) if article else None
    tune_interpreter()  # as the ``newsletter worker`` command does once started
    run_worker(
        settings,
        database,
        renderer or placeholder,
        stop_event=threading.Event(),
        options=WorkerOptions(poll_interval=0.01, until_idle=True, name=name),
    )
    database.dispose()


def _worker_process(
    url: str, port: int, connections: int, size: int, name: str, go: Any, article: bool = False
) -> None:
    go.wait()
    send_campaign(url, port, connections, size, name, article)


def product(
    sink: Sink,
    messages: int,
    connections: int,
    size: int,
    processes: int = 1,
    article: bool = False,
) -> Measured:
    """Messages per second ``run_worker`` reaches: claim, render, send, mark sent.

    With ``processes`` > 1, that many worker processes share the campaign and the connections
    (``connections`` in all), as ``newsletter worker`` started several times would.
    """
    with tempfile.TemporaryDirectory() as directory:
        message = ARTICLE if article else PLACEHOLDER
        database = prepare_campaign(Path(directory), messages, message)
        port = sink.port
        sink_before = sink.cpu_s()
        own = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN)
        if processes == 1:
            started = time.perf_counter()
            send_campaign(database.url, port, connections, size, "bench", article)
        else:
            context = multiprocessing.get_context("spawn")
            go = context.Event()
            workers = [
                context.Process(
                    target=_worker_process,
                    args=(
                        database.url,
                        port,
                        connections // processes,
                        size,
                        f"bench-{n}",
                        go,
                        article,
                    ),
                )
                for n in range(processes)
            ]
            for worker in workers:
                worker.start()
            time.sleep(3)  # let them import everything before the clock starts
            started = time.perf_counter()
            go.set()
            for worker in workers:
                worker.join()
        elapsed = time.perf_counter() - started
        sender = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN) - own
        sink_cpu = sink.cpu_s() - sink_before
        with database.session() as session:
            sent = delivery_counts(session, message)["sent"]
        database.dispose()
    if sent != messages:
        raise RuntimeError(f"only {sent} of {messages} sent")
    return Measured(messages / elapsed, 1e6 * sender / messages, 1e6 * sink_cpu / messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=28000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--processes", type=int, default=1, help="worker processes sharing the connections"
    )
    parser.add_argument(
        "--article",
        action="store_true",
        help="render the shipped article email with the product's renderer (its size, not --size)",
    )
    args = parser.parse_args()
    if args.article:
        args.size = article_size()
    ratios = []
    with running_sink() as sink:
        for round_ in range(args.rounds):
            top = ceiling(sink, args.messages, args.connections, args.size)
            ours = product(
                sink, args.messages, args.connections, args.size, args.processes, args.article
            )
            ratios.append(ours.per_s / top.per_s)
            print(
                json.dumps(
                    {
                        "round": round_ + 1,
                        "messages": args.messages,
                        "connections": args.connections,
                        "processes": args.processes,
                        "size": args.size,
                        "article": args.article,
                        "ceiling_per_s": round(top.per_s),
                        "product_per_s": round(ours.per_s),
                        "ratio": round(ours.per_s / top.per_s, 3),
                        # CPU µs a message: smtp-source's and the worker's, and the sink's in each
                        "cpu_us_source": round(top.sender_cpu_us),
                        "cpu_us_product": round(ours.sender_cpu_us),
                        "cpu_us_sink_ceiling": round(top.sink_cpu_us),
                        "cpu_us_sink_product": round(ours.sink_cpu_us),
                        "load_avg_1m": round(os.getloadavg()[0], 1),
                    }
                ),
                flush=True,
            )
    print(f"median ratio product/ceiling: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
