"""postfix's ``smtp-sink`` for the delivery benchmarks: a C SMTP server that takes and drops
every message, started on a free loopback port and stopped when the benchmark ends.

    with running_sink() as sink:
        ...  # send to smtp://127.0.0.1:{sink.port}; sink.pid for its CPU time
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Sink:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        """The sink's user + system CPU seconds so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """``smtp-sink -u nobody 127.0.0.1:PORT 1000``, once it accepts connections."""
    sink = subprocess.Popen(
        [
            shutil.which("smtp-sink") or "/usr/sbin/smtp-sink",
            "-u",
            "nobody",
            f"127.0.0.1:{port}",
            "1000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return sink
        except OSError:
            time.sleep(0.02)
    sink.kill()
    raise RuntimeError("smtp-sink did not start (is postfix installed? see RECIPES.md)")


@contextmanager
def running_sink() -> Iterator[Sink]:
    port = free_port()
    process = start_sink(port)
    try:
        yield Sink(port, process)
    finally:
        process.terminate()
        process.wait()
