"""CSV import: what a marketer can rely on when loading a list of readers."""

from __future__ import annotations

import itertools
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter.db import Database, utcnow
from newsletter.errors import ValidationError
from scheduler.deliveries import Delivery
from scheduler.system_mail import OutboxEvents
from subscribers import importer
from subscribers.addresses import address_hash, normalise_address
from subscribers.events import RecordedEvents
from subscribers.importer import fast_normalise, import_csv
from subscribers.models import (
    Consent,
    StatusChange,
    Subscriber,
    SubscriberTag,
    Suppression,
)


def write_csv(tmp_path: Path, text: str, name: str = "readers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def readers(database: Database) -> dict[str, Subscriber]:
    with database.session() as session:
        return {s.email: s for s in session.scalars(select(Subscriber))}


def count(database: Database, model: type) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def add_reader(database: Database, email: str, status: str, name: str = "Kept") -> int:
    with database.session() as session:
        reader = Subscriber(email=email, name=name, status=status)
        session.add(reader)
        session.flush()
        session.add(Consent(subscriber_id=reader.id, kind="signup", form="home"))
        return reader.id


# ---------------------------------------------------------------- what is stored


def test_confirmed_import_stores_name_tags_timezone_and_other_columns_as_attributes(
    database: Database, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path,
        "Email,Name,Tags,Timezone,Company,Plan\n"
        "Ada@Example.com, Ada Lovelace ,vip; news|vip,Europe/London,Analytical Engines,\n"
        "grace@example.org,,,,Navy,gold\n",
    )

    summary = import_csv(path, "confirmed", database=database)

    assert (summary.imported, summary.bad_rows) == (2, 0)
    stored = readers(database)
    ada, grace = stored["ada@example.com"], stored["grace@example.org"]
    assert (ada.name, ada.status, ada.timezone) == ("Ada Lovelace", "confirmed", "Europe/London")
    assert ada.tag_names == ["news", "vip"]
    assert ada.attributes == {"Company": "Analytical Engines"}
    assert ada.confirmed_at is not None and ada.confirmed_at.tzinfo is not None
    assert (grace.name, grace.tag_names, grace.attributes) == (
        None,
        [],
        {"Company": "Navy", "Plan": "gold"},
    )


def test_confirmed_import_records_the_file_as_each_readers_consent_and_history(
    database: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "email\nada@example.com\n", name="conference-2026.csv")

    import_csv(path, "confirmed", database=database)

    with database.session() as session:
        consent = session.scalars(select(Consent)).one()
        change = session.scalars(select(StatusChange)).one()
    assert (consent.kind, consent.form) == ("import", "conference-2026.csv")
    assert consent.consent_text and "conference-2026.csv" in consent.consent_text
    assert (change.old_status, change.new_status, change.source) == (None, "confirmed", "import")


def test_pending_import_queues_one_confirmation_per_new_reader_in_its_own_transaction(
    database: Database, tmp_path: Path
) -> None:
    add_reader(database, "old@example.com", "confirmed")
    path = write_csv(tmp_path, "email\nnew1@example.com\nold@example.com\nnew2@example.com\n")

    summary = import_csv(path, "pending", database=database, events=OutboxEvents())

    stored = readers(database)
    new_ids = {stored["new1@example.com"].id, stored["new2@example.com"].id}
    with database.session() as session:
        queued = set(session.execute(select(Delivery.message, Delivery.subscriber_id)).all())
    assert queued == {("system:confirmation:1", reader) for reader in new_ids}
    assert (summary.imported, summary.already_present) == (2, 1)
    assert stored["new1@example.com"].status == "pending"
    assert stored["new1@example.com"].confirmation_sent_at is not None
    assert count(database, Consent) == 1  # only the old reader's: a pending reader has none yet


def test_a_pending_import_whose_confirmations_cannot_be_queued_stores_nothing(
    database: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "email\nnew1@example.com\nnew2@example.com\n")

    class Broken(RecordedEvents):
        def confirmations_requested(self, session: Any, subscriber_ids: Any) -> None:
            raise RuntimeError("the outbox is unavailable")

    with pytest.raises(RuntimeError):
        import_csv(path, "pending", database=database, events=Broken())

    assert count(database, Subscriber) == 0


def test_import_requires_the_marketer_to_choose_confirmed_or_pending(
    sqlite_database: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "email\nada@example.com\n")

    for status in (None, "", "unsubscribed", "yes"):
        with pytest.raises(ValidationError, match=r"confirmed .*or .*pending"):
            import_csv(path, status, database=sqlite_database)  # type: ignore[arg-type]

    assert count(sqlite_database, Subscriber) == 0


# ---------------------------------------------------------------- bad rows


def test_bad_rows_are_reported_by_line_number_and_the_rest_is_imported(
    sqlite_database: Database, tmp_path: Path
) -> None:
    long_tag = "t" * 65
    path = tmp_path / "readers.csv"
    path.write_bytes(
        (
            "email,name,tags,timezone\n"  # line 1
            "good1@example.com,Good,,\n"  # 2
            "not-an-address,Bad,,\n"  # 3
            '"multi@example.com","two\nlines",,\n'  # 4-5: a line break inside a name
            "good2@example.com,,,Mars/Olympus\n"  # 6: unknown zone
            f"good3@example.com,,{long_tag},\n"  # 7
            "good4@example.com,a,b,c,d\n"  # 8: one cell too many
            "\n"  # 9: blank, ignored
        ).encode()
        + b"latin1@example.com,Ren\xe9,,\n"  # 10: not UTF-8
        + b"good5@example.com,\x1b[31mred,,\n"  # 11: an escape sequence
        + b"good6@example.com,Fine,,UTC\n"  # 12
    )
    reported = []

    summary = import_csv(path, "confirmed", database=sqlite_database, on_bad_row=reported.append)

    assert [error.line for error in reported] == [3, 4, 6, 7, 8, 10, 11]
    messages = [error.message for error in reported]
    assert messages[0].startswith("line 3: email:")
    assert "name: cannot contain line breaks" in messages[1]
    assert "timezone: 'Mars/Olympus' is not a time zone" in messages[2]
    assert "tags: a tag is longer than 64 characters" in messages[3]
    assert "has 5 cells but the header names 4" in messages[4]
    assert "row: is not UTF-8 text; save the file as CSV UTF-8" in messages[5]
    assert "name: cannot contain line breaks or other control characters" in messages[6]
    assert (summary.imported, summary.bad_rows) == (2, 7)
    assert summary.errors == reported
    assert set(readers(sqlite_database)) == {"good1@example.com", "good6@example.com"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("name,company\nAda,Engines\n", "must be a header with an 'email' column"),
        ("email,Email\na@example.com,b@example.com\n", "names 'email' twice"),
    ],
)
def test_a_file_without_a_usable_header_is_refused_before_anything_is_stored(
    sqlite_database: Database, tmp_path: Path, content: str, problem: str
) -> None:
    path = write_csv(tmp_path, content)

    with pytest.raises(ValidationError, match=problem):
        import_csv(path, "confirmed", database=sqlite_database)

    assert count(sqlite_database, Subscriber) == 0


