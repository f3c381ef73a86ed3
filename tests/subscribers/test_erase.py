"""Erasure (GDPR): the reader's data goes, a hash keeps the address out for good."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.db import Database
from newsletter.errors import NotFoundError, ValidationError
from subscribers.addresses import address_hash
from subscribers.erasure import erase_subscriber
from subscribers.importer import import_csv
from subscribers.models import Consent, StatusChange, Subscriber, SubscriberTag, Suppression
from subscribers.queries import find_subscriber


@pytest.fixture
def imported(database: Database, tmp_path: Path) -> Database:
    """Two readers imported as confirmed, each with tags, history and a consent record."""
    path = tmp_path / "readers.csv"
    path.write_text("email,name,tags\nada@example.com,Ada,a;b\ngrace@example.org,Grace,c\n")
    import_csv(path, "confirmed", database=database)
    return database


def rows(database: Database, model: type) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_erase_removes_the_reader_with_tags_history_and_consents(imported: Database) -> None:
    with imported.session() as session:
        erasure = erase_subscriber(session, "ada@example.com")

    assert erasure.address == "ada@example.com" and not erasure.already_erased
    with imported.session() as session:
        assert session.scalars(select(Subscriber.email)).all() == ["grace@example.org"]
        (grace_id,) = session.scalars(select(Subscriber.id)).all()
        for model in (SubscriberTag, StatusChange, Consent):
            owners = set(session.scalars(select(model.subscriber_id)))  # type: ignore[attr-defined]
            assert owners == {grace_id}, model.__name__
        suppression = session.scalars(select(Suppression)).one()
    assert suppression.address_hash == address_hash("ada@example.com")
    assert "ada" not in suppression.address_hash  # a hash, never the address


def test_erase_finds_the_reader_whatever_the_case_of_the_address(imported: Database) -> None:
    with imported.session() as session:
        erase_subscriber(session, "  ADA@Example.com ")

    assert rows(imported, Subscriber) == 1


def test_erasing_an_unknown_address_is_not_found_and_stores_nothing(database: Database) -> None:
    with database.session() as session, pytest.raises(NotFoundError, match="nothing was erased"):
        erase_subscriber(session, "nobody@example.com")

    assert rows(database, Suppression) == 0


def test_erasing_something_that_is_not_an_address_is_a_validation_error(
    database: Database,
) -> None:
    with database.session() as session, pytest.raises(ValidationError, match="email"):
        erase_subscriber(session, "not an address")


def test_erasing_twice_is_harmless(imported: Database) -> None:
    with imported.session() as session:
        erase_subscriber(session, "ada@example.com")
    with imported.session() as session:
        again = erase_subscriber(session, "ada@example.com")

    assert again.already_erased
    assert rows(imported, Suppression) == 1


def test_an_erased_reader_is_not_found_by_show_and_not_imported_again(
    imported: Database, tmp_path: Path
) -> None:
    with imported.session() as session:
        erase_subscriber(session, "ada@example.com")
    path = tmp_path / "again.csv"
    path.write_text("email\nada@example.com\n")

    summary = import_csv(path, "confirmed", database=imported)

    assert (summary.imported, summary.suppressed) == (0, 1)
    with imported.session() as session, pytest.raises(NotFoundError, match="was erased"):
        find_subscriber(session, "ada@example.com")
