"""``newsletter subscribers …`` as a marketer runs it: exit codes, output, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from newsletter import runtime
from newsletter.cli import app
from newsletter.db import Database
from newsletter.errors import ValidationError
from newsletter.settings import Settings
from subscribers.events import RecordedEvents
from subscribers.importer import import_csv
from subscribers.models import Subscriber

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def newsletter(sqlite_url: str, tmp_path: Path) -> Run:
    """Runs ``python -m newsletter ARGS`` from the repository root against a fresh SQLite file."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
        "NEWSLETTER_DATABASE_URL": sqlite_url,
        "NEWSLETTER_SECRET_KEY": "test-secret-key",
    }

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def stored(sqlite_url: str) -> int:
    database = Database(sqlite_url)
    database.upgrade()
    with database.session() as session:
        total = session.scalar(select(func.count(Subscriber.id))) or 0
    database.dispose()
    return total


def seed(sqlite_url: str, tmp_path: Path) -> None:
    """Ada (tags vip, news) and Grace (news), imported as confirmed through the domain function."""
    database = Database(sqlite_url)
    database.upgrade()
    import_csv(readers_csv(tmp_path), "confirmed", database=database)
    database.dispose()


def readers_csv(tmp_path: Path) -> Path:
    path = tmp_path / "readers.csv"
    path.write_text(
        "email,name,tags,company\n"
        'ada@example.com,Ada,vip;news,=HYPERLINK("http://x")\n'
        "not-an-address,Bad,,\n"
        "grace@example.org,Grace,news,Navy\n"
        "ada@example.com,Again,,\n"
    )
    return path


def test_import_reports_bad_rows_by_line_then_a_summary_and_show_prints_the_consent(
    newsletter: Run, tmp_path: Path
) -> None:
    result = newsletter(
        "subscribers", "import", str(readers_csv(tmp_path)), "--status", "confirmed"
    )

    assert result.returncode == 0, result.stderr
    assert "readers.csv: line 3: email:" in result.stderr
    assert result.stdout.strip() == (
        "imported 2 as confirmed; already present 0; repeated in the file 1; "
        "suppressed (erased) 0; bad rows 1"
    )
    shown = newsletter("subscribers", "show", "ADA@example.com")
    assert shown.returncode == 0, shown.stderr
    assert "status:     confirmed" in shown.stdout
    assert "tags:       news, vip" in shown.stdout
    assert "import  form readers.csv" in shown.stdout


def test_import_without_a_status_exits_1_with_one_line_and_stores_nothing(
    newsletter: Run, tmp_path: Path, sqlite_url: str
) -> None:
    result = newsletter("subscribers", "import", str(readers_csv(tmp_path)))

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "--status confirmed" in result.stderr and "Traceback" not in result.stderr
    assert stored(sqlite_url) == 0


def test_erase_asks_first_and_changes_nothing_without_a_yes(
    newsletter: Run, tmp_path: Path, sqlite_url: str
) -> None:
    seed(sqlite_url, tmp_path)

    declined = newsletter("subscribers", "erase", "ada@example.com", stdin="n\n")

    assert declined.returncode == 1
    assert declined.stderr.endswith(
        "error: ada@example.com was not erased (answer y, or pass --yes)\n"
    )
    assert stored(sqlite_url) == 2


def test_show_of_a_malformed_address_exits_1_with_one_line(newsletter: Run) -> None:
    malformed = newsletter("subscribers", "show", "nobody")

    assert malformed.returncode == 1
    assert malformed.stderr.startswith("error: email: ")
    assert malformed.stderr.count("\n") == 1


# ---------------------------------------------------------------- in-process, for speed


