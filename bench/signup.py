"""Signups per second and latency of ``POST /subscribe`` on loopback, SQLite, server on one core.

Two set-ups, each on a fresh SQLite file, mailing postfix's ``smtp-sink``:

- ``web``: ``newsletter serve --no-worker`` pinned to CPU 0 (the web app alone), with
  ``newsletter worker`` (clock and sender) as its own process on CPU 1, as production runs it.
- ``all``: ``newsletter serve`` pinned to CPU 0 doing everything: web app, clock and the
  in-process sender of every confirmation email.

The load comes from this process on CPU 1: ``CONCURRENCY`` keep-alive connections of JSON
signups, each a distinct address, written and read as raw HTTP/1.1 over asyncio streams (an HTTP
client library would take more CPU than the server and measure itself). After 300 warm-up
signups (and their emails) it times ``REQUESTS`` more, then waits until the sink has taken one
confirmation email per signup, warm-up included, and fails if any is missing. The server's CPU
seconds (``/proc/PID/stat``) are read before the timed signups and after the last confirmation
is in the sink, so serve's in-process sender is counted even when it sends after the last
signup: CPU ms per signup is the figure that does not depend on the machine's load. The sender
runs at ``NEWSLETTER_SEND_RATE`` (``--send-rate``, the product's default of 50/s unless told).

    .venv/bin/python bench/signup.py [--requests 3000] [--concurrency 16] [--setup web all]
                                     [--send-rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_until_up(port: int, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def signup_request(address: str) -> bytes:
    body = json.dumps({"email": address, "name": "Bench"}).encode()
    head = (
        "POST /subscribe HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"User-Agent: bench/signup\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return status, body


async def drive(port: int, requests: int, concurrency: int, prefix: str) -> list[float]:
    """Send ``requests`` signups over ``concurrency`` connections; each one's latency."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in counter:
                started = time.perf_counter()
                writer.write(signup_request(f"{prefix}{n}@example.org"))
                status, body = await read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status != 202:
                    raise SystemExit(f"unexpected answer {status}: {body[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies


class Sink:
    """postfix's ``smtp-sink``, counting the messages it takes (``-c``).

    It writes the count to a terminal only (to a file or pipe it stays buffered until exit),
    so its output is a pseudo-terminal that a thread reads.
    """

    def __init__(self) -> None:
        self.port = free_port()
        terminal, sink_side = pty.openpty()
        self.process = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                "smtp-sink",
                "-c",
                "-u",
                "nobody",
                f"127.0.0.1:{self.port}",
                "1000",
            ],
            stdout=sink_side,
            stderr=subprocess.DEVNULL,
        )
        os.close(sink_side)
        self.count = 0
        threading.Thread(target=self._read_counts, args=(terminal,), daemon=True).start()

    def _read_counts(self, terminal: int) -> None:
        tail = b""
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:
                return
            if not chunk:
                return
            tail = (tail + chunk)[-200:]
            counts = re.findall(rb"mesg=(\d+)", tail)
            if counts:
                self.count = int(counts[-1])

    def messages(self) -> int:
        return self.count

    def wait_for(self, expected: int, timeout: float) -> float:
        """Seconds until the sink has taken ``expected`` messages; exits when it never does."""
        started = time.monotonic()
        while self.messages() < expected:
            if time.monotonic() - started > timeout:
                raise SystemExit(
                    f"only {self.messages()} of {expected} confirmation emails reached the sink"
                )
            time.sleep(0.1)
        return time.monotonic() - started

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class Result:
    setup: str
    rate: float
    p50_ms: float
    p99_ms: float
    server_cpu_during_ms: float
    server_cpu_ms: float
    worker_cpu_ms: float
    delivered_after_s: float


def newsletter(*args: str, cpu: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), sys.executable, "-m", "newsletter", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as an operator stops it; a process still there after 60 s is killed and named."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SystemExit(f"{process.args!r} did not stop on Ctrl-C") from None


