"""Signups per second and latency of ``POST /subscribe`` on loopback, SQLite, server on one core.

Starts ``newsletter serve`` pinned to CPU 0 (``taskset``), mailing postfix's ``smtp-sink`` when it
is installed (else the built-in capture inbox), and drives it from this process on CPU 1 with
``CONCURRENCY`` connections. Prints signups/s, p50 and p99.

    .venv/bin/python bench/signup.py [--requests 5000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


async def drive(url: str, requests: int, concurrency: int, prefix: str) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for n in counter:
                started = time.perf_counter()
                response = await client.post(
                    "/subscribe", json={"email": f"{prefix}{n}@example.org", "name": "Bench"}
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-signup-"))
    (workdir / "report.pdf").write_bytes(b"%PDF-1.4 benchmark stand-in")
    port = free_port()
    env = {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "NEWSLETTER_SIGNUP_LIMIT": "1000000/second",
        # A relay is configured, so serve's start-up check wants what production has: an https
        # base URL for links and the publisher's own report.
        "NEWSLETTER_BASE_URL": "https://news.example",
        "NEWSLETTER_REPORT": str(workdir / "report.pdf"),
        "NEWSLETTER_CAPTURE_PORT": str(free_port()),
    }
    sink = None
    if shutil.which("smtp-sink"):
        sink_port = free_port()
        sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env["NEWSLETTER_SMTP_URL"] = f"smtp://127.0.0.1:{sink_port}"
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    server = subprocess.Popen(
        [*pin, sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if pin:
            os.sched_setaffinity(0, {1})
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url)
        asyncio.run(drive(url, 300, args.concurrency, "warmup"))
        started = time.perf_counter()
        latencies = asyncio.run(drive(url, args.requests, args.concurrency, "reader"))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)
        if sink:
            sink.terminate()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"signups: {args.requests} at concurrency {args.concurrency}, server on one core")
    print(f"rate: {args.requests / elapsed:.0f} signups/s  p50: {p50:.1f} ms  p99: {p99:.1f} ms")


if __name__ == "__main__":
    main()
