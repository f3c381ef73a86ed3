"""CSV export: every matching reader, streamed, in a file that re-imports and is safe to open.

The columns are those an import reads (``email``, ``name``, ``tags``, ``timezone``, then one per
attribute) plus the bookkeeping an import ignores (``status``, ``created_at``, ``confirmed_at``).
A cell that begins with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is prefixed with
``'`` so that a spreadsheet shows it as text instead of running it as a formula (CSV injection).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import ValidationError
from subscribers.models import Subscriber
from subscribers.queries import ReaderFilter, iso

FIXED_COLUMNS = ("email", "name", "status", "tags", "timezone", "created_at", "confirmed_at")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
BATCH = 1_000


def escape_cell(value: str) -> str:
    """The cell as a spreadsheet must show it: text, never a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def export_csv(session: Session, out: TextIO, where: ReaderFilter | None = None) -> int:
    """Write the readers that match ``where`` (all when None) to ``out``; returns how many.

    Reads the store twice, in batches, so memory stays flat: once for the attribute names that
    become columns, once for the rows.
    """
    where = where or ReaderFilter()
    attribute_names = sorted(_attribute_names(session, where))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([escape_cell(name) for name in (*FIXED_COLUMNS, *attribute_names)])
    count = 0
    readers = session.scalars(
        select(Subscriber)
        .where(where.condition())
        .order_by(Subscriber.id)
        .execution_options(yield_per=BATCH)
    )
    for reader in readers:
        attributes = reader.attributes or {}
        cells = [
            reader.email,
            reader.name or "",
            reader.status,
            ";".join(reader.tag_names),
            reader.timezone or "",
            iso(reader.created_at) or "",
            iso(reader.confirmed_at) or "",
            *(_text(attributes.get(name)) for name in attribute_names),
        ]
        writer.writerow([escape_cell(cell) for cell in cells])
        count += 1
    return count


def export_to_file(session: Session, path: Path, where: ReaderFilter | None = None) -> int:
    """Export into ``path``, replacing it only once the whole export is written."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValidationError({"file": f"{directory}: no such directory"})
    if path.is_dir():
        raise ValidationError({"file": f"{path}: is a directory; name a file to write"})
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as error:
        raise ValidationError({"file": f"{path}: cannot be written ({error.strerror})"}) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            count = export_csv(session, out, where)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _attribute_names(session: Session, where: ReaderFilter) -> set[str]:
    names: set[str] = set()
    rows: Iterable[dict[str, object] | None] = session.scalars(
        select(Subscriber.attributes)
        .where(where.condition())
        .execution_options(yield_per=BATCH * 10)
    )
    for attributes in rows:
        if attributes:
            names.update(str(key) for key in attributes)
    return names - set(FIXED_COLUMNS)


def _text(value: object) -> str:
    return "" if value is None else str(value)
