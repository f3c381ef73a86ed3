"""CSV export: every matching reader, re-importable, and safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.db import Database
from newsletter.errors import ValidationError
from subscribers.export import escape_cell, export_csv, export_to_file
from subscribers.importer import import_csv
from subscribers.models import Subscriber, SubscriberTag
from subscribers.queries import ReaderFilter


def add(database: Database, email: str, status: str = "confirmed", **fields: object) -> None:
    tags = fields.pop("tags", [])
    with database.session() as session:
        reader = Subscriber(email=email, status=status, **fields)
        session.add(reader)
        session.flush()
        for tag in tags:  # type: ignore[attr-defined]
            session.add(SubscriberTag(subscriber_id=reader.id, tag=tag))


def exported(database: Database, where: ReaderFilter | None = None) -> list[dict[str, str]]:
    out = io.StringIO()
    with database.session() as session:
        export_csv(session, out, where)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def test_export_writes_every_reader_with_tags_and_one_column_per_attribute(
    database: Database,
) -> None:
    add(database, "ada@example.com", name="Ada", tags=["vip", "news"], attributes={"Company": "AE"})
    add(database, "grace@example.org", status="unsubscribed", attributes={"Plan": "gold"})

    rows = exported(database)

    assert [row["email"] for row in rows] == ["ada@example.com", "grace@example.org"]
    assert rows[0]["tags"] == "news;vip"
    assert (rows[0]["Company"], rows[0]["Plan"]) == ("AE", "")
    assert (rows[1]["status"], rows[1]["Plan"]) == ("unsubscribed", "gold")
    assert rows[0]["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("Ada = Lovelace", "Ada = Lovelace"),
        ("", ""),
    ],
)
def test_a_cell_that_begins_like_a_formula_is_escaped(cell: str, shown: str) -> None:
    assert escape_cell(cell) == shown


def test_export_escapes_formulas_in_names_attributes_and_column_names(
    database: Database,
) -> None:
    add(database, "ada@example.com", name="=cmd|' /C calc'!A0", attributes={"@col": "-1"})

    rows = exported(database)

    assert rows[0]["name"] == "'=cmd|' /C calc'!A0"
    assert rows[0]["'@col"] == "'-1"


def test_export_filters_by_status_tag_and_search_as_parameters(database: Database) -> None:
    add(database, "ada@example.com", name="Ada", tags=["vip"])
    add(database, "grace@example.org", status="pending", name="Grace 100%")
    add(database, "o'hara@example.com", name="Scarlett")

    def emails(**options: str) -> list[str]:
        return [row["email"] for row in exported(database, ReaderFilter.parse(**options))]

    assert emails(status="pending") == ["grace@example.org"]
    assert emails(tag="vip") == ["ada@example.com"]
    assert emails(search="GRACE") == ["grace@example.org"]
    assert emails(search="100%") == ["grace@example.org"]
    assert emails(search="%") == ["grace@example.org"]  # a literal percent sign, not a wildcard
    assert emails(search="o'hara") == ["o'hara@example.com"]
    assert emails(search="' OR '1'='1") == []
    assert emails(tag="vip' OR '1'='1") == []


def test_an_unknown_status_filter_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match="use one of pending, confirmed"):
        ReaderFilter.parse(status="active")


def test_an_export_imports_back_to_the_same_readers(
    database: Database, sqlite_url: str, tmp_path: Path
) -> None:
    add(
        database,
        "ada@example.com",
        name="Ada",
        tags=["a", "b"],
        timezone="Europe/Paris",
        attributes={"Company": "AE"},
    )
    add(database, "grace@example.org")
    path = tmp_path / "export.csv"
    with database.session() as session:
        assert export_to_file(session, path) == 2
    fresh = Database(sqlite_url.replace("newsletter.db", "fresh.db"))
    fresh.upgrade()

    summary = import_csv(path, "confirmed", database=fresh)

    assert (summary.imported, summary.bad_rows) == (2, 0)
    with fresh.session() as session:
        ada = session.scalars(select(Subscriber).where(Subscriber.email == "ada@example.com")).one()
        assert (ada.name, ada.tag_names, ada.timezone) == ("Ada", ["a", "b"], "Europe/Paris")
        assert ada.attributes == {"Company": "AE"}
    fresh.dispose()


def test_export_to_a_missing_directory_is_refused_and_leaves_no_file(
    database: Database, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "out.csv"

    with database.session() as session, pytest.raises(ValidationError, match="no such directory"):
        export_to_file(session, target)

    assert not target.parent.exists()


def test_a_failed_export_leaves_an_existing_file_untouched(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(database, "ada@example.com")
    target = tmp_path / "exports" / "out.csv"
    target.parent.mkdir()
    target.write_text("previous export\n")

    def broken(*args: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr("subscribers.export.export_csv", broken)
    with database.session() as session, pytest.raises(OSError):
        export_to_file(session, target)

    assert target.read_text() == "previous export\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]
