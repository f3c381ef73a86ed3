"""Fixed SQL statements run straight on the database driver's cursor, for the hottest paths.

A ``text()`` statement executed through SQLAlchemy costs about a tenth of a millisecond of CPU
(cache lookups, an execution context, a result object), several times what SQLite takes to run a
small INSERT. A ``DriverStatement`` is compiled once per dialect by SQLAlchemy (so the driver's
parameter style is right on SQLite and PostgreSQL alike) and then handed to the driver as is,
inside the session's own transaction. Only for statements run once per request or more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from newsletter.db import UTCDateTime


class _Compiled:
    """One statement's SQL in one dialect's parameter style, and how to lay out its values."""

    def __init__(self, sql: str, times: frozenset[str], dialect: Dialect) -> None:
        compiled = text(sql).compile(dialect=dialect)
        self.sql = compiled.string
        self.positions: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup is not None else None
        )
        to_driver = UTCDateTime().bind_processor(dialect)
        self.converters: dict[str, Callable[[Any], Any]] = (
            dict.fromkeys(times, to_driver) if to_driver is not None else {}
        )

    def parameters(self, values: Mapping[str, Any]) -> Any:
        if self.converters:
            values = {
                name: self.converters[name](value) if name in self.converters else value
                for name, value in values.items()
            }
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


class DriverStatement:
    """A statement with ``:name`` parameters, run on the driver cursor of a session.

    ``times`` names the parameters that are timezone-aware datetimes: they are stored as
    ``UTCDateTime`` columns store them, so the ORM reads them back the same.
    """

    def __init__(self, sql: str, *, times: tuple[str, ...] = ()) -> None:
        self.sql = sql
        self.times = frozenset(times)
        self._by_dialect: dict[str, _Compiled] = {}

    def execute(self, session: Session, values: Mapping[str, Any]) -> Any:
        """Run in the session's transaction (begun if need be); the driver's cursor."""
        connection = session.connection()
        dialect = connection.dialect
        compiled = self._by_dialect.get(dialect.name)
        if compiled is None:
            compiled = self._by_dialect[dialect.name] = _Compiled(self.sql, self.times, dialect)
        cursor = connection.connection.cursor()
        cursor.execute(compiled.sql, compiled.parameters(values))
        return cursor

    def first_value(self, session: Session, values: Mapping[str, Any]) -> Any:
        """The first column of the first row the statement returns, or None without a row."""
        cursor = self.execute(session, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else row[0]

    def run(self, session: Session, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        cursor = self.execute(session, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()
