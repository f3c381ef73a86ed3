"""The reader's pages: the signup form, confirmation, one-click unsubscribe, preferences, report.

Every page works without JavaScript. Errors a reader can cause become a page (or JSON) with a
message and a 4xx status; nothing here formats a stack trace.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from newsletter.db import Database
from newsletter.errors import NotFoundError, TokenError, ValidationError
from newsletter.settings import Settings
from subscribers import signup as flow
from subscribers.events import SubscriberEvents
from subscribers.ratelimit import SignupLimiter
from subscribers.signup_writer import SignupWriter
from subscribers.tokens import Purpose, read_token, signed_url

PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=select_autoescape(default=True),
)
SAMPLE_REPORT = (
    Path(__file__).resolve().parent.parent / "campaigns" / "report" / "sample-report.html"
)
MAX_BODY_BYTES = 16 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SIGNUP_BODY = {
    "required": True,
    "content": {
        media: {
            "schema": {
                "type": "object",
                "required": ["email"],
                "properties": {
                    "email": {"type": "string", "format": "email", "maxLength": 320},
                    "name": {"type": "string", "maxLength": 100},
                    "form": {"type": "string", "maxLength": 64},
                    "timezone": {"type": "string", "maxLength": 64},
                    "website": {"type": "string", "description": "honeypot: leave empty"},
                },
            }
        }
        for media in ("application/json", *FORM_TYPES)
    },
}


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(PAGES.get_template(name).render(**context), status_code=status_code)


def message_page(
    heading: str, *paragraphs: str, status_code: int = 200, link: tuple[str, str] | None = None
) -> HTMLResponse:
    return page("message.html", status_code, heading=heading, paragraphs=paragraphs, link=link)


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The client's IP: the peer, or the nearest untrusted hop of a trusted proxy's header."""
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted_proxies:
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed(hops):
        if hop and hop not in trusted_proxies and _is_ip(hop):
            return hop
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class BadBody(Exception):
    """The request body cannot be read as a signup; carries the HTTP status to answer."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


async def read_fields(request: Request) -> tuple[dict[str, Any], bool]:
    """The submitted fields and whether the client speaks JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    if length and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise BadBody(413, "The request is too large.")
    if media == "application/json":
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise BadBody(413, "The request is too large.")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadBody(422, "The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise BadBody(422, "Send a JSON object with an email field.")
        return data, True
    if media in FORM_TYPES:
        try:
            form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_BODY_BYTES)
        except Exception:
            raise BadBody(400, "The form data could not be read.") from None
        fields = {
            key: (None if isinstance(value, UploadFile) else value) for key, value in form.items()
        }
        return fields, False
    raise BadBody(415, "Send the form as application/x-www-form-urlencoded or JSON.")


def linked_reader_key(request: Request, purpose: Purpose, token: str) -> str:
    """The key of the reader a signed link names; ``TokenError`` for a bad or expired link,
    ``NotFoundError`` when the reader has been erased since."""
    key = read_token(request.app.state.secret_key, purpose, token)
    with request.app.state.database.session() as session:
        flow.subscriber_by_key(session, key)
    return key


