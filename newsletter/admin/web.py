"""The dashboard's pages under ``/admin``: sign-in, overview, campaigns, sequences, subscribers.

Every route but the sign-in page and the two static files sits behind one guard: a valid session
cookie whose version matches the account's (else a redirect to sign-in for a page, 401 for JSON)
and, for every method but GET and HEAD, the session's CSRF token (else 403, nothing changed).
Each action calls the domain function the CLI calls; errors a marketer can cause come back as
the page again with the message beside the form.
"""

from __future__ import annotations

import hmac
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, available_timezones

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from campaigns.preview.catalog import Catalog
from campaigns.preview.readers import choose_reader
from campaigns.preview.web import SANDBOX_CSP
from newsletter.admin import accounts, overview
from newsletter.admin.accounts import SignedInAccount
from newsletter.admin.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    SessionCookie,
    SessionSigner,
    cookie_options,
)
from newsletter.db import Database, utcnow
from newsletter.errors import NewsletterError, NotFoundError, RateLimitedError, ValidationError
from newsletter.settings import Settings
from scheduler import campaigns as runs
from scheduler.clock import schedule_campaign
from scheduler.explain import Explanation, explain
from scheduler.sequences import read_sequences, sequence_status
from subscribers.erasure import erase_subscriber
from subscribers.events import SubscriberEvents
from subscribers.importer import import_csv, import_status
from subscribers.models import Status, Subscriber
from subscribers.queries import ReaderFilter, count_subscribers, list_subscribers, reader_details
from subscribers.signup import unsubscribe

HERE = Path(__file__).parent
PAGES = Environment(
    loader=FileSystemLoader(HERE / "pages"),
    autoescape=select_autoescape(default=True),
)
STATIC = {"admin.css": "text/css", "admin.js": "text/javascript"}
# The dashboard's own pages: scripts and styles from /admin/static only; the preview's iframe
# (same origin, itself sandboxed) is the one frame; nothing may frame the dashboard.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
PRE_SESSION_COOKIE = "newsletter_admin_signin"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SEARCH_LIMIT = 50
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
FINISHED_STATES = (runs.RunState.DONE, runs.RunState.CANCELLED)
NOTICES = {
    "scheduled": "The campaign is scheduled.",
    "paused": "The campaign is paused: nothing more of it is sent until you resume it.",
    "resumed": "The campaign goes on.",
    "cancelled": "The campaign is cancelled; what was not sent yet is skipped.",
    "unsubscribed": "The reader is unsubscribed and gets nothing more.",
    "erased": "The reader is erased; a hash of the address keeps it from being added again.",
    "password": "Your password is changed; your other sessions are signed out.",
    "signed-out": "You are signed out.",
}


class Signed:
    """The signed-in marketer of a request: the account and the session cookie."""

    def __init__(self, account: SignedInAccount, cookie: SessionCookie) -> None:
        self.account = account
        self.cookie = cookie


@cache
def time_zones() -> list[str]:
    """Every IANA zone a marketer may pick (without the legacy ``posix/`` and ``right/`` copies)."""
    return sorted(
        zone for zone in available_timezones() if not zone.startswith(("posix", "right/"))
    )


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.endswith(".json") or (
        "application/json" in accept and "text/html" not in accept
    )


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only, never another site."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin/"