def run(setup: str, requests: int, concurrency: int, send_rate: float) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-signup-{setup}-"))
    (workdir / "report.pdf").write_bytes(b"%PDF-1.4 benchmark stand-in")
    sink = Sink()
    port = free_port()
    env = {
        **os.environ,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "NEWSLETTER_SIGNUP_LIMIT": "1000000/second",
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
        # A relay is configured, so serve's start-up check wants what production has: an https
        # base URL for links and the publisher's own report.
        "NEWSLETTER_BASE_URL": "https://news.example",
        "NEWSLETTER_REPORT": str(workdir / "report.pdf"),
        "NEWSLETTER_CAPTURE_PORT": str(free_port()),
        "NEWSLETTER_SEND_RATE": str(send_rate),
    }
    serve_args = ["serve", "--port", str(port)]
    if setup == "web":
        serve_args.append("--no-worker")
    # The database is migrated before anything starts, so the two processes never race for it.
    subprocess.run(
        [sys.executable, "-m", "newsletter", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = newsletter(*serve_args, cpu=0, env=env, log=workdir / "serve.log")
    worker = (
        newsletter("worker", cpu=1, env=env, log=workdir / "worker.log") if setup == "web" else None
    )
    try:
        wait_until_up(port, server)
        asyncio.run(drive(port, WARM_UP, concurrency, "warmup"))
        # Wait for the warm-up's emails, so that the CPU counted below is the timed signups'.
        sink.wait_for(WARM_UP, timeout=60 + WARM_UP / send_rate)
        server_before = cpu_seconds(server.pid)
        worker_before = cpu_seconds(worker.pid) if worker else 0.0
        started = time.perf_counter()
        latencies = asyncio.run(drive(port, requests, concurrency, "reader"))
        elapsed = time.perf_counter() - started
        server_during = cpu_seconds(server.pid) - server_before
        delivered_after = sink.wait_for(WARM_UP + requests, timeout=60 + requests / send_rate)
        # Counted until every confirmation is in the sink: serve's sender may still be at work.
        server_cpu = cpu_seconds(server.pid) - server_before
        worker_cpu = cpu_seconds(worker.pid) - worker_before if worker else 0.0
    finally:
        try:
            for process in (server, worker):
                if process is not None:
                    stop(process)
        finally:
            sink.stop()
    latencies.sort()
    return Result(
        setup=setup,
        rate=requests / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        server_cpu_during_ms=server_during / requests * 1000,
        server_cpu_ms=server_cpu / requests * 1000,
        worker_cpu_ms=worker_cpu / requests * 1000,
        delivered_after_s=delivered_after,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--setup",
        nargs="+",
        choices=["web", "all"],
        default=["web", "all"],
        help="web: serve --no-worker with a worker process on CPU 1; all: serve alone on CPU 0",
    )
    parser.add_argument(
        "--send-rate",
        type=float,
        default=50.0,
        help="NEWSLETTER_SEND_RATE, messages per second (default: the product's default, 50)",
    )
    args = parser.parse_args()
    if not (shutil.which("smtp-sink") and shutil.which("taskset")):
        raise SystemExit("needs postfix's smtp-sink and taskset (see RECIPES: apt-get install)")
    os.sched_setaffinity(0, {1})
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for setup in args.setup:
        result = run(setup, args.requests, args.concurrency, args.send_rate)
        print(
            f"{result.setup}: {args.requests} signups at concurrency {args.concurrency}: "
            f"{result.rate:.0f} signups/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms;"
            f" all {WARM_UP + args.requests} confirmations in the sink"
            f" {result.delivered_after_s:.1f} s after the last signup\n"
            f"    CPU ms per signup: serve {result.server_cpu_ms:.3f}"
            f" (while signing up {result.server_cpu_during_ms:.3f}),"
            f" worker process {result.worker_cpu_ms:.3f};"
            f" serve's core would take {1000 / result.server_cpu_ms:.0f} signups/s"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