def create_router(settings: Settings) -> APIRouter:
    """The reader's routes, with this process's signup limiter."""
    writers: list[SignupWriter] = []

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        while writers:
            writers.pop().close()

    router = APIRouter(tags=["subscribers"], lifespan=lifespan)
    limiter = SignupLimiter(settings.signup_limit)

    def signup_writer(request: Request) -> SignupWriter:
        """This app's writer, started with its first signup (one per app: tests run several)."""
        if not writers:
            database, _secret, events = state(request)
            writers.append(SignupWriter(database, events))
        return writers[0]

    def state(request: Request) -> tuple[Database, str, SubscriberEvents]:
        app_state = request.app.state
        return app_state.database, app_state.secret_key, app_state.subscriber_events

    def form_page(
        status_code: int = 200, values: dict[str, Any] | None = None, errors: Any = None
    ) -> HTMLResponse:
        return page(
            "subscribe.html",
            status_code,
            action="/subscribe",
            form_id="hosted",
            values={k: v for k, v in (values or {}).items() if isinstance(v, str)},
            errors=errors or {},
            consent_text=flow.CONSENT_TEXT,
        )

    @router.get("/subscribe", response_class=HTMLResponse)
    def subscribe_form() -> HTMLResponse:
        """The hosted signup form."""
        return form_page()

    @router.get("/subscribe/embed", response_class=HTMLResponse)
    def subscribe_embed() -> HTMLResponse:
        """A self-contained form snippet to paste into any page."""
        return page(
            "embed.html",
            action=f"{settings.base_url}/subscribe",
            form_id="embed",
            consent_text=flow.CONSENT_TEXT,
        )

    @router.get("/subscribe/thanks", response_class=HTMLResponse)
    def subscribe_thanks() -> HTMLResponse:
        return message_page(
            "Check your inbox",
            "We have sent you an email with a link to confirm your subscription. "
            "Follow it and your free report is on its way.",
            "No email after a few minutes? Look in your spam folder, or sign up again.",
        )

    @router.post("/subscribe", openapi_extra={"requestBody": SIGNUP_BODY}, status_code=202)
    async def subscribe(request: Request) -> Response:
        """Sign up (form: 303 to the thank-you page; JSON: 202). Bad fields answer 422."""
        try:
            fields, wants_json = await read_fields(request)
        except BadBody as error:
            return JSONResponse({"error": error.message}, status_code=error.status_code)
        client = client_address(request, settings.trusted_proxies)
        try:
            signup_request = flow.parse_signup(
                fields,
                ip=client,
                user_agent=request.headers.get("user-agent"),
                check_deliverability=settings.check_deliverability,
            )
        except ValidationError as error:
            if wants_json:
                return JSONResponse({"errors": error.errors}, status_code=422)
            return form_page(422, fields, error.errors)
        if not limiter.allow(client):
            message = "Too many signups from your network. Try again in a few minutes."
            if wants_json:
                return JSONResponse({"error": message}, status_code=429)
            return form_page(429, fields, {"form_error": message})
        # A filled honeypot is a bot: answer as if all went well, and keep nothing.
        if not fields.get("website"):
            await signup_writer(request).signup(signup_request)
        if wants_json:
            return JSONResponse(
                {"status": "accepted", "message": "Check your inbox to confirm."}, status_code=202
            )
        return RedirectResponse("/subscribe/thanks", status_code=303)

    @router.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm_page(token: str, request: Request) -> HTMLResponse:
        """The page the confirmation link opens; it confirms a person's subscription with a POST.

        A GET changes nothing, so the link scanners of corporate mail systems, which open every
        link in an email, confirm nobody; a person's browser submits the page's form at once.
        """
        try:
            linked_reader_key(request, Purpose.CONFIRM, token)
        except (TokenError, NotFoundError) as error:
            return _link_error(error)
        return page("confirm.html", action=f"/confirm/{token}")

    @router.post("/confirm/{token}", response_class=HTMLResponse)
    def confirm(token: str, request: Request) -> HTMLResponse:
        """Confirm a subscription (double opt-in); the welcome email with the report follows."""
        database, secret, events = state(request)
        try:
            key = read_token(secret, Purpose.CONFIRM, token)
            with database.session() as session:
                subscriber, newly = flow.confirm(
                    session,
                    key,
                    ip=client_address(request, settings.trusted_proxies),
                    user_agent=request.headers.get("user-agent"),
                )
                subscriber_key = subscriber.key
                if newly:  # the reader enters the sequences in the same transaction
                    events.confirmed(session, subscriber.id)
        except (TokenError, NotFoundError) as error:
            return _link_error(error)
        report = signed_url(settings.base_url, secret, Purpose.REPORT, subscriber_key)
        return message_page(
            "You are subscribed",
            "Thank you for confirming. Your free report is on its way to your inbox.",
            link=(report, "Download the report now"),
        )

    @router.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
        """A page with one button; opening it changes nothing (link scanners open every link)."""
        secret = request.app.state.secret_key
        try:
            key = linked_reader_key(request, Purpose.UNSUBSCRIBE, token)
        except (TokenError, NotFoundError) as error:
            return _link_error(error)
        preferences = signed_url(settings.base_url, secret, Purpose.PREFERENCES, key)
        return page("unsubscribe.html", action=f"/unsubscribe/{token}", preferences=preferences)

    @router.post("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe(token: str, request: Request) -> HTMLResponse:
        """RFC 8058 one-click unsubscribe: takes effect at once, answers 200 without a redirect."""
        database, secret, events = state(request)
        try:
            key = read_token(secret, Purpose.UNSUBSCRIBE, token)
            with database.session() as session:
                subscriber, newly = flow.unsubscribe(session, key, source="unsubscribe:one-click")
                if newly:  # the reader leaves every sequence in the same transaction
                    events.unsubscribed(session, subscriber.id)
        except (TokenError, NotFoundError) as error:
            return _link_error(error)
        return message_page(
            "You are unsubscribed",
            "We will not send you any more email. Sorry to see you go.",
            link=("/subscribe", "Subscribed by mistake? Sign up again"),
        )

    @router.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences_page(token: str, request: Request) -> HTMLResponse:
        """The reader's name, time zone and topics."""
        database, secret, _events = state(request)
        try:
            key = read_token(secret, Purpose.PREFERENCES, token)
            with database.session() as session:
                subscriber = flow.subscriber_by_key(session, key)
                return _preferences_page(token, secret, subscriber, {}, saved=False)
        except (TokenError, NotFoundError) as error:
            return _link_error(error)

    @router.post("/preferences/{token}", response_class=HTMLResponse)
    async def save_preferences(token: str, request: Request) -> HTMLResponse:
        database, secret, _events = state(request)
        form = await request.form(max_files=0, max_fields=20)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "topics"}
        topics = [v for v in form.getlist("topics") if isinstance(v, str)]
        try:
            key = read_token(secret, Purpose.PREFERENCES, token)
            return await run_in_threadpool(
                _save_preferences, database, token, secret, key, fields, topics
            )
        except (TokenError, NotFoundError) as error:
            return _link_error(error)

    def _save_preferences(
        database: Database,
        token: str,
        secret: str,
        key: str,
        fields: dict[str, Any],
        topics: list[str],
    ) -> HTMLResponse:
        try:
            with database.session() as session:
                subscriber = flow.update_preferences(session, key, fields, topics)
                return _preferences_page(token, secret, subscriber, {}, saved=True)
        except ValidationError as error:
            with database.session() as session:
                subscriber = flow.subscriber_by_key(session, key)
                response = _preferences_page(token, secret, subscriber, error.errors, saved=False)
            response.status_code = 422
            return response

    def _preferences_page(
        token: str, secret: str, subscriber: Any, errors: dict[str, str], *, saved: bool
    ) -> HTMLResponse:
        return page(
            "preferences.html",
            action=f"/preferences/{token}",
            email=subscriber.email,
            values={"name": subscriber.name, "timezone": subscriber.timezone},
            topics=flow.TOPICS,
            chosen=set(subscriber.tag_names),
            errors=errors,
            saved=saved,
            unsubscribe=signed_url(settings.base_url, secret, Purpose.UNSUBSCRIBE, subscriber.key),
        )

    @router.get("/report/{token}", response_model=None)
    def report(token: str, request: Request) -> Response:
        """The free report for a reader who confirmed."""
        try:
            linked_reader_key(request, Purpose.REPORT, token)
        except (TokenError, NotFoundError) as error:
            return _link_error(error)
        return _report_response(settings)

    return router


def _report_response(settings: Settings) -> Response:
    if settings.report is None:
        return FileResponse(SAMPLE_REPORT, media_type="text/html")
    if settings.report.startswith("https://"):
        return RedirectResponse(settings.report, status_code=302)
    path = Path(settings.report)
    if not path.is_file():
        return message_page(
            "The report is not available",
            "We could not find the report right now. Please try again later.",
            status_code=404,
        )
    return FileResponse(path, filename=path.name)


def _link_error(error: TokenError | NotFoundError) -> HTMLResponse:
    status = 404 if isinstance(error, NotFoundError) else 400
    return message_page(
        "This link does not work",
        error.message,
        status_code=status,
        link=("/subscribe", "Go to the signup form"),
    )
