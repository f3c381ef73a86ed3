"""``create_app()``: the web app, built from settings, assembling each domain folder's router."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from newsletter.db import Database, open_database
from newsletter.errors import NewsletterError
from newsletter.settings import Settings


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    """The web app for ``settings``; opens (and migrates) the database unless one is given."""
    database = database or open_database(settings)
    app = FastAPI(title="Newsletter", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.database = database
    app.state.secret_key = database.secret_key(settings)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        with database.session() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.exception_handler(NewsletterError)
    async def newsletter_error(_request: Request, error: NewsletterError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=400)

    return app
