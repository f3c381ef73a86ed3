"""CSV import: many readers at once, streamed, validated row by row, never duplicated.

``import_csv()`` reads a CSV file with a header row naming an ``email`` column and optionally
``name``, ``tags`` (separated by ``;`` or ``|``), ``timezone``; every other column becomes an
attribute. A malformed row is reported by its line number and skipped; the rest is imported.

What the store already holds wins: an address already present is left exactly as it is (its
status, consent, name and tags), so an import never revives an unsubscribed, bounced or complained
reader, and an erased address (kept only as a suppression hash) is never added again.

An import commits about once a second (``COMMIT_SECONDS``), whole chunks at a time: an
interrupted import (a database error, Ctrl-C) keeps the chunks committed before it, each reader
with its history, consent and tags, and running the same file again completes it (what is
stored is left as it is). Readers imported as ``pending`` are handed to the ``SubscriberEvents``
hook inside the transaction that creates them, one confirmation email each (queued in the
deliveries outbox, so they exist exactly when the readers do). On SQLite, which has one writer
at a time, the import leaves the write lock free for ``SQLITE_PAUSE_SECONDS`` after each commit,
so a signup that arrives during a long import waits about a second at most, not for the whole
file; PostgreSQL signups proceed alongside. A signup of an address the import also holds wins
(ON CONFLICT DO NOTHING).

Addresses are checked for syntax only (no DNS lookups, whatever
``NEWSLETTER_CHECK_DELIVERABILITY`` says: a million lookups would take hours).

Speed, measured by ``bench/import.py`` (figures in BENCHMARKS.md), comes from: a forked process
that parses a large file while this one writes; plain ASCII addresses checked by
``fast_normalise()`` instead of email-validator (which accepts every one of them and normalises
it the same way; ``tests/subscribers/test_import.py`` proves it with hypothesis); each chunk sent
to the database as two JSON strings that it unpacks itself, so that this process handles no
Python object per reader; on SQLite, ids numbered by the import (it holds the write lock), so
that tags, history and consent are written by id with set-based ``INSERT … SELECT``
statements; keys that sort in the order they are written; and no cyclic garbage collection
while writing.
"""

from __future__ import annotations

