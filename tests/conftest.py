"""Fixtures shared by the whole suite: settings on a temporary database, real SMTP servers,
PostgreSQL where it answers, a live web server, and Playwright on Debian's chromium."""

from __future__ import annotations

import os
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, text

from newsletter.db import Base, Database
from newsletter.settings import Settings

IN_CI = bool(os.environ.get("CI"))
CHROMIUM = "/usr/bin/chromium"
POSTGRES_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# Ports for test servers come from below Linux's ephemeral range (32768-60999), which the
# kernel hands to outgoing connections: a port found free there could become a database
# client's before the test's server binds it. Never the same one twice in a run.
_PORTS = range(20_000, 32_768)
_given: set[int] = set()


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd cannot take port 0)."""
    for port in random.sample(_PORTS, 200):
        if port in _given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free port between 20000 and 32767")


# ---------------------------------------------------------------- SMTP


@dataclass
class ReceivedMail:
    """One message as a real SMTP server took it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """An aiosmtpd handler that keeps every message it accepts."""

    received: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        with self.lock:
            self.received.append(
                ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(raw))
            )
        return "250 OK"


@dataclass
class SmtpServer:
    """A running aiosmtpd server and what it has received."""

    host: str
    port: int
    handler: RecordingHandler

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def messages(self) -> list[ReceivedMail]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[ReceivedMail]:
        return [mail for mail in self.messages if address in mail.rcpt_tos]

    def wait_for(
        self, predicate: Callable[[list[ReceivedMail]], bool], timeout: float = 10.0
    ) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.messages
            if predicate(messages):
                return messages
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for mail; have {len(self.messages)} messages")


@contextmanager
def serving(handler: Any, smtp: Callable[..., SMTP] = SMTP) -> Iterator[SmtpServer]:
    """An aiosmtpd server with ``handler`` on a free loopback port, until the block ends;
    ``smtp`` makes each session's protocol object (aiosmtpd's own, or one that misbehaves)."""

    class Serving(Controller):
        def factory(self) -> SMTP:
            return smtp(self.handler, **self.SMTP_kwargs)

    port = free_port()
    controller = Serving(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port."""
    with serving(RecordingHandler()) as server:
        yield server


# ---------------------------------------------------------------- databases


def _postgres_available() -> bool:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; skips (fails in CI) without a server."""
    if not _postgres_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL does not answer at {POSTGRES_URL} and CI is set")
        pytest.skip(f"PostgreSQL does not answer at {POSTGRES_URL}")
    name = f"newsletter_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty_postgres(url: str) -> None:
    """Remove every row the previous test left, keeping the migrated schema."""
    database = Database(url)
    database.upgrade()
    tables = [
        table.name for table in Base.metadata.sorted_tables if table.name != "instance_secrets"
    ]
    with database.engine.begin() as connection:
        existing = set(
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
        names = ", ".join(f'"{name}"' for name in tables if name in existing)
        if names:
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'newsletter.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of an empty SQLite database file."""
    return f"sqlite:///{tmp_path / 'newsletter.db'}"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated, empty store: on SQLite, then on PostgreSQL."""
    db = Database(database_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def sqlite_database(sqlite_url: str) -> Iterator[Database]:
    """A migrated, empty store on SQLite only."""
    db = Database(sqlite_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def make_settings(sqlite_url: str) -> Callable[..., Settings]:
    """Build settings for a test: a temporary SQLite database unless told otherwise."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": sqlite_url,
            "secret_key": "test-secret-key",
            "base_url": "http://testserver",
            "sender": "Gut Health Letter <news@example.org>",
            "signup_limit": "1000/minute",
        }
        values.update(overrides)
        return Settings(**values)

    return build


# ---------------------------------------------------------------- web server


@dataclass
class LiveServer:
    """A uvicorn server running an app in a background thread."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread


def start_live_server(app: Any, port: int | None = None) -> LiveServer:
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web app did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", server, thread)


def stop_live_server(live: LiveServer) -> None:
    live.server.should_exit = True
    live.thread.join(timeout=10)


# ---------------------------------------------------------------- browser

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
expect.set_options(timeout=10_000)  # two shared cores: a page may wait its turn to render


def expect_frame_shows(page: Page, text: str, timeout: float = 10_000) -> None:
    """The email's frame (``iframe.email``) shows ``text``; if not, the failure says what the
    frame's URL answers (a blank frame was seen once in CI and never again)."""
    try:
        expect(page.frame_locator("iframe.email").get_by_text(text)).to_be_visible(timeout=timeout)
    except AssertionError as error:
        src = urljoin(page.url, page.locator("iframe.email").get_attribute("src") or "")
        try:
            answer = page.request.get(src)
            found = f"answers {answer.status}: {answer.text()[:300]!r}"
        except Exception as failure:  # the diagnosis must not hide the failure
            found = f"could not be fetched: {failure}"
        raise AssertionError(f"{error}\nthe frame's src {src!r} {found}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        action="store_true",
        help=f"write the browser tests' screenshots to {DOCS_SCREENSHOTS} (`make screenshots`)",
    )


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save their screenshots: the README's folder with ``--screenshots``,
    else a temporary one (a test run leaves the working tree as it found it)."""
    if request.config.getoption("--screenshots"):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests skip with a reason where Debian's chromium is absent, unless CI is set."""
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM) or IN_CI:
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
    for item in items:
        if "page" in getattr(item, "fixturenames", ()) or "browser" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's browser is Debian's chromium (Playwright cannot download its own)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM}