@pytest.fixture
def cli(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    """Invokes the ``newsletter`` Typer app in this process, on the test's SQLite database."""
    monkeypatch.setattr(runtime, "_settings", make_settings())

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    yield invoke
    runtime.reset()


def test_list_json_is_one_object_and_filters_by_status_tag_and_search(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path
) -> None:
    seed(sqlite_url, tmp_path)

    def listed(*options: str) -> dict[str, Any]:
        result = cli("subscribers", "list", "--json", *options)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    everyone = listed()
    assert everyone["total"] == 2
    assert [r["email"] for r in everyone["subscribers"]] == ["ada@example.com", "grace@example.org"]
    assert [r["email"] for r in listed("--tag", "vip")["subscribers"]] == ["ada@example.com"]
    assert [r["email"] for r in listed("--search", "GRA")["subscribers"]] == ["grace@example.org"]
    assert listed("--status", "pending") == {"total": 0, "shown": 0, "subscribers": []}
    assert listed("--limit", "1")["shown"] == 1


def test_list_prints_one_reader_per_line(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path
) -> None:
    seed(sqlite_url, tmp_path)

    result = cli("subscribers", "list", "--tag", "news")

    assert result.stdout.splitlines() == [
        "ada@example.com\tconfirmed\tAda\tnews,vip",
        "grace@example.org\tconfirmed\tGrace\tnews",
    ]


def test_export_to_standard_output_escapes_formula_cells(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path
) -> None:
    seed(sqlite_url, tmp_path)

    result = cli("subscribers", "export", "--tag", "vip")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "email,name,status,tags,timezone,created_at,confirmed_at,company"
    assert lines[1].startswith("ada@example.com,Ada,confirmed,news;vip,,")
    assert lines[1].endswith(',"\'=HYPERLINK(""http://x"")"')
    assert len(lines) == 2


def test_export_to_a_file_writes_it_and_says_how_many(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path
) -> None:
    seed(sqlite_url, tmp_path)
    target = tmp_path / "out.csv"

    result = cli("subscribers", "export", str(target))

    assert result.exit_code == 0, result.output
    assert f"exported 2 readers to {target}" in result.stderr
    assert target.read_text().count("\n") == 3


def test_import_of_a_file_without_an_email_column_names_the_file(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("name,phone\nAda,123\n")

    result = cli("subscribers", "import", str(path), "--status", "confirmed")

    assert isinstance(result.exception, ValidationError)
    assert result.exception.message.startswith("file: contacts.csv: the first row must be")


def test_pending_import_through_the_command_asks_the_hook_for_confirmation_emails(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = RecordedEvents()
    monkeypatch.setattr(runtime, "_events", events)

    result = cli(
        "subscribers",
        "import",
        str(readers_csv(tmp_path)),
        "--status",
        "pending",
        "--source",
        "webinar-2026",
    )

    assert result.exit_code == 0, result.output
    assert "imported 2 as pending" in result.stdout
    assert "2 confirmation emails requested" in result.stdout
    assert [kind for kind, _ in events.events] == ["confirmation_requested"] * 2
    assert stored(sqlite_url) == 2
    shown = cli("subscribers", "show", "ada@example.com", "--json")
    details = json.loads(shown.stdout)
    assert (details["status"], details["form"], details["consents"]) == (
        "pending",
        "webinar-2026",
        [],
    )
    assert details["history"][0]["to"] == "pending"


def test_erase_with_yes_erases_and_a_second_erase_says_so(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path
) -> None:
    seed(sqlite_url, tmp_path)

    first = cli("subscribers", "erase", "ADA@example.com", "--yes")
    second = cli("subscribers", "erase", "ada@example.com", "--yes")

    assert first.exit_code == 0, first.output
    assert first.stdout == "erased ada@example.com; its hash is kept so it is never added again\n"
    assert second.stdout == "ada@example.com was already erased; nothing left to remove\n"
    assert stored(sqlite_url) == 1


def test_erase_answered_yes_at_the_prompt_erases(
    cli: Callable[..., Result], sqlite_url: str, tmp_path: Path
) -> None:
    seed(sqlite_url, tmp_path)

    result = CliRunner().invoke(app, ["subscribers", "erase", "grace@example.org"], input="y\n")

    assert result.exit_code == 0, result.output
    assert stored(sqlite_url) == 1
