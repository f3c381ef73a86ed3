"""``newsletter serve`` as a process: all in one, or the web app alone with a worker beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import SmtpServer, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def environment(tmp_path: Path, smtp_server: SmtpServer) -> dict[str, str]:
    """What a production start needs: a relay, an https base URL and the publisher's report."""
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 test report")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return {
        **clean,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "NEWSLETTER_SMTP_URL": smtp_server.url,
        "NEWSLETTER_BASE_URL": "https://news.example",
        "NEWSLETTER_REPORT": str(tmp_path / "report.pdf"),
        "NEWSLETTER_SECRET_KEY": "test-secret-key",
    }


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> int:
    """Interrupt the process as Ctrl-C does; its exit status (it must not hang)."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("the process did not stop within 20 s of Ctrl-C") from None


@pytest.fixture
def serve(environment: dict[str, str]) -> Iterator[tuple[str, list[subprocess.Popen[str]]]]:
    """Starts ``newsletter serve`` with given options; yields its URL and the processes."""
    processes: list[subprocess.Popen[str]] = []
    port = free_port()
    yield f"http://127.0.0.1:{port}", processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until_up(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("serve did not answer /healthz")


def count(database_url: str, query: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def sign_up(url: str, address: str) -> None:
    response = httpx.post(url + "/subscribe", json={"email": address}, timeout=10)
    assert response.status_code == 202, response.text


def test_serve_sends_the_confirmation_email_itself_and_stops_on_ctrl_c(
    serve: tuple[str, list[subprocess.Popen[str]]],
    environment: dict[str, str],
    smtp_server: SmtpServer,
) -> None:
    url, processes = serve
    server = start("serve", "--port", url.rsplit(":", 1)[1], env=environment)
    processes.append(server)
    wait_until_up(url, server)

    sign_up(url, "all-in-one@example.org")

    smtp_server.wait_for(lambda mails: len(mails) == 1, timeout=20)
    assert smtp_server.messages[0].rcpt_tos == ["all-in-one@example.org"]
    assert stop(server) == 0


def test_serve_no_worker_leaves_the_email_to_a_worker_process(
    serve: tuple[str, list[subprocess.Popen[str]]],
    environment: dict[str, str],
    smtp_server: SmtpServer,
) -> None:
    url, processes = serve
    server = start("serve", "--no-worker", "--port", url.rsplit(":", 1)[1], env=environment)
    processes.append(server)
    wait_until_up(url, server)

    sign_up(url, "web-alone@example.org")

    # The web app alone queues the email in the signup's transaction; no sender of its own has
    # said it is alive (a worker's first act), and nothing is sent until a worker runs.
    database = environment["NEWSLETTER_DATABASE_URL"]
    queued = "SELECT count(*) FROM deliveries WHERE message LIKE 'system:confirmation:%'"
    assert count(database, queued + " AND state = 'queued'") == 1
    assert count(database, "SELECT count(*) FROM delivery_workers") == 0
    assert smtp_server.messages == []
    worker = start(
        "worker", "--until-idle", "--no-clock", "--poll-interval", "0.05", env=environment
    )
    processes.append(worker)
    assert worker.wait(timeout=30) == 0, worker.stderr.read() if worker.stderr else ""
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [["web-alone@example.org"]]
    assert stop(server) == 0
