"""The capture inbox's web view: list, read (HTML, text, headers, raw) and clear."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from newsletter.db import Database
from scheduler import capture

PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=select_autoescape(default=True),
)
# Captured HTML is untrusted: no scripts, no same-origin access, no forms.
SANDBOX_CSP = "sandbox; default-src 'none'; img-src data: https: http:; style-src 'unsafe-inline'"


def create_inbox_router(
    database: Database, smtp_port: int, home: tuple[str, str] | None = None
) -> APIRouter:
    """The inbox's pages under ``/inbox``; ``home`` (URL, label) adds a link back to the host app
    (the preview server passes its index)."""
    router = APIRouter(prefix="/inbox", tags=["capture inbox"], include_in_schema=False)

    def find(message_id: int) -> capture.CapturedMessage:
        message = capture.get_message(database, message_id)
        if message is None:
            raise HTTPException(404, "No such message in the capture inbox.")
        return message

    @router.get("", response_class=HTMLResponse)
    def inbox() -> HTMLResponse:
        messages = capture.list_messages(database)
        html = PAGES.get_template("inbox.html").render(
            messages=messages,
            message=None,
            home=home,
            smtp_port=smtp_port,
            total=capture.count_messages(database),
        )
        return HTMLResponse(html)

    @router.get("/{message_id}", response_class=HTMLResponse)
    def show(message_id: int) -> HTMLResponse:
        message = find(message_id)
        parsed = _parse(message.raw)
        html = PAGES.get_template("inbox.html").render(
            message=message,
            home=home,
            has_html=_part(parsed, "html") is not None,
            text=_part(parsed, "plain"),
            header_block=_header_block(message.raw),
            attachments=_attachments(parsed),
        )
        return HTMLResponse(html)

    @router.get("/{message_id}/html", response_class=HTMLResponse)
    def html_part(message_id: int) -> HTMLResponse:
        html = _part(_parse(find(message_id).raw), "html") or ""
        return HTMLResponse(html, headers={"Content-Security-Policy": SANDBOX_CSP})

    @router.get("/{message_id}/raw", response_class=PlainTextResponse)
    def raw(message_id: int) -> Response:
        return Response(find(message_id).raw, media_type="text/plain; charset=utf-8")

    @router.post("/clear")
    def clear(request: Request) -> Response:
        # A cross-site form must not empty a developer's inbox.
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise HTTPException(403, "Clearing the inbox is only allowed from its own page.")
        capture.clear_messages(database)
        return RedirectResponse("/inbox", status_code=303)

    return router


def _parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _part(message: EmailMessage, subtype: str) -> str | None:
    try:
        body = message.get_body(preferencelist=(subtype,))
        if body is None:
            return None
        return str(body.get_content())
    except Exception:  # any program's mail is shown: a bad charset or part is "no such part"
        return None


def _header_block(raw: bytes) -> str:
    """The headers exactly as received (folded lines and encoded words as they came)."""
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=-1)
    block = raw if end < 0 else raw[:end]
    return block.decode("utf-8", "replace").replace("\r\n", "\n")


def _attachments(message: EmailMessage) -> list[tuple[str, str, int]]:
    """(file name, content type, size in bytes) of each attachment."""
    found = []
    try:
        for part in message.iter_attachments():
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            found.append((part.get_filename() or "(no name)", part.get_content_type(), size))
    except Exception:
        return found
    return found