import base64
import csv
import gc
import json
import multiprocessing
import queue
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from sqlalchemy import (
    Connection,
    Dialect,
    Executable,
    Integer,
    String,
    Text,
    TextClause,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from newsletter.db import Database, UTCDateTime, utcnow
from newsletter.errors import ImportRowError, ValidationError
from subscribers.addresses import MAX_ADDRESS_LENGTH, address_hash, normalise_address
from subscribers.events import SubscriberEvents
from subscribers.models import (
    SUPPRESSED_STATUSES,
    Consent,
    Status,
    StatusChange,
    Subscriber,
    SubscriberTag,
    Suppression,
)

# Rows validated and written together; bounded so that memory stays flat whatever the file size.
CHUNK_ROWS = 5_000
# Files at least this large are parsed in a forked process while this one writes (2 cores).
PARALLEL_MIN_BYTES = 4_000_000
CHILD_QUEUE_CHUNKS = 8
KEY_BYTES = 18  # a multiple of 3: keys made in bulk slice out of one base64 encoding
KEY_COUNTER_MASK = 0xFFFF_FFFF  # the keys' 8-hex-digit prefix; the key column holds 32 characters
# SQLite's page cache while an import writes (KiB), so that index pages stay in memory.
SQLITE_CACHE_KIB = 256 * 1024
# Each transaction of an import is committed once it has been open this long: on SQLite a signup
# that arrives during an import waits at most about this long (plus the pause below) for the lock.
COMMIT_SECONDS = 1.0
# After each commit on SQLite the import leaves the write lock free this long: a waiting
# connection's busy handler retries at most every 100 ms, so it finds the lock free.
SQLITE_PAUSE_SECONDS = 0.1
# Column names (compared without case or surrounding spaces) that map to the reader's own fields.
EMAIL_COLUMNS = ("email", "email address", "e-mail")
NAME_COLUMN = "name"
TAGS_COLUMN = "tags"
TIMEZONE_COLUMN = "timezone"
# Bookkeeping columns that an export writes: ignored on import (the import sets them itself).
IGNORED_COLUMNS = ("status", "created_at", "confirmed_at", "status_changed_at")
TAG_SEPARATOR = re.compile(r"[;|]")
MAX_NAME_LENGTH = 200
MAX_TAG_LENGTH = 64
MAX_ATTRIBUTE_LENGTH = 1_000
MAX_SOURCE_LENGTH = 64
# Line breaks, NUL and the other C0 controls and DEL: refused in every cell (terminals, headers).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

IMPORT_STATUSES = (Status.CONFIRMED, Status.PENDING)

# ---------------------------------------------------------------- addresses, the fast path

# A strict subset of what email-validator accepts: a dot-atom local part of letters, digits and
# ``_ + -``, at most 64 characters, and a domain of two or more LDH labels (no ``--`` anywhere,
# which also keeps out Punycode) ending in an alphabetic top-level label. Anything else, and any
# special-use domain, goes to email-validator.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_SPECIAL_USE_SUFFIXES = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)


def fast_normalise(candidate: str) -> str | None:
    """The normalised form of a plain ASCII address, or None when email-validator must decide.

    ``candidate`` is already stripped. Whatever this accepts, ``normalise_address`` accepts too
    and normalises to the same string; it never accepts what email-validator rejects.
    """
    if len(candidate) > MAX_ADDRESS_LENGTH or not _PLAIN_ADDRESS.fullmatch(candidate):
        return None
    local, _, domain = candidate.partition("@")
    if len(local) > 64 or len(domain) > 253 or "--" in domain:
        return None
    lowered = candidate.lower()
    if lowered.endswith(_SPECIAL_USE_SUFFIXES):
        return None
    return lowered


def import_address(raw: str) -> str:
    """The normalised address of one CSV cell; raises ``ValidationError`` like signup does."""
    candidate = raw.strip()
    return fast_normalise(candidate) or normalise_address(candidate)


# ---------------------------------------------------------------- the result


@dataclass
class ImportSummary:
    """What an import did, row by row, for the marketer's final report."""

    imported: int = 0
    already_present: int = 0
    left_unsubscribed: int = 0  # of already_present: unsubscribed, bounced or complained
    repeated: int = 0  # rows whose address appeared earlier in the same file
    suppressed: int = 0  # erased addresses, kept out
    bad_rows: int = 0
    errors: list[ImportRowError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS

    @property
    def rows(self) -> int:
        return (
            self.imported + self.already_present + self.repeated + self.suppressed + self.bad_rows
        )


MAX_KEPT_ERRORS = 1_000


# ---------------------------------------------------------------- reading the file


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None
    tags: int | None
    timezone: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int


def _columns(header: list[str], path: Path) -> _Columns:
    names = [cell.strip().lstrip("\ufeff").strip() for cell in header]
    lowered = [name.lower() for name in names]
    seen: set[str] = set()
    for name in lowered:
        if name and name in seen:
            raise ValidationError({"file": f"{path.name}: the header names {name!r} twice"})
        seen.add(name)
    emails = [index for index, name in enumerate(lowered) if name in EMAIL_COLUMNS]
    if not emails:
        raise ValidationError(
            {
                "file": f"{path.name}: the first row must be a header with an 'email' column "
                f"(found {', '.join(repr(n) for n in names[:8]) or 'nothing'})"
            }
        )
    if len(emails) > 1:
        raise ValidationError({"file": f"{path.name}: the header has more than one email column"})

    def find(column: str) -> int | None:
        return lowered.index(column) if column in lowered else None

    known = {*EMAIL_COLUMNS, NAME_COLUMN, TAGS_COLUMN, TIMEZONE_COLUMN, *IGNORED_COLUMNS, ""}
    attributes = tuple(
        (index, names[index]) for index, name in enumerate(lowered) if name not in known
    )
    return _Columns(
        emails[0],
        find(NAME_COLUMN),
        find(TAGS_COLUMN),
        find(TIMEZONE_COLUMN),
        attributes,
        len(names),
    )


class _Lines:
    """The file's lines as text, counting bytes read and remembering lines that are not UTF-8."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.bytes_read = 0
        self.line = 0
        self.bad_lines: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            self.line += 1
            self.bytes_read += len(raw)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_lines.add(self.line)
                yield raw.decode("utf-8", "replace")


@dataclass
class _Row:
    line: int
    email: str
    name: str | None
    tags: list[str]
    timezone: str | None
    attributes: dict[str, str]


class _RowReader:
    """Turns CSV records into validated rows, or ``ImportRowError`` naming the line."""

    def __init__(self, columns: _Columns) -> None:
        self.columns = columns
        self.zones: dict[str, str | None] = {}  # cell -> error message (None: a known zone)
        self.tag_lists: dict[str, tuple[list[str], str | None]] = {}  # cell -> (tags, error)

    def parse(self, line: int, record: list[str]) -> _Row:
        columns = self.columns
        if len(record) != columns.width:
            if len(record) > columns.width:
                raise ImportRowError(
                    line,
                    {"row": f"has {len(record)} cells but the header names {columns.width}"},
                )
            record = record + [""] * (columns.width - len(record))
        errors: dict[str, str] = {}
        try:
            email = import_address(record[columns.email])
        except ValidationError as error:
            email = ""
            errors.update(error.errors)
        if CONTROL_CHARACTERS.search("".join(record)):
            self._control_characters(record, errors)
        name = tags_cell = zone = None
        if columns.name is not None:
            name = record[columns.name].strip() or None
            if name is not None and len(name) > MAX_NAME_LENGTH:
                errors[NAME_COLUMN] = f"is longer than {MAX_NAME_LENGTH} characters"
        tags: list[str] = []
        if columns.tags is not None and (tags_cell := record[columns.tags].strip()):
            tags, tags_error = self._tags(tags_cell)
            if tags_error:
                errors[TAGS_COLUMN] = tags_error
        if columns.timezone is not None and (zone := record[columns.timezone].strip() or None):
            zone_error = self._zone_error(zone)
            if zone_error:
                errors[TIMEZONE_COLUMN] = zone_error
        attributes: dict[str, str] = {}
        for index, key in columns.attributes:
            value = record[index].strip()
            if value:
                if len(value) > MAX_ATTRIBUTE_LENGTH:
                    errors[key] = f"is longer than {MAX_ATTRIBUTE_LENGTH} characters"
                attributes[key] = value
        if errors:
            raise ImportRowError(line, errors)
        return _Row(line, email, name, tags, zone, attributes)

    def _control_characters(self, record: list[str], errors: dict[str, str]) -> None:
        """Name each cell that holds a line break or a NUL: no field of a reader may."""
        columns = self.columns
        labels: dict[int | None, str] = {
            columns.email: "email",
            columns.name: NAME_COLUMN,
            columns.tags: TAGS_COLUMN,
            columns.timezone: TIMEZONE_COLUMN,
            **dict(columns.attributes),
        }
        for index, label in labels.items():
            if index is not None and CONTROL_CHARACTERS.search(record[index].strip()):
                errors[label] = "cannot contain line breaks or other control characters"

    def _tags(self, cell: str) -> tuple[list[str], str | None]:
        known = self.tag_lists.get(cell)
        if known is None:
            tags = sorted({tag.strip() for tag in TAG_SEPARATOR.split(cell) if tag.strip()})
            error = None
            if any(len(tag) > MAX_TAG_LENGTH for tag in tags):
                error = f"a tag is longer than {MAX_TAG_LENGTH} characters"
            known = (tags, error)
            if len(self.tag_lists) < 10_000:
                self.tag_lists[cell] = known
        return known

    def _zone_error(self, zone: str) -> str | None:
        if zone not in self.zones:
            error: str | None = (
                f"{zone[:80]!r} is not a time zone; use an IANA name such as Europe/Paris"
            )
            try:
                ZoneInfo(zone)
                error = None
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass
            if len(self.zones) < 10_000:
                self.zones[zone] = error
            return error
        return self.zones[zone]


NOT_UTF8 = "is not UTF-8 text; save the file as CSV UTF-8"


def _records(lines: _Lines) -> Iterator[tuple[int, list[str] | str]]:
    """Each CSV record with the line it starts on, or instead what makes it unreadable."""
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # a stray quote or an oversized cell; csv resumes after it
            yield start, f"is not valid CSV ({error})"
            continue
        if lines.bad_lines and any(n in lines.bad_lines for n in range(start, reader.line_num + 1)):
            yield start, NOT_UTF8
            continue
        yield start, record


# ---------------------------------------------------------------- writing

# Each chunk reaches the database as two strings of JSON, its readers and its tags, which the
# database itself unpacks (``json_each`` on SQLite, ``json_array_elements`` on PostgreSQL) in an
# ``INSERT … SELECT``: no Python object per reader in this process, no parameter bound per value.
# What is the same for every reader of the import (status, source, times) is bound once. The
# history and consent follow with set-based ``INSERT … SELECT`` statements too, and so do the tags
# on SQLite (on PostgreSQL they are written from the ids the insert returns). The readers this
# import created are told apart by what only they carry: an id above the chunk's watermark, this
# import's instant and its source. A concurrent signup of the same address wins (ON CONFLICT DO
# NOTHING) and is left alone.
READER_FIELDS = ("email", "key", "name", "attributes", "timezone")  # each reader's JSON array


def _to_json(value: Any) -> str:
    """Compact JSON text, by orjson: the standard encoder took a quarter of the reader's time."""
    return orjson.dumps(value).decode("utf-8")


@dataclass(frozen=True)
class _Batch:
    """What is constant for one import: the status, the source and the time."""

    status: Status
    form: str
    now: datetime
    consent_text: str

    def parameters(self) -> dict[str, Any]:
        confirmed = self.status is Status.CONFIRMED
        return {
            "status": self.status.value,
            "form": self.form,
            "now": self.now,
            "confirmed_at": self.now if confirmed else None,
            "sent_at": None if confirmed else self.now,
        }


class _Writer:
    """Writes chunks of valid rows into the store on one connection, a transaction at a time.

    ``begin()`` opens a transaction, ``write()`` adds chunks to it and ``commit()`` ends it,
    with the confirmation emails its pending readers need (queued in the same transaction).
    """

    def __init__(
        self, connection: Connection, batch: _Batch, events: SubscriberEvents | None
    ) -> None:
        self.connection = connection
        self.batch = batch
        self.events = events
        self.sqlite = connection.dialect.name == "sqlite"
        if self.sqlite:
            # A larger page cache for this connection while it writes: index pages stay in memory.
            self._pragma(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        self.statements = _Statements(batch, connection.dialect)
        self.constants = batch.parameters()
        self.max_id = select(func.coalesce(func.max(Subscriber.id), 0))
        self.watermark = 0
        self.check_suppressions = False
        self.new_ids: list[int] = []  # pending readers created in the open transaction

    def begin(self) -> None:
        """Open a transaction (on SQLite: take the write lock) and note where its ids start."""
        connection = self.connection
        connection.begin()
        # Read again in each transaction: a signup or an erasure may have come in between.
        self.watermark = connection.scalar(self.max_id) or 0
        self.check_suppressions = (
            connection.scalar(select(Suppression.address_hash).limit(1)) is not None
        )

    def commit(self) -> None:
        """Queue the confirmations this transaction's pending readers need, then commit."""
        if self.new_ids and self.events is not None:
            # A session joined to this connection never commits it itself: the confirmation
            # emails exist exactly when the readers do.
            with Session(bind=self.connection) as session:
                self.events.confirmations_requested(session, self.new_ids)
                session.flush()
        self.new_ids = []
        self.connection.commit()

    def write(self, chunk: _Chunk, summary: ImportSummary) -> None:
        """Insert the chunk's new readers with their history, consent and tags."""
        if self.check_suppressions:
            self._drop_suppressed(chunk, summary)
        if not chunk.count:
            return
        ours = {**self.constants, "watermark": self.watermark}
        if self.sqlite:
            self._write_numbered(chunk, ours, summary)
        else:
            self._write_returning(chunk, ours, summary)

    def _write_numbered(self, chunk: _Chunk, ours: dict[str, Any], summary: ImportSummary) -> None:
        """SQLite: the chunk has the ids up to watermark + count to itself (gaps are harmless)."""
        connection, statements = self.connection, self.statements
        created = connection.execute(statements.insert_readers, {**ours, "readers": chunk.readers})
        created_all = created.rowcount == chunk.count
        summary.imported += created.rowcount
        if not created_all:
            self._count_present(chunk.readers, ours, summary)
        if created.rowcount:
            for statement in statements.dependants:
                connection.execute(statement, ours)
            if chunk.tags != "[]":
                tag_statement = (
                    statements.insert_tags_in_order if created_all else statements.insert_tags
                )
                connection.execute(tag_statement, {**ours, "tags": chunk.tags})
            if self.events is not None:
                self.new_ids.extend(connection.scalars(statements.created, ours))
        self.watermark += chunk.count

    def _write_returning(self, chunk: _Chunk, ours: dict[str, Any], summary: ImportSummary) -> None:
        """PostgreSQL: the insert returns the new readers' ids, which their tags are given.

        (Joining the tags to the table by address instead lets the planner, whose statistics
        still describe the table before the import, scan the whole table for every chunk.)
        """
        connection, statements = self.connection, self.statements
        created: dict[str, int] = dict(
            connection.execute(statements.insert_readers, {**ours, "readers": chunk.readers}).all()
        )
        summary.imported += len(created)
        if len(created) < chunk.count:
            skipped = [
                [reader[0]] for reader in json.loads(chunk.readers) if reader[0] not in created
            ]
            self._count_present(_to_json(skipped), ours, summary)
        if not created:
            return
        for statement in statements.dependants:
            connection.execute(statement, ours)
        tags = [
            {"subscriber_id": created[email], "tag": tag}
            for _, email, tag in json.loads(chunk.tags)
            if email in created
        ]
        if tags:
            connection.execute(insert(SubscriberTag), tags)
        if self.events is not None:
            self.new_ids.extend(sorted(created.values()))
        self.watermark = max(self.watermark, *created.values())

    def _count_present(self, readers: str, ours: dict[str, Any], summary: ImportSummary) -> None:
        """Sort addresses the store already had from those repeated earlier in this file."""
        found = self.connection.execute(self.statements.present, {**ours, "readers": readers})
        for status, this_import, how_many in found:
            # This import stamps every reader it creates with its own instant and source.
            if this_import:
                summary.repeated += how_many
            else:
                summary.already_present += how_many
                if status in SUPPRESSED_STATUSES:
                    summary.left_unsubscribed += how_many

    def _drop_suppressed(self, chunk: _Chunk, summary: ImportSummary) -> None:
        """Take erased addresses out of the chunk (rare: only once someone has been erased)."""
        readers: list[list[Any]] = json.loads(chunk.readers)
        by_hash = {address_hash(reader[0]): reader[0] for reader in readers}
        erased = self.connection.scalars(
            select(Suppression.address_hash).where(Suppression.address_hash.in_(list(by_hash)))
        ).all()
        if not erased:
            return
        summary.suppressed += len(erased)
        dropped = {by_hash[hash_] for hash_ in erased}
        kept = [reader for reader in readers if reader[0] not in dropped]
        position = {reader[0]: index for index, reader in enumerate(kept)}
        tags = [
            (position[email], email, tag)
            for _, email, tag in json.loads(chunk.tags)
            if email not in dropped
        ]
        chunk.readers, chunk.tags, chunk.count = _to_json(kept), _to_json(tags), len(kept)

    def let_others_write(self) -> None:
        """Between two transactions on SQLite, leave the write lock free long enough for a signup.

        SQLite has no queue for its lock: a waiting connection retries at intervals (at most
        ``SQLITE_PAUSE_SECONDS`` apart), so an import that began again at once would keep it out.
        """
        if self.sqlite:
            time.sleep(SQLITE_PAUSE_SECONDS)

    def close(self) -> None:
        if self.sqlite:
            self._pragma("PRAGMA cache_size = -2000")  # SQLite's default

    def _pragma(self, statement: str) -> None:
        """Run a PRAGMA outside any transaction (SQLAlchemy's autobegin would take the lock)."""
        cursor = self.connection.connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


_PARAMETER_TYPES: dict[str, TypeEngine[Any]] = {
    "now": UTCDateTime(),
    "confirmed_at": UTCDateTime(),
    "sent_at": UTCDateTime(),
    "watermark": Integer(),
}


def _typed_text(statement: str) -> TextClause:
    """A textual statement whose times and watermark parameters are bound with their types."""
    types: list[BindParameter[Any]] = [
        bindparam(name, type_=type_)
        for name, type_ in _PARAMETER_TYPES.items()
        if f":{name}" in statement
    ]
    return text(statement).bindparams(*types)


class _Statements:
    """The statements that write a chunk, for the connection's database."""

    def __init__(self, batch: _Batch, dialect: Dialect) -> None:
        sqlite = dialect.name == "sqlite"

        def elements(parameter: str) -> str:
            """A JSON array parameter as rows with one column, ``value``."""
            if sqlite:
                return f"json_each(:{parameter})"
            return f"json_array_elements(CAST(:{parameter} AS json))"

        def item(index: int) -> str:
            """Element ``index`` of the array ``r.value``: text, a number, or an object's JSON."""
            if sqlite:  # json_extract, not ->>: SQLite before 3.38 has no JSON operators
                return f"json_extract(r.value, '$[{index}]')"
            return (
                f"r.value->{index}"
                if index == READER_FIELDS.index("attributes")
                else f"r.value->>{index}"
            )

        column = {name: item(index) for index, name in enumerate(READER_FIELDS)}
        subscribers, tags = Subscriber.__tablename__, SubscriberTag.__tablename__
        mine = "s.created_at = :now AND s.form = :form"
        ours = f"s.id > :watermark AND {mine}"
        # On SQLite the import holds the only write lock while its transaction is open, so it
        # numbers the readers itself: the reader at index i of a chunk gets the id watermark + 1 + i
        # (json_each's ``key`` is the index), and its tags find it by that id, not by address.
        new_id = ":watermark + 1 + r.key" if sqlite else None
        # ``WHERE true``: SQLite needs a WHERE before the ON CONFLICT of an INSERT … SELECT.
        self.insert_readers = _typed_text(
            f'INSERT INTO {subscribers} ({"id, " if new_id else ""}email, "key", name, status, '
            "attributes, timezone, form, created_at, status_changed_at, confirmed_at, "
            f"confirmation_sent_at) SELECT {new_id + ', ' if new_id else ''}{column['email']}, "
            f"{column['key']}, {column['name']}, :status, {column['attributes']}, "
            f"{column['timezone']}, :form, :now, :now, :confirmed_at, :sent_at "
            f"FROM {elements('readers')} AS r WHERE true ON CONFLICT DO NOTHING"
            + ("" if sqlite else " RETURNING email, id")
        )
        # The readers the store already had: on SQLite, those whose id stayed free (a cheap look-up
        # by id first, CROSS JOIN keeping that order, then one by address for those few).
        self.present = _typed_text(
            f"SELECT s.status, {mine} AS this_import, count(*) FROM {elements('readers')} AS r "
            + (
                f"CROSS JOIN {subscribers} AS s ON s.email = {column['email']} WHERE NOT EXISTS "
                f"(SELECT 1 FROM {subscribers} AS n WHERE n.id = {new_id}) "
                if new_id
                else f"JOIN {subscribers} AS s ON s.email = {column['email']} WHERE NOT ({ours}) "
            )
            + f"GROUP BY s.status, {mine}"
        )
        # SQLite only (PostgreSQL's insert returns the new ids and tags are written from them).
        tag_id = f":watermark + 1 + {item(0)}"
        self.insert_tags_in_order = _typed_text(
            f"INSERT INTO {tags} (subscriber_id, tag) "
            f"SELECT {tag_id}, {item(2)} FROM {elements('tags')} AS r"
        )
        self.insert_tags = _typed_text(
            f"INSERT INTO {tags} (subscriber_id, tag) "
            f"SELECT {tag_id}, {item(2)} FROM {elements('tags')} AS r WHERE EXISTS "
            f"(SELECT 1 FROM {subscribers} AS n WHERE n.id = {tag_id})"
        )
        self.created = _typed_text(
            f"SELECT s.id FROM {subscribers} AS s WHERE {ours} ORDER BY s.id"
        )

        watermark = bindparam("watermark", type_=Integer)
        now = literal(batch.now, UTCDateTime())
        ours_expression = (
            (Subscriber.id > watermark)
            & (Subscriber.created_at == now)
            & (Subscriber.form == literal(batch.form, String))
        )
        status = literal(batch.status.value, String)
        self.dependants: list[Executable] = [
            insert(StatusChange).from_select(
                ["subscriber_id", "old_status", "new_status", "source", "at"],
                select(Subscriber.id, null(), status, literal("import", String), now).where(
                    ours_expression
                ),
            )
        ]
        if batch.status is Status.CONFIRMED:
            self.dependants.append(
                insert(Consent).from_select(
                    ["subscriber_id", "kind", "at", "form", "consent_text"],
                    select(
                        Subscriber.id,
                        literal("import", String),
                        now,
                        literal(batch.form, String),
                        literal(batch.consent_text, Text),
                    ).where(ours_expression),
                )
            )


# ---------------------------------------------------------------- parsing, here or in a child


@dataclass
class _Chunk:
    """A stretch of the file, parsed: its readers and their tags as JSON text, its bad rows."""

    readers: str = "[]"  # [[email, key, name, attributes, timezone], ...] (READER_FIELDS)
    count: int = 0  # readers in ``readers``
    tags: str = "[]"  # [[index in readers, email, tag], ...]
    bad: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (line, errors)
    repeated: int = 0  # rows repeating an address earlier in this chunk
    bytes_read: int = 0


def _read_header(path: Path) -> _Columns:
    """The file's columns; raises ``ValidationError`` when the file or its header is unusable."""
    try:
        with path.open("rb") as stream:
            header = next(_records(_Lines(stream)), None)
    except FileNotFoundError:
        raise ValidationError({"file": f"{path}: no such file"}) from None
    except IsADirectoryError:
        raise ValidationError({"file": f"{path}: is a directory, not a CSV file"}) from None
    except OSError as error:
        raise ValidationError({"file": f"{path}: cannot be read ({error.strerror})"}) from None
    if header is None or isinstance(header[1], str):
        problem = "is empty" if header is None else "does not start with a readable header"
        raise ValidationError({"file": f"{path.name}: {problem}; expected a CSV header"})
    return _columns(header[1], path)


def _parse_file(path: Path, columns: _Columns, chunk_rows: int) -> Iterator[_Chunk]:
    """The file after its header, in chunks of at most ``chunk_rows`` distinct addresses."""
    reader = _RowReader(columns)
    keys = _keys()
    with path.open("rb") as stream:
        lines = _Lines(stream)
        records = _records(lines)
        next(records, None)  # the header, read and checked already
        chunk, seen = _Chunk(), set()
        readers: list[tuple[str | dict[str, str] | None, ...]] = []
        tags: list[tuple[int, str, str]] = []
        for line, record in records:
            if isinstance(record, str):
                chunk.bad.append((line, {"row": record}))
                continue
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            try:
                row = reader.parse(line, record)
            except ImportRowError as error:
                chunk.bad.append((line, error.errors))
                continue
            email = row.email
            if email in seen:
                chunk.repeated += 1
                continue
            seen.add(email)
            readers.append((email, next(keys), row.name, row.attributes, row.timezone))
            if row.tags:
                index = len(readers) - 1
                tags.extend((index, email, tag) for tag in row.tags)
            if len(readers) >= chunk_rows:
                yield _packed(chunk, readers, tags, lines.bytes_read)
                chunk, readers, tags, seen = _Chunk(), [], [], set()
        yield _packed(chunk, readers, tags, lines.bytes_read)


def _packed(
    chunk: _Chunk,
    readers: list[tuple[str | dict[str, str] | None, ...]],
    tags: list[tuple[int, str, str]],
    bytes_read: int,
) -> _Chunk:
    chunk.readers, chunk.count, chunk.tags = _to_json(readers), len(readers), _to_json(tags)
    chunk.bytes_read = bytes_read
    return chunk


def _keys(batch: int = 4096) -> Iterator[str]:
    """Unguessable reader keys, in increasing order, made in bulk: 32 URL-safe characters.

    Each key is a counter (8 hex digits, in file order) and 144 random bits (24 base64
    characters; 18 bytes encode without padding, so one encoding of many keys' bytes slices into
    keys). The random part alone is as strong as ``secrets.token_urlsafe(18)``; the counter makes
    an import's keys sort in the order they are written, so that the unique index on ``key``
    grows at one end instead of at a random page for every reader (a third less of SQLite's time
    for a million readers). It tells a reader nothing but their row's place in an import.
    """
    width = KEY_BYTES * 4 // 3
    counter = 0
    while True:
        encoded = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES * batch)).decode("ascii")
        for start in range(0, len(encoded), width):
            yield f"{counter & KEY_COUNTER_MASK:08x}{encoded[start : start + width]}"
            counter += 1


def _parse_in_child(path: Path, columns: _Columns, chunk_rows: int) -> Iterator[_Chunk]:
    """``_parse_file`` run in a forked process, so that parsing overlaps with writing."""
    context = multiprocessing.get_context("fork")
    chunks: multiprocessing.Queue[_Chunk | str | None] = context.Queue(maxsize=CHILD_QUEUE_CHUNKS)
    child = context.Process(
        target=_child_main,
        args=(chunks, path, columns, chunk_rows),
        name="newsletter-import-reader",
        daemon=True,
    )
    child.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=1)
            except queue.Empty:
                if not child.is_alive():
                    raise ValidationError(
                        {"file": f"{path.name}: the reader process stopped unexpectedly"}
                    ) from None
                continue
            if item is None:
                return
            if isinstance(item, str):
                raise ValidationError({"file": f"{path.name}: {item}"})
            yield item
    finally:
        if child.is_alive():
            child.terminate()
        child.join()


