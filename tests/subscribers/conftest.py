"""Fixtures for the reader's side: the web app on a real port and a worker sending its outbox
(the confirmation and welcome emails are delivery rows) to a real SMTP server."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.app import create_app
from newsletter.db import Database, open_database
from newsletter.settings import Settings
from scheduler.system_mail import message_render
from scheduler.worker import WorkerOptions, run_worker
from subscribers.models import Consent, StatusChange, Subscriber, SubscriberTag
from tests.conftest import (
    LiveServer,
    ReceivedMail,
    SmtpServer,
    free_port,
    start_live_server,
    stop_live_server,
)

LINK = re.compile(r"https?://[^\s<>\"]+")


@dataclass
class Site:
    """The product running on a real port, its store, and the SMTP server it mails."""

    url: str
    settings: Settings
    database: Database
    smtp: SmtpServer
    live: LiveServer
    worker: threading.Thread
    stop_worker: threading.Event

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)

    def subscriber(self, email: str) -> Subscriber | None:
        with self.database.session() as session:
            return session.scalars(
                select(Subscriber).where(Subscriber.email == email.lower())
            ).one_or_none()

    def count(self, model: Any) -> int:
        with self.database.session() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def snapshot(self) -> dict[str, int]:
        """Row counts of every reader table: what 'the store is unchanged' compares."""
        return {
            model.__tablename__: self.count(model)
            for model in (Subscriber, StatusChange, Consent, SubscriberTag)
        }


def links_in(mail: ReceivedMail, path: str) -> list[str]:
    """The absolute links in a message's text part that contain ``path``."""
    body = mail.message.get_body(preferencelist=("plain",))
    assert body is not None, "the message has no text part"
    return [link for link in LINK.findall(str(body.get_content())) if path in link]


def start_site(
    settings_factory: Callable[..., Settings], smtp: SmtpServer, **overrides: Any
) -> Site:
    port = free_port()
    settings = settings_factory(base_url=f"http://127.0.0.1:{port}", smtp_url=smtp.url, **overrides)
    database = open_database(settings)
    live = start_live_server(create_app(settings, database), port=port)
    stop = threading.Event()
    render = message_render(settings, database.secret_key(settings))
    options = WorkerOptions(poll_interval=0.05, lease=timedelta(seconds=30), retry_base=0.2)
    worker = threading.Thread(
        target=run_worker,
        args=(settings, database, render),
        kwargs={"stop_event": stop, "options": options},
        daemon=True,
    )
    worker.start()
    return Site(live.url, settings, database, smtp, live, worker, stop)


def stop_site(site: Site) -> None:
    """Stop the web server and the worker, then close the store."""
    stop_live_server(site.live)
    site.stop_worker.set()
    site.worker.join(timeout=30)
    site.database.dispose()


@pytest.fixture
def site(
    make_settings: Callable[..., Settings], smtp_server: SmtpServer, database_url: str
) -> Iterator[Site]:
    """The whole product on SQLite and on PostgreSQL, mailing an aiosmtpd server."""
    running = start_site(make_settings, smtp_server, database_url=database_url)
    yield running
    stop_site(running)


@pytest.fixture
def sqlite_site(make_settings: Callable[..., Settings], smtp_server: SmtpServer) -> Iterator[Site]:
    """The whole product on SQLite only, for tests about the web layer rather than the store."""
    running = start_site(make_settings, smtp_server)
    yield running
    stop_site(running)


def unsubscribe_url(mail: ReceivedMail) -> str:
    """The https (or, locally, http) one-click URL from the List-Unsubscribe header."""
    header = str(mail.message["List-Unsubscribe"])
    urls = [part.strip().strip("<>") for part in header.split(",")]
    return next(url for url in urls if url.startswith("http"))
