"""Fixtures for the delivery tests: a migrated database and an SMTP server that misbehaves."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from newsletter.db import Database
from newsletter.settings import Settings
from tests.scheduler.delivery_helpers import SENDER, FaultyHandler


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated, empty database: SQLite, then PostgreSQL."""
    db = Database(database_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def sqlite_database(sqlite_url: str) -> Iterator[Database]:
    db = Database(sqlite_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def build(database: Database, url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database.url,
            "smtp_url": url,
            "sender": SENDER,
            "send_rate": 100_000,
            "send_concurrency": 4,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def faulty_server() -> Iterator[tuple[str, FaultyHandler]]:
    handler = FaultyHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", handler
    finally:
        controller.stop()
