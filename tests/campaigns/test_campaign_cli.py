"""``newsletter campaign list`` and ``newsletter campaign check`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def newsletter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {
            key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")
        }
        environ["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
        environ.update(env)
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return newsletter


def test_campaign_list_shows_each_campaign_with_its_subject(
    run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = run("campaign", "list")
    assert result.returncode == 0, result.stderr
    assert "vitamin-k2-bone-health  Vitamin K2 and your bones" in result.stdout


def test_campaign_list_json_is_one_object_for_scripts() -> None:
    from typer.testing import CliRunner  # in-process: the subprocess path is tested above

    from campaigns.cli import app

    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert listed["campaigns"][0]["name"] == "vitamin-k2-bone-health"


def test_campaign_check_passes_the_shipped_article_locally_with_warnings(
    run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = run("campaign", "check", "vitamin-k2-bone-health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "editor's correction: 'calcitonin' -> 'osteocalcin'" in result.stdout
    assert "warning: NEWSLETTER_REPORT" in result.stdout
    assert "is ready to send" in result.stdout


def test_campaign_check_exits_1_with_the_list_of_blocking_problems(
    run: Callable[..., subprocess.CompletedProcess[str]],
    broken_copy: Callable[..., Path],
    content_dir: Path,
) -> None:
    broken_copy({"{{ reader.first_name": "{{ raeder.first_name", "Beyond bone": "TODO"})
    result = run(
        "campaign",
        "check",
        "broken",
        "--content",
        str(content_dir),
        NEWSLETTER_SMTP_URL="smtp://relay.example.org:25",
        NEWSLETTER_BASE_URL="https://news.example.org",
    )
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem: ")]
    assert any("broken.md:21: unknown variable 'raeder'" in line for line in problems)
    assert any("placeholder text 'TODO'" in line for line in problems)
    assert any("NEWSLETTER_REPORT" in line for line in problems)
    assert result.stderr.strip().splitlines() == [
        f"error: campaign 'broken' has {len(problems)} blocking problems"
    ]


def test_checking_an_unknown_campaign_is_one_line_and_exit_1(
    run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = run("campaign", "check", "no-such-campaign")
    assert result.returncode == 1
    assert result.stderr.startswith("error: campaign 'no-such-campaign': no file")
    assert len(result.stderr.strip().splitlines()) == 1
