"""The newsletter command: one line and exit 1 for a user error, exit 2 for bad usage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_db_upgrade_creates_the_store(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    result = run_cli("db", "upgrade", env={"NEWSLETTER_DATABASE_URL": f"sqlite:///{database}"})
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert database.exists()


def test_a_bad_setting_is_one_line_naming_it_and_exit_1(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", env={"NEWSLETTER_DATABASE_URL": "nonsense"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: NEWSLETTER_DATABASE_URL: expected")
    assert "Traceback" not in result.stderr


def test_an_unknown_command_is_a_usage_error_with_exit_2() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_settings_are_read_from_newsletter_toml_in_the_working_directory(tmp_path: Path) -> None:
    database = tmp_path / "from-toml.db"
    (tmp_path / "newsletter.toml").write_text(f'database_url = "sqlite:///{database}"\n')
    result = run_cli("db", "upgrade", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert database.exists()


def test_serve_refuses_to_start_when_the_system_emails_cannot_be_sent(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--port",
        "1",
        env={
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "NEWSLETTER_SMTP_URL": "smtp://relay.example:587",
            "NEWSLETTER_MEDICAL_DISCLAIMER": "",
        },
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: the system emails cannot be sent:")
    assert "NEWSLETTER_MEDICAL_DISCLAIMER" in line
    assert "sample" in line.lower()
