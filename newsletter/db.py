"""The database: one engine per process, sessions, migrations, and the instance secret.

SQLite (the default) runs in WAL mode and every transaction starts with ``BEGIN IMMEDIATE``, so
concurrent writers queue on SQLite's lock instead of failing with "database is locked". Any other
SQLAlchemy URL works; PostgreSQL is what several workers share.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Engine, String, create_engine, event, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeDecorator

from newsletter.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Each domain folder keeps its own migrations; together they form one linear history.
MIGRATION_FOLDERS = [
    ROOT / "newsletter" / "migrations" / "versions",
    ROOT / "subscribers" / "migrations",
    ROOT / "campaigns" / "migrations",
    ROOT / "scheduler" / "migrations",
    ROOT / "newsletter" / "admin" / "migrations",
]
# Any constant works: it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 7_315_001


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store times with a zone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """The declarative base of every model in every domain folder."""

    type_annotation_map = {datetime: UTCDateTime()}


class InstanceSecret(Base):
    """Values generated once per installation, such as the signing key."""

    __tablename__ = "instance_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


def insert_or_ignore(session: Session, table: Any) -> Any:
    """An INSERT for ``table`` that can add ``.on_conflict_do_nothing()`` on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Database:
    """An engine and its session factory, built from the settings."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def upgrade(self) -> None:
        """Apply every pending migration; safe when several processes start together."""
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()
            else:
                # SQLite: take the write lock (BEGIN IMMEDIATE) before alembic reads the version.
                # Alembic runs each SQLite migration in a transaction of its own otherwise, and
                # two processes that both read the old version both ran the next migration.
                connection.begin()
            try:
                config = _alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "heads")
                connection.commit()
            finally:
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                    )
                    connection.commit()

    def secret_key(self, settings: Settings) -> str:
        """``NEWSLETTER_SECRET_KEY``, or the key generated and stored on first run."""
        if settings.secret_key:
            return settings.secret_key
        with self.session() as session:
            candidate = secrets.token_urlsafe(48)
            session.execute(
                insert_or_ignore(session, InstanceSecret)
                .values(name="secret_key", value=candidate)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            stored = session.scalar(
                select(InstanceSecret.value).where(InstanceSecret.name == "secret_key")
            )
        assert stored is not None
        return stored

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings) -> Database:
    """The database named by ``NEWSLETTER_DATABASE_URL``, migrated to the latest version."""
    database = Database(settings.database_url)
    database.upgrade()
    return database


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    # One connection per process: threads then queue on the pool (woken at once) rather than
    # on SQLite's busy handler, which sleeps up to 100 ms between tries.
    engine = create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=120,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite, so that BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "newsletter" / "migrations"))
    config.set_main_option(
        "version_locations", " ".join(str(path) for path in MIGRATION_FOLDERS if path.is_dir())
    )
    config.set_main_option("path_separator", "space")
    return config
