"""Dashboard accounts on SQLite and PostgreSQL: argon2 hashes, the lockout window, the session
version a password change moves on, and ``newsletter admin create-user`` / ``set-password``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.admin.accounts import (
    LOCKOUT_FAILURES,
    LOCKOUT_WINDOW,
    Account,
    SignInRefused,
    authenticate,
    create_account,
    set_password,
)
from newsletter.admin.sessions import SessionSigner, cookie_options
from newsletter.db import Database, open_database
from newsletter.errors import NotFoundError, ValidationError
from newsletter.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long enough passphrase"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    opened = open_database(Settings(database_url=database_url, secret_key="test"))
    yield opened
    opened.dispose()


def test_the_password_is_kept_only_as_an_argon2_hash(database: Database) -> None:
    with database.session() as session:
        create_account(session, "Ann@Example.org", PASSWORD)
    with database.session() as session:
        account = session.scalars(select(Account)).one()
        assert account.email == "ann@example.org"
        assert account.password_hash.startswith("$argon2id$")
        assert PASSWORD not in account.password_hash
        assert authenticate(session, "ann@example.org", PASSWORD).id == account.id


def test_a_short_password_or_a_taken_address_is_refused(database: Database) -> None:
    with database.session() as session:
        with pytest.raises(ValidationError, match="at least 12 characters"):
            create_account(session, "ann@example.org", "short")
        create_account(session, "ann@example.org", PASSWORD)
        with pytest.raises(ValidationError, match="has an account already"):
            create_account(session, "ANN@example.org", PASSWORD)


def test_five_failures_lock_the_address_until_the_window_passes(database: Database) -> None:
    start = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    with database.session() as session:
        create_account(session, "ann@example.org", PASSWORD)
    for n in range(LOCKOUT_FAILURES):
        with database.session() as session, pytest.raises(ValidationError):
            authenticate(session, "ann@example.org", "wrong", now=start + timedelta(minutes=n))
    with database.session() as session, pytest.raises(SignInRefused, match="Too many"):
        authenticate(session, "ann@example.org", PASSWORD, now=start + timedelta(minutes=5))
    later = start + LOCKOUT_WINDOW + timedelta(minutes=LOCKOUT_FAILURES)
    with database.session() as session:
        assert authenticate(session, "ann@example.org", PASSWORD, now=later).email == (
            "ann@example.org"
        )


def test_an_unknown_address_fails_and_locks_exactly_as_a_known_one(database: Database) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    messages = set()
    for _ in range(LOCKOUT_FAILURES):
        with database.session() as session, pytest.raises(ValidationError) as failed:
            authenticate(session, "ghost@example.org", "anything", now=now)
        messages.add(failed.value.message)
    assert messages == {"email: The address or the password is wrong."}
    with database.session() as session, pytest.raises(SignInRefused):
        authenticate(session, "ghost@example.org", "anything", now=now)


def test_a_new_password_moves_the_session_version_on(database: Database) -> None:
    with database.session() as session:
        before = create_account(session, "ann@example.org", PASSWORD)
        after = set_password(session, "ann@example.org", "another long passphrase")
        assert after.session_version == before.session_version + 1
        with pytest.raises(NotFoundError):
            set_password(session, "nobody@example.org", "another long passphrase")


def test_a_session_cookie_cannot_be_edited_and_is_secure_behind_https() -> None:
    signer = SessionSigner("secret")
    session, value = signer.issue(7, 3)
    assert signer.read(value) == session
    signed, signature = value.rsplit(".", 1)
    # The signature's first character: its last one holds padding bits that decode the same.
    other = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert signer.read(f"{signed}.{other}") is None
    payload, stamp = signed.split(".")
    edited = payload[0] + ("A" if payload[1] != "A" else "B") + payload[2:]
    assert signer.read(f"{edited}.{stamp}.{signature}") is None
    assert SessionSigner("another secret").read(value) is None
    assert session.accepts(session.csrf_token) and not session.accepts("guess")
    assert cookie_options("https://news.example.com")["secure"] is True
    assert cookie_options("http://127.0.0.1:8000")["secure"] is False


def run_cli(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    env.update(NEWSLETTER_DATABASE_URL=database_url, NEWSLETTER_SECRET_KEY="test")
    return subprocess.run(
        [sys.executable, "-m", "newsletter", "admin", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_user_asks_for_the_password_and_set_password_takes_it_as_an_option(
    sqlite_url: str,
) -> None:
    created = run_cli(sqlite_url, "create-user", "ann@example.org", stdin=f"{PASSWORD}\n" * 2)
    assert created.returncode == 0, created.stderr
    assert "account ann@example.org created" in created.stdout
    changed = run_cli(sqlite_url, "set-password", "ann@example.org", "--password", "x" * 5)
    assert changed.returncode == 1
    assert changed.stderr.strip() == (
        "error: password: use at least 12 characters (a few words will do)"
    )
    database = Database(sqlite_url)
    try:
        with database.session() as session:
            account = authenticate(session, "ann@example.org", PASSWORD)
            assert account.session_version == 1
    finally:
        database.dispose()
