"""``newsletter preview`` says where it listens (127.0.0.1 by default) and serves the index;
``newsletter campaign send-test`` sends one copy to the one address typed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import SmtpServer, free_port
from tests.newsletter.test_cli import ROOT, run_cli


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        {
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'preview.db'}",
            "NEWSLETTER_SECRET_KEY": "test-secret",
            "NEWSLETTER_FROM": "Gut Health Letter <news@example.org>",
            **extra,
        }
    )
    return env


def test_preview_binds_127_0_0_1_by_default_says_so_and_serves_the_index(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, NEWSLETTER_CAPTURE_PORT=str(free_port()))
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "preview", "--port", str(port), "--no-spam-score"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("w"),  # log lines; what it says to a person is stdout
        text=True,
    )
    try:
        assert process.stdout is not None
        said = [process.stdout.readline() for _ in range(3)]
        assert said[0].strip() == f"Email preview on http://127.0.0.1:{port}/"
        assert "Listening on 127.0.0.1 only" in said[1]
        assert "capture inbox" in said[2]
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the preview server did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert "vitamin-k2-bone-health" in answer.text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def test_send_test_sends_one_copy_to_the_address_typed_only(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    env = clean_env(tmp_path, NEWSLETTER_SMTP_URL=smtp_server.url)
    result = run_cli(
        "campaign", "send-test", "vitamin-k2-bone-health", "--to", "Designer@Example.org", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "sent 'Vitamin K2 and your bones" in result.stdout
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["designer@example.org"]
    assert mail.message["To"].addresses[0].addr_spec == "designer@example.org"
    assert "Hi Sam," in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_send_test_refuses_a_bad_address_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "campaign", "send-test", "vitamin-k2-bone-health", "--to", "nobody", env=clean_env(tmp_path)
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: email:")
