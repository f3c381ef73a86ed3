"""``newsletter preview``: the preview server, assembled from the campaigns' preview router, the
capture inbox (``scheduler.capture``) and its web view, and "send test" over ``open_smtp``.

It binds 127.0.0.1 unless told otherwise, checks that requests name a local host (so that a web
page cannot reach it through DNS rebinding), and sends only to the one address a person types.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import smtplib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from campaigns.preview.catalog import Catalog
from campaigns.preview.live import ChangeFeed
from campaigns.preview.readers import READERS_FILE, choose_reader, load_sample_readers
from campaigns.preview.web import create_preview_router
from newsletter.app import SecurityHeaders
from newsletter.db import Database, open_database
from newsletter.errors import DeliveryError
from newsletter.settings import Settings
from newsletter.smtp import open_smtp
from scheduler.capture import CaptureInbox
from scheduler.web import create_inbox_router
from subscribers.addresses import normalise_address
from templates import clear_caches
from templates.compile import MJML_DIR

log = logging.getLogger("newsletter.preview")
DEFAULT_PORT = 8025
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def send_test_message(settings: Settings, to: str, message: bytes) -> str:
    """Send ``message`` to ``to`` only, over the configured SMTP or to the capture inbox; says
    where it went. Raises ``DeliveryError`` when the server refuses or cannot be reached."""
    where = (
        f"through the capture inbox (127.0.0.1:{settings.capture_port})"
        if settings.uses_capture_inbox
        else "through NEWSLETTER_SMTP_URL"
    )
    try:
        connection = open_smtp(settings, timeout=15)
        try:
            connection.sendmail(settings.sender_address, [to], message)
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
    except smtplib.SMTPResponseException as error:
        raise DeliveryError(
            f"the SMTP server answered {error.smtp_code} {error.smtp_error!r}", code=error.smtp_code
        ) from None
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryError(f"could not send {where}: {error}") from None
    return where


class LocalHostsOnly:
    """Refuses requests whose Host is not this machine, when the server listens on loopback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower() not in LOCAL_NAMES:
                response = PlainTextResponse(
                    "The preview server answers only to localhost and 127.0.0.1.", 421
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_preview_app(
    settings: Settings,
    database: Database | None = None,
    *,
    content_root: Path | None = None,
    sequences_root: Path | None = None,
    readers_file: Path | None = None,
    spamassassin: str | None = None,
    watch: bool = True,
    local_only: bool = True,
) -> FastAPI:
    """The preview app for ``settings``: the shipped content unless ``content_root`` and
    ``sequences_root`` name other folders (tests use copies). ``app.state.feed`` is its
    ``ChangeFeed``; ``spamassassin`` (a command) adds the spam score to each email's page."""
    database = database or open_database(settings)
    catalog = Catalog(settings, content_root, sequences_root)

    def changed(_paths: set[str]) -> None:
        clear_caches()
        catalog.forget()

    readers = readers_file or READERS_FILE
    feed = ChangeFeed(
        [catalog.content_root, catalog.sequences_root, MJML_DIR, readers], on_change=changed
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run()) if watch else None
        try:
            yield
        finally:
            feed.close()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="Email preview", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.database = database
    app.state.catalog = catalog
    app.state.feed = feed
    inbox_url = "/inbox" if settings.uses_capture_inbox else None
    app.include_router(
        create_preview_router(
            catalog,
            feed,
            database=database,
            readers_file=readers,
            send_test=lambda to, message: send_test_message(settings, to, message),
            spamassassin=spamassassin,
            inbox_url=inbox_url,
        )
    )
    if settings.uses_capture_inbox:
        app.include_router(
            create_inbox_router(database, settings.capture_port, home=("/", "Email preview"))
        )
    app.add_middleware(SecurityHeaders)
    if local_only:
        app.add_middleware(LocalHostsOnly)
    return app


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_preview(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    content_root: Path | None = None,
    sequences_root: Path | None = None,
    readers_file: Path | None = None,
    spamassassin: str | None = None,
    echo: Callable[[str], object] = print,
) -> None:
    """Run the preview server until interrupted, with the capture inbox when no relay is set."""
    say: Callable[[str], object] = echo
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    database = open_database(settings)
    inbox = None
    if settings.uses_capture_inbox:
        inbox = CaptureInbox(database, port=settings.capture_port)
        try:
            inbox.start()
        except (OSError, RuntimeError) as error:
            inbox = None
            say(
                f"capture inbox: 127.0.0.1:{settings.capture_port} is taken ({error}); test sends "
                "go to whatever listens there (newsletter serve's inbox shares this database)"
            )
    local = is_loopback(host)
    app = create_preview_app(
        settings,
        database,
        content_root=content_root,
        sequences_root=sequences_root,
        readers_file=readers_file,
        spamassassin=spamassassin,
        local_only=local,
    )
    shown = f"[{host}]" if ":" in host else host
    say(f"Email preview on http://{shown}:{port}/")
    if local:
        say(f"Listening on {host} only: other machines cannot reach it.")
    else:
        say(
            f"WARNING: listening on {host}: anyone who can reach this machine can read the "
            "emails and send tests. Use --host 127.0.0.1 unless you mean it."
        )
    if settings.uses_capture_inbox:
        say(
            f"Test sends go to the capture inbox (SMTP 127.0.0.1:{settings.capture_port}): "
            f"http://{shown}:{port}/inbox"
        )
    else:
        say(
            "Test sends go through NEWSLETTER_SMTP_URL, to the one address you type; "
            "never to readers."
        )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    finally:
        if inbox is not None:
            inbox.stop()
        database.dispose()


def send_test_campaign(
    settings: Settings,
    name: str,
    to: str,
    *,
    content_root: Path | None = None,
    reader: str = "sample",
    readers_file: Path | None = None,
) -> tuple[str, str]:
    """``newsletter campaign send-test``: the campaign (or ``system/KIND``) rendered for a sample
    reader and sent to ``to`` only. Returns the subject and where it went."""
    address = normalise_address(to)
    catalog = Catalog(settings, content_root)
    key = name if "/" in name else f"campaign/{name}"
    content = catalog.content(key)
    samples = load_sample_readers(readers_file) if reader != "sample" else []
    choice = choose_reader(reader, content, samples, None)
    rendered = catalog.render(content, replace(choice.reader, email=address), key)
    where = send_test_message(settings, address, rendered.raw)
    return rendered.subject, where


__all__ = [
    "DEFAULT_PORT",
    "create_preview_app",
    "run_preview",
    "send_test_campaign",
    "send_test_message",
]