def test_a_missing_file_is_named_in_the_error(sqlite_database: Database, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"no-such\.csv: no such file"):
        import_csv(tmp_path / "no-such.csv", "confirmed", database=sqlite_database)


def test_an_interrupted_import_keeps_whole_chunks_and_running_it_again_completes_it(
    sqlite_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)
    monkeypatch.setattr(importer, "COMMIT_SECONDS", 0)  # a transaction per chunk
    monkeypatch.setattr(importer, "SQLITE_PAUSE_SECONDS", 0)
    path = write_csv(
        tmp_path, "email,tags\n" + "".join(f"r{i}@example.com,t{i}\n" for i in range(10))
    )
    chunks_done: list[int] = []

    def interrupt_after_three_chunks(done: int, total: int) -> None:
        chunks_done.append(done)
        if len(chunks_done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_csv(
            path, "confirmed", database=sqlite_database, on_progress=interrupt_after_three_chunks
        )

    assert sorted(readers(sqlite_database)) == sorted(f"r{i}@example.com" for i in range(6))
    assert count(sqlite_database, StatusChange) == count(sqlite_database, Consent) == 6

    again = import_csv(path, "confirmed", database=sqlite_database)

    assert (again.imported, again.already_present) == (4, 6)
    stored = readers(sqlite_database)
    assert {email: reader.tag_names for email, reader in stored.items()} == {
        f"r{i}@example.com": [f"t{i}"] for i in range(10)
    }
    assert count(sqlite_database, StatusChange) == count(sqlite_database, Consent) == 10


def test_a_signup_during_a_long_import_is_stored_before_the_import_ends(
    sqlite_database: Database, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 20)
    monkeypatch.setattr(importer, "COMMIT_SECONDS", 0.05)
    path = write_csv(tmp_path, "email\n" + "".join(f"r{i}@example.com\n" for i in range(6000)))
    started, finished = threading.Event(), threading.Event()

    def slow_progress(done: int, total: int) -> None:
        started.set()
        time.sleep(0.005)  # 300 chunks: the import lasts well over a second

    def run_import() -> None:
        try:
            import_csv(path, "confirmed", database=sqlite_database, on_progress=slow_progress)
        finally:
            finished.set()

    importing = threading.Thread(target=run_import)
    importing.start()
    try:
        assert started.wait(30)
        web = Database(sqlite_url)  # another connection, as the web app has
        try:
            add_reader(web, "signup@example.com", "pending")
            signed_up_before_the_end = not finished.is_set()
        finally:
            web.dispose()
    finally:
        importing.join(60)

    assert signed_up_before_the_end
    assert count(sqlite_database, Subscriber) == 6001


def test_tags_reach_the_right_readers_around_known_and_erased_addresses(
    database: Database, tmp_path: Path
) -> None:
    add_reader(database, "known@example.com", "confirmed")
    with database.session() as session:
        session.add(
            Suppression(
                address_hash=address_hash("erased@example.com"), reason="erased", at=utcnow()
            )
        )
    path = write_csv(
        tmp_path,
        "email,tags\n"
        "first@example.com,a\n"
        "known@example.com,b\n"
        "erased@example.com,c\n"
        "last@example.com,d;e\n",
    )

    summary = import_csv(path, "confirmed", database=database)

    assert (summary.imported, summary.already_present, summary.suppressed) == (2, 1, 1)
    stored = readers(database)
    assert {email: reader.tag_names for email, reader in stored.items()} == {
        "first@example.com": ["a"],
        "known@example.com": [],
        "last@example.com": ["d", "e"],
    }


def test_a_header_with_a_byte_order_mark_and_mailchimp_column_names_is_understood(
    sqlite_database: Database, tmp_path: Path
) -> None:
    path = tmp_path / "mailchimp.csv"
    path.write_bytes("\ufeffEmail Address,First Name\r\nada@example.com,Ada\r\n".encode())

    summary = import_csv(path, "confirmed", database=sqlite_database)

    assert summary.imported == 1
    assert readers(sqlite_database)["ada@example.com"].attributes == {"First Name": "Ada"}


# ---------------------------------------------------------------- never duplicated, never revived


def test_an_address_repeated_in_the_file_is_imported_once_even_across_chunks(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)
    path = write_csv(
        tmp_path,
        "email,name\n"
        "ada@example.com,First\n"
        " ADA@example.com ,Second\n"  # same chunk, other spelling
        "b@example.com,\n"
        "c@example.com,\n"
        "d@example.com,\n"
        "Ada@Example.COM,Third\n",  # a later chunk
    )

    summary = import_csv(path, "confirmed", database=database)

    assert (summary.imported, summary.repeated, summary.already_present) == (4, 2, 0)
    assert readers(database)["ada@example.com"].name == "First"
    assert count(database, StatusChange) == 4
    assert count(database, Consent) == 4


def test_importing_the_same_file_twice_adds_nothing_the_second_time(
    database: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "email,tags\nada@example.com,a;b\ngrace@example.com,c\n")
    import_csv(path, "confirmed", database=database)

    again = import_csv(path, "confirmed", database=database)

    assert (again.imported, again.already_present) == (0, 2)
    assert count(database, Subscriber) == 2
    assert count(database, SubscriberTag) == 3
    assert count(database, Consent) == 2


def test_existing_readers_keep_their_status_consent_and_data(
    database: Database, tmp_path: Path
) -> None:
    add_reader(database, "gone@example.com", "unsubscribed", name="Original")
    add_reader(database, "bounced@example.com", "bounced")
    add_reader(database, "pending@example.com", "pending")
    path = write_csv(
        tmp_path,
        "email,name,tags\n"
        "gone@example.com,Changed,vip\n"
        "bounced@example.com,,\n"
        "pending@example.com,,\n",
    )

    summary = import_csv(path, "confirmed", database=database)

    stored = readers(database)
    assert stored["gone@example.com"].status == "unsubscribed"
    assert stored["gone@example.com"].name == "Original"
    assert stored["gone@example.com"].tag_names == []
    assert stored["bounced@example.com"].status == "bounced"
    assert stored["pending@example.com"].status == "pending"
    with database.session() as session:
        assert [c.kind for c in session.scalars(select(Consent))] == ["signup"] * 3
    assert (summary.imported, summary.already_present, summary.left_unsubscribed) == (0, 3, 2)


def test_an_erased_address_is_never_imported_again(database: Database, tmp_path: Path) -> None:
    with database.session() as session:
        session.add(
            Suppression(
                address_hash=address_hash("erased@example.com"), reason="erased", at=utcnow()
            )
        )
    path = write_csv(tmp_path, "email\nErased@Example.com\nkept@example.com\n")

    summary = import_csv(path, "confirmed", database=database)

    assert (summary.imported, summary.suppressed) == (1, 1)
    assert set(readers(database)) == {"kept@example.com"}


# ---------------------------------------------------------------- the fast address check

plain_local = st.from_regex(r"[A-Za-z0-9_+\-.'%!#]{1,70}", fullmatch=True)
plain_label = st.from_regex(r"[A-Za-z0-9\-]{1,66}", fullmatch=True)
tricky_address = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
    plain_local,
    st.lists(plain_label, min_size=0, max_size=4),
    st.sampled_from(["com", "org", "test", "local", "c", "x1", "123", "co-op", "Com", "xn--p1ai"]),
)
near_ascii = st.text(
    alphabet=st.sampled_from("aZ09._+-@'\"()[],:;<>\\ \t\u00e9\u0131\u212a\uff41!#%~"),
    max_size=40,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(tricky_address, near_ascii, st.emails()))
