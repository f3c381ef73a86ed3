"""``create_app()``: the web app, built from settings, assembling each domain folder's router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.admin.web import create_admin_router
from newsletter.db import Database, open_database
from newsletter.errors import NewsletterError
from newsletter.settings import Settings
from scheduler.system_mail import OutboxEvents
from scheduler.web import create_inbox_router
from subscribers.events import SubscriberEvents
from subscribers.web import create_router as create_subscriber_router

NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class SecurityHeaders:
    """Adds the headers every answer carries; plain ASGI, so it costs nothing per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    settings: Settings,
    database: Database | None = None,
    events: SubscriberEvents | None = None,
) -> FastAPI:
    """The web app for ``settings``.

    Opens (and migrates) the database unless one is given; ``events`` receives what readers do
    (the deliveries outbox, ``OutboxEvents``, unless a test passes its own: the confirmation
    and welcome emails become delivery rows in the request's transaction, and a worker, in this
    process or another, sends them).
    """
    database = database or open_database(settings)
    if events is None:
        events = OutboxEvents(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        close = getattr(events, "close", None)
        if close is not None:
            close()

    app = FastAPI(
        title="Newsletter",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look up the global providers on every request (a tenth
        # of a signup's CPU); nothing here exports traces or metrics.
        telemetry=NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.secret_key = database.secret_key(settings)
    app.state.subscriber_events = events

    app.include_router(create_subscriber_router(settings))
    app.include_router(
        create_admin_router(settings, database, app.state.secret_key, lambda: events)
    )
    if settings.uses_capture_inbox:
        app.include_router(create_inbox_router(database, settings.capture_port))

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/subscribe", status_code=307)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Answers 200 when the database answers."""
        with database.session() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(NewsletterError)
    async def newsletter_error(_request: Request, error: NewsletterError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": error.detail}, status_code=error.status_code, headers=error.headers
        )

    return app
