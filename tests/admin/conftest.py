"""Fixtures for the dashboard: the product on a real port with its clock and worker (as
``newsletter serve`` runs them), mailing an aiosmtpd server, a marketer's account, a handful of
readers, and signed-in HTTP clients."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from newsletter.admin import accounts
from newsletter.admin.accounts import create_account
from newsletter.app import create_app
from newsletter.db import Database, open_database
from newsletter.settings import Settings
from scheduler.clock import Clock
from scheduler.rendering import Renderer
from scheduler.worker import WorkerOptions, run_worker
from subscribers.models import Consent, StatusChange, Subscriber
from tests.conftest import LiveServer, SmtpServer, free_port, start_live_server, stop_live_server

MARKETER = "marketer@example.org"
PASSWORD = "correct horse battery staple"
READERS = [f"reader{n}@example.com" for n in range(5)]
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def quick_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with small parameters: the same code paths, in milliseconds rather than the
    half second the recommended parameters take per sign-in on this shared machine."""
    cheap = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    monkeypatch.setattr(accounts, "PASSWORDS", accounts.Passwords(cheap))


@dataclass
class ShiftedClock:
    """The clock's "now": real time plus an offset the test moves forward, so that a campaign
    scheduled for the next minute falls due at once."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump_to(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC) + timedelta(seconds=1)


@dataclass
class AdminSite:
    """The product with its dashboard, clock and worker, and the SMTP server it mails."""

    url: str
    settings: Settings
    database: Database
    smtp: SmtpServer
    live: LiveServer
    clock: Clock
    now: ShiftedClock
    worker: threading.Thread
    stop_worker: threading.Event
    render: Renderer

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)

    @contextmanager
    def signed_in(self, email: str = MARKETER, password: str = PASSWORD) -> Iterator[httpx.Client]:
        """A client holding a session of ``email``."""
        with self.client() as client:
            answer = sign_in(client, email, password)
            assert answer.status_code == 303, answer.text
            yield client

    def reader(self, email: str) -> Subscriber | None:
        with self.database.session() as session:
            return session.query(Subscriber).filter_by(email=email).one_or_none()


def sign_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    """Fill in the sign-in form as a browser would (its token included)."""
    form = client.get("/admin/sign-in")
    token = TOKEN.search(form.text)
    assert token is not None
    return client.post(
        "/admin/sign-in",
        data={"email": email, "password": password, "csrf_token": token.group(1)},
    )


def csrf_token(client: httpx.Client, path: str = "/admin/account") -> str:
    """The session's CSRF token, read from a page's form."""
    found = TOKEN.search(client.get(path).text)
    assert found is not None
    return found.group(1)


def add_confirmed_readers(
    database: Database, emails: list[str], form: str = "homepage", at: datetime | None = None
) -> None:
    now = at or datetime.now(UTC)
    with database.session() as session:
        for email in emails:
            reader = Subscriber(
                email=email,
                status="confirmed",
                form=form,
                created_at=now,
                status_changed_at=now,
                confirmed_at=now,
            )
            session.add(reader)
            session.flush()
            session.add(
                StatusChange(
                    subscriber_id=reader.id,
                    old_status="pending",
                    new_status="confirmed",
                    source="confirm",
                    at=now,
                )
            )
            session.add(
                Consent(
                    subscriber_id=reader.id,
                    kind="signup",
                    at=now,
                    form=form,
                    ip="192.0.2.1",
                    consent_text="Send me the newsletter.",
                )
            )


def start_admin_site(settings_factory: Callable[..., Settings], smtp: SmtpServer) -> AdminSite:
    port = free_port()
    # No relay: the worker mails the "capture inbox" port, which is the test's SMTP server; so
    # the preflight passes as on a marketer's local try-out.
    settings = settings_factory(
        base_url=f"http://127.0.0.1:{port}", capture_port=smtp.port, timezone="Europe/Berlin"
    )
    database = open_database(settings)
    with database.session() as session:
        create_account(session, MARKETER, PASSWORD)
    add_confirmed_readers(database, READERS)
    live = start_live_server(create_app(settings, database), port=port)
    now = ShiftedClock()
    clock = Clock(settings, database, now=now, tick_seconds=0.2, leadership_check_seconds=0.1)
    clock.start()
    render = Renderer(settings, database)
    stop = threading.Event()
    options = WorkerOptions(poll_interval=0.05, lease=timedelta(seconds=30), retry_base=0.2)
    worker = threading.Thread(
        target=run_worker,
        args=(settings, database, render),
        kwargs={"stop_event": stop, "options": options},
        daemon=True,
    )
    worker.start()
    return AdminSite(live.url, settings, database, smtp, live, clock, now, worker, stop, render)


def stop_admin_site(site: AdminSite) -> None:
    stop_live_server(site.live)
    # The worker first: stopping the clock disposes of the engine's pool under it.
    site.stop_worker.set()
    site.worker.join(timeout=30)
    site.clock.stop()
    site.database.dispose()


@pytest.fixture
def admin_site(
    make_settings: Callable[..., Settings], smtp_server: SmtpServer
) -> Iterator[AdminSite]:
    """The product with its dashboard on SQLite, a marketer's account and five readers."""
    site = start_admin_site(make_settings, smtp_server)
    yield site
    stop_admin_site(site)