@example("a@b.test")
@example("a@xn--80ak6aa92e.com")
@example("a@ab--cd.com")
@example("a..b@example.com")
@example(".a@example.com")
@example("a@example.c")
@example("a@example.123")
@example("a@-example.com")
@example("a@example-.com")
@example("x" * 65 + "@example.com")
@example("a@" + "d" * 64 + ".com")
@example("a@" + ".".join(["d" * 63] * 4) + ".com")
@example("a@localhost")
@example("a@sub.onion")
@example("K\u212aelvin@example.com")
def test_the_fast_address_check_never_accepts_what_email_validator_rejects(
    candidate: str,
) -> None:
    fast = fast_normalise(candidate)
    if fast is None:
        return  # email-validator decides, as for every signup
    try:
        validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as error:  # pragma: no cover - the property under test
        pytest.fail(f"fast path accepted {candidate!r}, which email-validator rejects: {error}")
    assert fast == normalise_address(candidate)


def test_the_fast_address_check_takes_ordinary_addresses() -> None:
    assert fast_normalise("Jane.Doe+news@Mail.Example.co.uk") == "jane.doe+news@mail.example.co.uk"
    assert fast_normalise("o'brien@example.ie") is None  # valid, but email-validator's call


def test_a_large_file_parsed_in_a_child_process_gives_the_same_result(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(importer, "CHUNK_ROWS", 3)
    path = write_csv(
        tmp_path,
        "email,tags\n"
        + "".join(f"r{i}@example.com,t{i % 2}\n" for i in range(10))
        + "bad,\nr1@example.com,\n",
    )
    reported = []

    summary = import_csv(path, "confirmed", database=database, on_bad_row=reported.append)

    assert (summary.imported, summary.repeated, summary.bad_rows) == (10, 1, 1)
    assert [error.line for error in reported] == [12]
    assert count(database, SubscriberTag) == 10


def test_an_import_started_on_a_whole_second_still_links_history_and_tags(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_the_second = utcnow().replace(microsecond=0)
    monkeypatch.setattr(importer, "utcnow", lambda: on_the_second)
    path = write_csv(tmp_path, "email,tags\nada@example.com,vip\n")

    summary = import_csv(path, "confirmed", database=database)

    assert summary.imported == 1
    assert (count(database, StatusChange), count(database, SubscriberTag)) == (1, 1)


def test_reader_keys_are_unique_unguessable_url_safe_and_fit_the_column() -> None:
    keys = list(itertools.islice(importer._keys(batch=16), 1000))

    assert len(set(keys)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{8}[A-Za-z0-9_-]{24}", key) for key in keys)
    assert max(map(len, keys)) <= Subscriber.__table__.c.key.type.length
    assert len({key[8:] for key in keys}) == 1000  # the random part alone tells them apart


def test_reader_keys_of_an_import_sort_in_the_order_they_are_made() -> None:
    keys = list(itertools.islice(importer._keys(batch=16), 1000))

    assert keys == sorted(keys)


def test_attribute_values_with_quotes_backslashes_and_any_script_are_stored_exactly(
    database: Database, tmp_path: Path
) -> None:
    awkward = ['say "hi"', "C:\\temp\\", "Zoë – 東京 🚀", "{'not': json}", "a,b;c|d", "\\u0041"]
    rows = "".join(
        f'r{i}@example.com,"{value.replace(chr(34), chr(34) * 2)}",plain\n'
        for i, value in enumerate(awkward)
    )
    path = write_csv(tmp_path, 'email,Note,Other "quoted" column\n' + rows)

    import_csv(path, "confirmed", database=database)

    stored = readers(database)
    assert [stored[f"r{i}@example.com"].attributes for i in range(len(awkward))] == [
        {"Note": value, 'Other "quoted" column': "plain"} for value in awkward
    ]


def test_a_row_that_is_not_valid_csv_is_reported_and_the_rest_imported(
    sqlite_database: Database, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path,
        "email,name\n"
        '"h h"@example.com,Quoted\n'  # a quote in the middle of a cell
        "ok@example.com," + "x" * 200_000 + "\n"  # a cell beyond csv's field limit
        "fine@example.com,Fine\n",
    )

    summary = import_csv(path, "confirmed", database=sqlite_database)

    assert [error.line for error in summary.errors] == [2, 3]
    assert all("is not valid CSV (" in error.message for error in summary.errors)
    assert set(readers(sqlite_database)) == {"fine@example.com"}


def test_the_consent_source_is_one_line_of_text(sqlite_database: Database, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "email\nada@example.com\n", name="odd\nname.csv")

    with pytest.raises(ValidationError, match="--source: must be a name on one line"):
        import_csv(path, "confirmed", database=sqlite_database, source="a\r\nb")
    import_csv(path, "confirmed", database=sqlite_database)

    with sqlite_database.session() as session:
        assert session.scalars(select(Consent.form)).all() == ["odd?name.csv"]
