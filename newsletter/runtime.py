"""The process-wide settings and database, read and opened once, on first use.

Domain folders reach the store through ``session()``; the web app carries its own ``Database``
(built by ``create_app``) so that tests can run several apps side by side.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from newsletter.db import Database, open_database
from newsletter.settings import Settings, load_settings
from subscribers.events import SubscriberEvents

_settings: Settings | None = None
_database: Database | None = None
_events: SubscriberEvents | None = None


def settings() -> Settings:
    """The settings of this process, read from the environment and ``newsletter.toml``."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def database() -> Database:
    """The database of this process, migrated on first use."""
    global _database
    if _database is None:
        _database = open_database(settings())
    return _database


@contextmanager
def session() -> Iterator[Session]:
    """A session on the process's database that commits on success."""
    with database().session() as active:
        yield active


def subscriber_events() -> SubscriberEvents:
    """The shell's implementation of the store's hook: the deliveries outbox, written in the
    store's own transactions (the worker sends the rows)."""
    global _events
    if _events is None:
        from scheduler.system_mail import OutboxEvents

        _events = OutboxEvents(settings())
    return _events


def reset() -> None:
    """Forget the settings and close the database, so the next use reads them anew."""
    global _settings, _database, _events
    if _events is not None and hasattr(_events, "close"):
        _events.close()
    if _database is not None:
        _database.dispose()
    _settings = None
    _database = None
    _events = None