def _child_main(
    chunks: multiprocessing.Queue[_Chunk | str | None],
    path: Path,
    columns: _Columns,
    chunk_rows: int,
) -> None:
    gc.disable()  # the parse allocates many small acyclic objects; this process ends with it
    # Ctrl-C reaches the whole process group: the parent rolls back and ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for chunk in _parse_file(path, columns, chunk_rows):
            chunks.put(chunk)
        chunks.put(None)
    except OSError as error:
        chunks.put(f"cannot be read ({error.strerror or error})")


# ---------------------------------------------------------------- the import


def import_csv(
    path: Path,
    status: Status | str | None,
    *,
    database: Database,
    events: SubscriberEvents | None = None,
    source: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_bad_row: Callable[[ImportRowError], None] | None = None,
) -> ImportSummary:
    """Import the readers in the CSV file at ``path`` with ``status`` (confirmed or pending).

    ``confirmed`` records the import as each new reader's consent (kind ``import``, form = the
    file name, or ``source``); ``pending`` asks ``events`` for one confirmation email per new
    reader, inside the transaction that stores the reader. The import commits about every
    ``COMMIT_SECONDS``, whole chunks at a time: if it stops midway, what it committed stays, and
    running it again completes it. Bad rows are passed to ``on_bad_row`` (and the first
    ``MAX_KEPT_ERRORS`` kept in the summary); ``on_progress(bytes_read, total_bytes)`` is called
    after each chunk. Raises ``ValidationError``, before storing anything, when the status is not
    given, the file cannot be read or its header has no email column. A large file is parsed in
    a forked process while this one writes.
    """
    status = import_status(status)
    if status is Status.PENDING and events is None:
        raise ValueError("a pending import needs the events hook to send confirmations")
    columns = _read_header(path)
    total = path.stat().st_size
    if source is not None and (not source.strip() or CONTROL_CHARACTERS.search(source)):
        raise ValidationError({"--source": "must be a name on one line, such as webinar-2026"})
    form = source.strip() if source else CONTROL_CHARACTERS.sub("?", path.name)
    form = form[:MAX_SOURCE_LENGTH]
    batch = _Batch(
        status,
        form,
        utcnow(),
        f"Imported from {form}; the marketer stated that these readers had consented.",
    )
    parallel = total >= PARALLEL_MIN_BYTES and "fork" in multiprocessing.get_all_start_methods()
    parse = _parse_in_child if parallel else _parse_file
    summary = ImportSummary()
    chunks = parse(path, columns, CHUNK_ROWS)
    # The writer allocates millions of short-lived, acyclic tuples: the cyclic collector would
    # scan them again and again (a tenth of the writer's time) and find nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with database.engine.connect() as connection:
            writer = _Writer(connection, batch, events if status is Status.PENDING else None)
            try:
                _write_chunks(writer, chunks, summary, total, on_progress, on_bad_row)
            finally:
                writer.close()
    finally:
        if collecting:
            gc.enable()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return summary


