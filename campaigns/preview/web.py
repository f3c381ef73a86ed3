"""The preview server's pages: the index of every email, one email (HTML in a sandboxed iframe at
320 px, 600 px or full width, light or dark, its text part and headers, for a reader picked from
the samples or the store), live reload over server-sent events, and "send test" through a hook the
shell provides (campaigns never talk SMTP)."""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from campaigns.preview.catalog import Catalog, as_dark
from campaigns.preview.live import ChangeFeed
from campaigns.preview.readers import ReaderChoice, choose_reader, load_sample_readers
from newsletter.db import Database
from newsletter.errors import NewsletterError, NotFoundError, ValidationError
from subscribers.addresses import normalise_address

PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=select_autoescape(default=True),
)
# Marketer HTML is untrusted: no scripts, no same-origin access, no forms, nothing fetched but
# images and inline styles. The iframe that shows it is sandboxed too (no allow-same-origin).
SANDBOX_CSP = "sandbox; default-src 'none'; img-src data: https: http:; style-src 'unsafe-inline'"
HEARTBEAT_SECONDS = 15.0

# (recipient, message bytes) -> where it went, for the page to say; raises NewsletterError.
SendTest = Callable[[str, bytes], str]


LOCATION = re.compile(r"^(?P<file>[^\n:]+?):(?P<line>\d+):\s*(?P<message>.*)$", re.S)


def located(message: str) -> dict[str, Any]:
    """An error message split into its file, line and message, with the lines around it."""
    match = LOCATION.match(message)
    if match is None:
        return {"file": None, "line": None, "message": message, "excerpt": []}
    path, line = Path(match["file"]), int(match["line"])
    excerpt: list[tuple[int, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        excerpt = [
            (n, lines[n - 1]) for n in range(max(1, line - 2), min(len(lines), line + 2) + 1)
        ]
    except (OSError, UnicodeDecodeError):
        pass
    return {"file": match["file"], "line": line, "message": match["message"], "excerpt": excerpt}


def create_preview_router(
    catalog: Catalog,
    feed: ChangeFeed,
    *,
    database: Database | None = None,
    readers_file: Path | None = None,
    send_test: SendTest | None = None,
    spamassassin: str | None = None,
    inbox_url: str | None = None,
) -> APIRouter:
    """The preview's routes; ``send_test`` is the shell's way to send one message to one address."""
    router = APIRouter(include_in_schema=False)
    csrf_token = secrets.token_urlsafe(32)

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        if context.get("error"):
            context["where"] = located(context["error"])
        html = PAGES.get_template(name).render(version=feed.version, inbox_url=inbox_url, **context)
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})

    def samples() -> tuple[list[Any], str | None]:
        try:
            return load_sample_readers(readers_file), None
        except NewsletterError as error:
            return [], error.message

    def rendered_for(key: str, reader_key: str) -> dict[str, Any]:
        """Everything the email page shows; raises what the content or reader raise."""
        content = catalog.content(key)
        sample_list, _ = samples()
        choice = choose_reader(reader_key, content, sample_list, database)
        return {
            "content": content,
            "choice": choice,
            "rendered": catalog.render(content, choice.reader, key),
        }

    @router.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        sections = await run_in_threadpool(catalog.sections)
        return page("index.html", sections=sections)

    @router.get("/email/{key:path}", response_class=HTMLResponse)
    async def email(
        key: str,
        reader: str = "sample",
        subscriber: str | None = None,
        sent: str | None = None,
        failed: str | None = None,
    ) -> HTMLResponse:
        if subscriber:
            reader = f"subscriber:{subscriber}"
        sample_list, readers_error = samples()
        context: dict[str, Any] = {
            "key": key,
            "reader_key": reader,
            "samples": sample_list,
            "readers_error": readers_error,
            "sent": sent,
            "failed": failed,
            "csrf_token": csrf_token,
            "can_send": send_test is not None,
        }
        try:
            context.update(await run_in_threadpool(rendered_for, key, reader))
            context["report"] = await run_in_threadpool(
                catalog.full_check, context["content"], spamassassin
            )
        except NotFoundError as error:
            if not catalog.exists(key):
                return page("email.html", 404, error=error.message, **context)
            return page("email.html", 422, error=error.message, **context)
        except NewsletterError as error:
            context["layout_file"] = catalog.layout_file(key)
            return page("email.html", 422, error=error.message, **context)
        return page("email.html", **context)

    @router.get("/frame/{key:path}", response_class=HTMLResponse)
    async def frame(key: str, reader: str = "sample", scheme: str = "light") -> HTMLResponse:
        try:
            found = await run_in_threadpool(rendered_for, key, reader)
        except NewsletterError as error:
            raise HTTPException(404, error.message) from None
        html = found["rendered"].html or "<p>This email has no HTML part.</p>"
        if scheme == "dark":
            html = as_dark(html)
        return HTMLResponse(
            html, headers={"Content-Security-Policy": SANDBOX_CSP, "Cache-Control": "no-store"}
        )

    @router.get("/raw/{key:path}")
    async def raw(key: str, reader: str = "sample") -> Response:
        try:
            found = await run_in_threadpool(rendered_for, key, reader)
        except NewsletterError as error:
            raise HTTPException(404, error.message) from None
        return Response(found["rendered"].raw, media_type="text/plain; charset=utf-8")

    @router.post("/send-test/{key:path}")
    async def send(
        request: Request,
        key: str,
        to: str = Form(""),
        reader: str = Form("sample"),
        csrf: str = Form(""),
    ) -> Response:
        # A page on another site must not make this machine send mail.
        site = request.headers.get("sec-fetch-site", "same-origin")
        if site not in ("same-origin", "none") or not hmac.compare_digest(csrf, csrf_token):
            raise HTTPException(403, "Send a test from the preview page itself.")
        back = {"reader": reader}
        if send_test is None:
            back["failed"] = "This preview cannot send: no SMTP is wired."
            return RedirectResponse(f"/email/{key}?{urlencode(back)}", status_code=303)
        try:
            address = normalise_address(to)
            found = await run_in_threadpool(rendered_for, key, reader)
            choice: ReaderChoice = found["choice"]
            # The reader's personalisation, addressed to the one address typed: never a reader.
            test_reader = replace(choice.reader, email=address)
            message = catalog.render(found["content"], test_reader, key).raw
            where = await run_in_threadpool(send_test, address, message)
            back["sent"] = f"Sent to {address} {where}."
        except ValidationError as error:
            back["failed"] = f"Not sent: {error.errors.get('email', error.message)}"
        except NewsletterError as error:
            back["failed"] = f"Not sent: {error.message}"
        return RedirectResponse(f"/email/{key}?{urlencode(back)}", status_code=303)

    @router.get("/events")
    async def events(request: Request, since: int = 0) -> StreamingResponse:
        # A reconnecting EventSource says what it saw last; a restarted server counts from 0
        # again, so a page that saw more than this server has is simply told to update.
        last = request.headers.get("last-event-id", "")
        seen_before = max(since, int(last) if last.isdigit() else 0)

        async def stream() -> AsyncIterator[str]:
            seen = seen_before
            yield "retry: 1000\n\n"
            if seen > feed.version:
                seen = feed.version
                yield f"id: {seen}\nevent: change\ndata: {seen}\n\n"
            while not feed.closed:
                if seen < feed.version:
                    seen = feed.version
                    yield f"id: {seen}\nevent: change\ndata: {seen}\n\n"
                    continue
                version = await feed.wait(seen, HEARTBEAT_SECONDS)
                if version == seen and not feed.closed:
                    yield ": still here\n\n"
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
