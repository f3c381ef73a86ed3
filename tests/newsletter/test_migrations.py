"""Migrations run once, safely, when several processes start together.

Four ``newsletter db upgrade`` processes start at the same moment on a fresh database: every one
exits 0 and the database ends with one schema, at the heads, each table created once. On
PostgreSQL an advisory lock serialises them (``Database.upgrade``); on SQLite, ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from newsletter.db import Base

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4


@pytest.fixture
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server: str = request.getfixturevalue("postgres_server_url")
    name = f"newsletter_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("fresh_database_url", ["sqlite", "postgresql"], indirect=True)
def test_four_processes_upgrading_a_fresh_database_at_once_all_succeed_with_one_schema(
    fresh_database_url: str, tmp_path: Path
) -> None:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER")},
        "NEWSLETTER_DATABASE_URL": fresh_database_url,
        "NEWSLETTER_SECRET_KEY": "migration-test",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "newsletter", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err.decode()[-2000:]
        assert b"database is up to date" in out

    engine = create_engine(fresh_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    # Every model's table exists, and the history is at one head, recorded once.
    assert set(Base.metadata.tables) <= tables
    assert len(versions) == 1