def _write_chunks(
    writer: _Writer,
    chunks: Iterator[_Chunk],
    summary: ImportSummary,
    total: int,
    on_progress: Callable[[int, int], None] | None,
    on_bad_row: Callable[[ImportRowError], None] | None,
) -> None:
    """Write the chunks in transactions of about ``COMMIT_SECONDS`` each."""
    opened: float | None = None
    for chunk in chunks:
        _count_bad_rows(chunk, summary, on_bad_row)
        summary.repeated += chunk.repeated
        if opened is None:
            writer.begin()
            opened = time.monotonic()
        writer.write(chunk, summary)
        if time.monotonic() - opened >= COMMIT_SECONDS:
            writer.commit()
            opened = None
            writer.let_others_write()
        if on_progress is not None:
            on_progress(chunk.bytes_read, total)
    if opened is not None:
        writer.commit()


def _count_bad_rows(
    chunk: _Chunk, summary: ImportSummary, on_bad_row: Callable[[ImportRowError], None] | None
) -> None:
    for line, errors in chunk.bad:
        error = ImportRowError(line, errors)
        summary.bad_rows += 1
        if len(summary.errors) < MAX_KEPT_ERRORS:
            summary.errors.append(error)
        if on_bad_row is not None:
            on_bad_row(error)


def import_status(status: Status | str | None) -> Status:
    """The status an import gives new readers; the marketer must choose it, knowingly.

    Raises ``ValidationError`` when it is missing or is not ``confirmed`` or ``pending``.
    """
    if status is None or not str(status).strip():
        raise ValidationError(
            {
                "--status": "say whether these readers consented: --status confirmed (this "
                "import is recorded as their consent) or --status pending (each new reader is "
                "sent a confirmation email)"
            }
        )
    chosen = str(status).strip().lower()
    if chosen not in IMPORT_STATUSES:
        raise ValidationError(
            {"--status": f"{status!r} is not an import status; use confirmed or pending"}
        )
    return Status(chosen)