def create_admin_router(
    settings: Settings,
    database: Database,
    secret_key: str,
    events: Callable[[], SubscriberEvents],
) -> APIRouter:
    """The dashboard's routes; ``events`` gives the shell's hook for confirmation emails (a
    pending CSV import asks it for one per new reader)."""
    router = APIRouter(include_in_schema=False)
    guarded = APIRouter(prefix="/admin")
    signer = SessionSigner(secret_key)
    catalog = Catalog(settings)
    cookie = cookie_options(settings.base_url)

    # ------------------------------------------------------------ the guard

    def require_session(request: Request) -> Signed:
        found = signer.read(request.cookies.get(COOKIE_NAME))
        account = None
        if found is not None:
            with database.session() as session:
                account = accounts.account_by_id(session, found.account_id)
        if found is None or account is None or account.session_version != found.session_version:
            if _wants_json(request):
                raise HTTPException(401, "sign in to the dashboard first")
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            location = "/admin/sign-in?" + urlencode({"next": target})
            raise HTTPException(303, "sign in first", headers={"Location": location})
        return Signed(account, found)

    async def require_csrf(request: Request, signed: Signed = Depends(require_session)) -> Signed:
        if request.method not in SAFE_METHODS:
            token = request.headers.get("x-csrf-token")
            if token is None:
                form = await request.form()
                value = form.get("csrf_token")
                token = value if isinstance(value, str) else None
            if not signed.cookie.accepts(token):
                raise HTTPException(
                    403,
                    "the form's security token is missing or out of date: nothing was changed; "
                    "reload the page and try again",
                )
        request.state.admin = signed
        return signed

    def signed_of(request: Request) -> Signed:
        signed: Signed = request.state.admin
        return signed

    # ------------------------------------------------------------ rendering

    def page(
        request: Request | None,
        template: str,
        status_code: int = 200,
        /,
        **context: Any,
    ) -> HTMLResponse:
        signed = None if request is None else getattr(request.state, "admin", None)
        notice = None if request is None else NOTICES.get(request.query_params.get("notice", ""))
        html = PAGES.get_template(template).render(
            account=signed.account if signed else None,
            csrf_token=signed.cookie.csrf_token if signed else "",
            notice=notice,
            zone=settings.timezone,
            when=lambda moment: overview.shown_time(moment, settings.timezone),
            when_iso=lambda text: overview.shown_iso_time(text, settings.timezone),
            **context,
        )
        return HTMLResponse(
            html,
            status_code=status_code,
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"},
        )

    def see_other(path: str, notice: str | None = None) -> RedirectResponse:
        return RedirectResponse(path + (f"?notice={notice}" if notice else ""), status_code=303)

    # ------------------------------------------------------------ public: sign-in, static files

    @router.get("/admin/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return FileResponse(
            HERE / "static" / name,
            media_type=STATIC[name],
            headers={"Cache-Control": "public, max-age=300"},
        )

    def sign_in_page(
        next_path: str,
        status_code: int = 200,
        error: str | None = None,
        email: str = "",
        notice: str | None = None,
    ) -> HTMLResponse:
        token = secrets.token_urlsafe(32)
        response = page(
            None,
            "sign_in.html",
            status_code,
            title="Sign in",
            next_path=next_path,
            error=error,
            email=email,
            sign_in_token=token,
            signed_out_notice=notice,
        )
        response.set_cookie(
            PRE_SESSION_COOKIE,
            token,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=cookie["secure"],
        )
        return response

    @router.get("/admin/sign-in", response_class=HTMLResponse)
    def sign_in_form(request: Request, next: str | None = None) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("notice", ""))
        return sign_in_page(_safe_next(next), notice=notice)

    @router.post("/admin/sign-in", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        email = str(form.get("email") or "")
        password = str(form.get("password") or "")
        next_path = _safe_next(str(form.get("next") or ""))
        expected = request.cookies.get(PRE_SESSION_COOKIE) or ""
        given = str(form.get("csrf_token") or "")
        if not expected or not hmac.compare_digest(expected, given):
            return sign_in_page(
                next_path, 403, "The sign-in form was out of date; sign in again.", email
            )
        try:
            account = await run_in_threadpool(_authenticate, email, password)
        except RateLimitedError as error:
            return sign_in_page(next_path, 429, error.message, email)
        except ValidationError as error:
            return sign_in_page(next_path, 401, next(iter(error.errors.values())), email)
        _, value = signer.issue(account.id, account.session_version)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(value=value, **cookie)
        response.delete_cookie(PRE_SESSION_COOKIE, path=COOKIE_PATH)
        return response

    def _authenticate(email: str, password: str) -> SignedInAccount:
        with database.session() as session:
            try:
                return accounts.authenticate(session, email, password)
            except ValidationError as error:
                failed = error  # the failure row must be committed, not rolled back
        raise failed

    # ------------------------------------------------------------ session: sign-out, password

    @guarded.post("/sign-out")
    def sign_out() -> RedirectResponse:
        response = RedirectResponse("/admin/sign-in?notice=signed-out", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
        return response

    @guarded.get("/account", response_class=HTMLResponse)
    def account_page(request: Request) -> HTMLResponse:
        return page(request, "account.html", title="Your account", section="account")

    @guarded.post("/account", response_class=HTMLResponse)
    async def change_password(request: Request) -> Response:
        form = await request.form()
        current = str(form.get("current_password") or "")
        new = str(form.get("new_password") or "")
        repeat = str(form.get("repeat_password") or "")
        signed = signed_of(request)

        def change() -> SignedInAccount:
            with database.session() as session:
                if not accounts.verify_password(session, signed.account.id, current):
                    raise ValidationError({"current_password": "This is not your password."})
                if new != repeat:
                    raise ValidationError({"repeat_password": "The two new passwords differ."})
                try:
                    return accounts.set_password(session, signed.account.email, new)
                except ValidationError as error:
                    raise ValidationError({"new_password": error.errors["password"]}) from None

        try:
            changed = await run_in_threadpool(change)
        except ValidationError as error:
            return page(
                request,
                "account.html",
                422,
                title="Your account",
                section="account",
                errors=error.errors,
            )
        _, value = signer.issue(changed.id, changed.session_version)
        response = see_other("/admin/account", "password")
        response.set_cookie(value=value, **cookie)
        return response

    # ------------------------------------------------------------ overview

    @guarded.get("/", response_class=HTMLResponse)
    def overview_page(request: Request) -> HTMLResponse:
        now = utcnow()
        with database.session() as session:
            days = overview.signups_by_day(session, now.date())
            context: dict[str, Any] = {
                "by_status": overview.readers_by_status(session),
                "chart": overview.signup_chart(days),
                "latest": overview.latest_signups(session),
                "by_form": overview.signups_by_form(session, now - timedelta(days=30)),
                "next_sends": overview.next_sends(session),
                "upcoming_steps": overview.upcoming_steps(session, now),
            }
        return page(request, "overview.html", title="Overview", section="overview", **context)

    @guarded.get("", include_in_schema=False)
    def overview_redirect() -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=307)

    # ------------------------------------------------------------ campaigns

    def campaign_names() -> list[str]:
        return sorted(path.stem for path in catalog.content_root.glob("*.md"))

    @guarded.get("/campaigns", response_class=HTMLResponse)
    def campaign_list(request: Request) -> HTMLResponse:
        statuses = {found["campaign"]: found for found in runs.all_statuses(database)}
        rows = []
        for name in sorted(set(campaign_names()) | set(statuses)):
            subject, error = "", None
            try:
                subject = catalog.content(f"campaign/{name}").subject
            except NewsletterError as problem:
                error = problem.message
            rows.append({"name": name, "subject": subject, "error": error, **_run(statuses, name)})
        return page(request, "campaigns.html", title="Campaigns", section="campaigns", rows=rows)

    def _run(statuses: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
        found = statuses.get(name)
        if found is None:
            return {"state": "draft", "local_send_at": None, "sent": 0, "total": 0}
        return found

    def campaign_context(name: str) -> dict[str, Any]:
        key = f"campaign/{name}"
        content = catalog.content(key)  # NotFoundError for an unknown or malformed name
        try:
            status: dict[str, Any] | None = runs.status(database, name)
        except NotFoundError:
            status = None
        zone = ZoneInfo(settings.timezone)
        soon = (datetime.now(UTC) + timedelta(hours=1)).astimezone(zone)
        state = status["state"] if status else None
        return {
            "name": name,
            "subject": content.subject,
            "report": catalog.glance(content),
            "status": status,
            "state": state,
            "can_schedule": state in (None, runs.RunState.CANCELLED),
            "can_pause": state in (runs.RunState.SCHEDULED, runs.RunState.SENDING),
            "can_resume": state in (runs.RunState.PAUSED, runs.RunState.HELD),
            "can_cancel": state is not None and state not in FINISHED_STATES,
            "zones": time_zones(),
            "form": {
                "date": soon.strftime("%Y-%m-%d"),
                "time": soon.strftime("%H:00"),
                "zone": settings.timezone,
                "segment": "",
            },
            "counts": ("queued", "sent", "failed", "bounced", "skipped"),
        }

    def campaign_page(
        request: Request, name: str, status_code: int = 200, **extra: Any
    ) -> HTMLResponse:
        try:
            context = campaign_context(name)
        except NewsletterError as error:
            return page(request, "missing.html", 404, title="Not found", message=error.message)
        if "form" in extra:
            context["form"] = {**context["form"], **extra.pop("form")}
        context.update(extra)
        return page(
            request,
            "campaign.html",
            status_code,
            title=f"Campaign {name}",
            section="campaigns",
            **context,
        )

    @guarded.get("/campaigns/{name}", response_class=HTMLResponse)
    def campaign(request: Request, name: str) -> HTMLResponse:
        return campaign_page(request, name)

    @guarded.get("/campaigns/{name}/frame", response_class=HTMLResponse)
    def campaign_frame(name: str) -> HTMLResponse:
        key = f"campaign/{name}"
        try:
            content = catalog.content(key)
            choice = choose_reader("sample", content, [], None)
            rendered = catalog.render(content, choice.reader, key)
        except NewsletterError as error:
            raise HTTPException(404, error.message) from None
        html = rendered.html or "<p>This email has no HTML part.</p>"
        return HTMLResponse(
            html, headers={"Content-Security-Policy": SANDBOX_CSP, "Cache-Control": "no-store"}
        )

    @guarded.get("/campaigns/{name}/status.json")
    def campaign_status(name: str) -> JSONResponse:
        try:
            found = runs.status(database, name)
        except NotFoundError as error:
            raise HTTPException(404, error.message) from None
        found["finished"] = found["state"] in FINISHED_STATES
        return JSONResponse(found, headers={"Cache-Control": "no-store"})

    @guarded.post("/campaigns/{name}/schedule", response_class=HTMLResponse)
    async def schedule(request: Request, name: str) -> Response:
        form = await request.form()
        values = {
            field: str(form.get(field) or "").strip()
            for field in ("date", "time", "zone", "segment")
        }
        at = f"{values['date']} {values['time']}"
        zone = values["zone"] or settings.timezone
        try:
            await run_in_threadpool(
                schedule_campaign, database, settings, name, at, zone, values["segment"] or None
            )
        except NewsletterError as error:
            return campaign_page(request, name, 422, error=error.message, form=values)
        return see_other(f"/admin/campaigns/{quote(name)}", "scheduled")

    def control(action: Callable[[Database, str], Any], notice: str) -> Any:
        def handler(request: Request, name: str) -> Response:
            try:
                action(database, name)
            except NewsletterError as error:
                return campaign_page(request, name, 409, error=error.message)
            return see_other(f"/admin/campaigns/{quote(name)}", notice)

        return handler

    guarded.post("/campaigns/{name}/pause", response_class=HTMLResponse)(
        control(runs.pause, "paused")
    )
    guarded.post("/campaigns/{name}/resume", response_class=HTMLResponse)(
        control(runs.resume, "resumed")
    )
    guarded.post("/campaigns/{name}/cancel", response_class=HTMLResponse)(
        control(runs.cancel, "cancelled")
    )

    @guarded.get("/campaigns/{name}/cancel", response_class=HTMLResponse)
    def cancel_confirmation(request: Request, name: str) -> HTMLResponse:
        return page(
            request,
            "confirm.html",
            title=f"Cancel campaign {name}?",
            section="campaigns",
            question=f"Cancel campaign {name} for good?",
            detail="What is not sent yet is skipped. A cancelled campaign cannot be resumed.",
            action=f"/admin/campaigns/{quote(name)}/cancel",
            button="Cancel the campaign",
            back=f"/admin/campaigns/{quote(name)}",
        )

    # ------------------------------------------------------------ sequences

    @guarded.get("/sequences", response_class=HTMLResponse)
    def sequences(request: Request) -> HTMLResponse:
        found: list[dict[str, Any]] = []
        with database.session() as session:
            for name, sequence in read_sequences():
                if sequence is None:
                    found.append({"name": name, "error": "the file does not load", "steps": []})
                    continue
                status = sequence_status(session, sequence)
                steps = [
                    {"id": step.id, "subject": _subject(step), **status["steps"][step.id]}
                    for step in sequence.steps
                ]
                found.append(
                    {"name": name, "error": None, "steps": steps, "readers": status["readers"]}
                )
        return page(
            request, "sequences.html", title="Sequences", section="sequences", sequences=found
        )

    # ------------------------------------------------------------ subscribers

    @guarded.get("/subscribers", response_class=HTMLResponse)
    def subscriber_search(request: Request, q: str = "", status: str = "") -> HTMLResponse:
        error = None
        readers: list[Subscriber] = []
        total = 0
        try:
            where = ReaderFilter.parse(status or None, None, q or None)
            with database.session() as session:
                total = count_subscribers(session, where)
                readers = list_subscribers(session, where, limit=SEARCH_LIMIT)
        except ValidationError as problem:
            error = problem.message
        return page(
            request,
            "subscribers.html",
            title="Subscribers",
            section="subscribers",
            q=q,
            status=status,
            statuses=[s.value for s in Status],
            readers=readers,
            total=total,
            error=error,
        )

    def reader_or_404(session: Any, reader_id: int) -> Subscriber:
        reader = session.get(Subscriber, reader_id)
        if reader is None:
            raise NotFoundError("no reader has this number; it may have been erased")
        return reader

    @guarded.get("/subscribers/import", response_class=HTMLResponse)
    def import_form(request: Request) -> HTMLResponse:
        return page(request, "import.html", title="Import readers", section="subscribers")

    @guarded.post("/subscribers/import", response_class=HTMLResponse)
    async def import_upload(request: Request) -> HTMLResponse:
        form = await request.form()
        upload = form.get("file")
        status_text = str(form.get("status") or "")
        source = str(form.get("source") or "").strip()
        errors: dict[str, str] = {}
        if not isinstance(upload, UploadFile) or not upload.filename:
            errors["file"] = "Choose a CSV file to import."
        try:
            chosen = import_status(status_text)
        except ValidationError:
            errors["status"] = "Say whether these readers consented (confirmed) or not (pending)."
        if errors or not isinstance(upload, UploadFile):
            return page(
                request,
                "import.html",
                422,
                title="Import readers",
                section="subscribers",
                errors=errors,
                source=source,
            )
        name = Path(upload.filename or "upload.csv").name
        with tempfile.TemporaryDirectory(prefix="newsletter-import-") as folder:
            path = Path(folder) / "upload.csv"
            size = 0
            with path.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        return page(
                            request,
                            "import.html",
                            413,
                            title="Import readers",
                            section="subscribers",
                            errors={"file": "The file is over 200 MB; split it, or use the CLI."},
                            source=source,
                        )
                    out.write(chunk)
            hook = events() if chosen is Status.PENDING else None
            try:
                summary = await run_in_threadpool(
                    lambda: import_csv(
                        path, chosen, database=database, events=hook, source=source or name
                    )
                )
            except NewsletterError as error:
                return page(
                    request,
                    "import.html",
                    422,
                    title="Import readers",
                    section="subscribers",
                    errors={"file": error.message},
                    source=source,
                )
        return page(
            request,
            "import_report.html",
            title="Import report",
            section="subscribers",
            summary=summary,
            file_name=name,
            status=chosen.value,
        )

    @guarded.get("/subscribers/{reader_id}", response_class=HTMLResponse)
    def reader_page(request: Request, reader_id: int) -> HTMLResponse:
        try:
            with database.session() as session:
                reader = reader_or_404(session, reader_id)
                details = reader_details(reader)
                deliveries = overview.reader_deliveries(session, reader_id)
        except NotFoundError as error:
            return page(request, "missing.html", 404, title="Not found", message=error.message)
        return page(
            request,
            "reader.html",
            title=f"Reader {details['email']}",
            section="subscribers",
            reader_id=reader_id,
            details=details,
            deliveries=deliveries,
            explanation=explain_or_none(details["email"]),
            can_unsubscribe=details["status"] in (Status.PENDING, Status.CONFIRMED),
        )

    def explain_or_none(email: str) -> Explanation | None:
        # The page still shows the reader's history when a sequence file cannot be read.
        try:
            return explain(database, settings, email)
        except NewsletterError:
            return None

    def reader_action(
        request: Request, reader_id: int, question: str, detail: str, action: str, button: str
    ) -> HTMLResponse:
        with database.session() as session:
            reader = session.get(Subscriber, reader_id)
            email = None if reader is None else reader.email
        if email is None:
            return page(request, "missing.html", 404, title="Not found", message="No such reader.")
        return page(
            request,
            "confirm.html",
            title=question.format(email=email),
            section="subscribers",
            question=question.format(email=email),
            detail=detail,
            action=f"/admin/subscribers/{reader_id}/{action}",
            button=button,
            back=f"/admin/subscribers/{reader_id}",
        )

    @guarded.get("/subscribers/{reader_id}/unsubscribe", response_class=HTMLResponse)
    def unsubscribe_confirmation(request: Request, reader_id: int) -> HTMLResponse:
        return reader_action(
            request,
            reader_id,
            "Unsubscribe {email}?",
            "They get nothing more from the moment you confirm, campaigns already sending "
            "included. The change is kept in their history with you as its source.",
            "unsubscribe",
            "Unsubscribe the reader",
        )

    def act_on_reader(
        request: Request,
        reader_id: int,
        act: Callable[[Any, Subscriber], object],
        then: str,
        done: str,
    ) -> Response:
        """Do ``act`` to the reader in one transaction, then go to ``then`` saying ``done``."""
        try:
            with database.session() as session:
                act(session, reader_or_404(session, reader_id))
        except NotFoundError as error:
            return page(request, "missing.html", 404, title="Not found", message=error.message)
        return see_other(then, done)

    @guarded.post("/subscribers/{reader_id}/unsubscribe", response_class=HTMLResponse)
    def unsubscribe_reader(request: Request, reader_id: int) -> Response:
        source = f"admin:{signed_of(request).account.id}"
        return act_on_reader(
            request,
            reader_id,
            lambda session, reader: unsubscribe(session, reader.key, source=source),
            f"/admin/subscribers/{reader_id}",
            "unsubscribed",
        )

    @guarded.get("/subscribers/{reader_id}/erase", response_class=HTMLResponse)
    def erase_confirmation(request: Request, reader_id: int) -> HTMLResponse:
        return reader_action(
            request,
            reader_id,
            "Erase {email}?",
            "Their data, status history and consent records are deleted for good; only a hash "
            "of the address is kept so that it is never added again. This cannot be undone.",
            "erase",
            "Erase the reader for good",
        )

    @guarded.post("/subscribers/{reader_id}/erase", response_class=HTMLResponse)
    def erase_reader(request: Request, reader_id: int) -> Response:
        return act_on_reader(
            request,
            reader_id,
            lambda session, reader: erase_subscriber(session, reader.email),
            "/admin/subscribers",
            "erased",
        )

    router.include_router(guarded, dependencies=[Depends(require_csrf)])
    return router


def _subject(step: Any) -> str:
    try:
        return str(step.content().subject)
    except NewsletterError as error:
        return f"(does not load: {error.message})"


__all__ = ["create_admin_router"]
