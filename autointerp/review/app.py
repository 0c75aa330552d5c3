"""The review app's HTTP side: routes, the token, host and CSRF guards, and page rendering.

Every page is rendered on the server from Jinja2 templates with autoescaping on, so corpus
text and model output are always escaped, and every value passes `text.finalize`, so control and
bidi characters show as markers. DuckDB access goes through `Store`, one call at a time within this
process, with the file held open while requests come in and released a second after the last
(`store_access`), so a run writing the same file waits at most that long. Request values are checked in
`forms`; a bad one is a 4xx page, never a server error.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import math
import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from autointerp.errors import AutointerpError
from autointerp.review import forms, text
from autointerp.review.export import EXPORT_FORMATS, export_reviews
from autointerp.review.feature_list import FEATURE_SORTS, UnknownListScope
from autointerp.review.feature_view import feature_view
from autointerp.review.forms import BadRequest, BodyTooLarge, Conflict, Forbidden, NotFound
from autointerp.review.queries import (
    STATUS_OF_DECISION,
    ReviewConflict,
    ReviewQueries,
    UnknownExplanation,
)
from autointerp.review.store_access import StoreAccess
from autointerp.score.confidence import CHANCE_P, score_text
from autointerp.store.database import Store, now

HERE = Path(__file__).parent
VERDICTS = ("accept", "reject", "edit", "note", "request_experiments")
"""What the feature page's forms may post (`clear` is written by an undo only)."""
BULK_VERDICTS = ("accept", "reject")
MAX_BULK = 10_000
"""Most features one bulk action reviews."""
BATCH_PATTERN = re.compile(r"[0-9a-f]{32}")
TOKEN_COOKIE = "autointerp_token"


@dataclass
class ReviewSettings:
    """How the app is served: the database, an access token (required off loopback), the hosts it answers."""

    db: Path
    token: str | None = None
    allowed_hosts: set[str] = field(default_factory=lambda: {"127.0.0.1", "localhost", "::1"})
    """Host header names accepted (guards against DNS rebinding); any loopback address is accepted too
    (127.0.0.2 is this machine, not a name an attacker controls); empty: any host (token required)."""
    reviewer: str = field(default_factory=lambda: os.environ.get("USER") or getpass.getuser() or "reviewer")
    progress: Callable[[str], None] | None = None
    """Told, line by line, what opening the app does (building the feature list's index); the CLI prints it."""
    hold_seconds: float = 1.0
    """How long the app keeps the database open after a request (0: a fresh connection per call), so that
    pages clicked through in a row read from a warm cache; a run writing the file waits out the hold."""


def is_loopback(host: str) -> bool:
    """True when `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def review_url(host: str, port: int, token: str | None = None) -> str:
    """Returns the URL to print for an app bound to `host`:`port` (a wildcard bind shows 127.0.0.1;
    an IPv6 address is bracketed)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?{urlencode({'token': token})}" if token else "")


def _number(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, bool):
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{number:.{digits}f}" if math.isfinite(number) else str(number)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is HTML-escaped; the one Markup filter (`shown`) escapes first
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=text.finalize,  # control and bidi characters become visible markers, in every value
    )
    env.filters["num"] = _number
    env.filters["when"] = lambda v: "" if v is None else f"{v:%Y-%m-%d %H:%M:%S}"
    env.filters["shown"] = text.reveal_html
    env.filters["clip"] = text.clip
    env.globals["score_text"] = score_text
    env.globals["chance_p"] = CHANCE_P
    return env


def _netloc(url: str) -> str | None:
    """Returns the host:port part of `url`; None when it does not parse (never equal to this site's)."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return None


def _safe_next(target: str | None, fallback: str) -> str:
    """Returns `target` when it is a path on this site (never another origin), else `fallback`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. "/[" parsed as an invalid IPv6 host
        return fallback
    if parts.scheme or parts.netloc:
        return fallback
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return fallback
    return target


def create_app(settings: ReviewSettings) -> FastAPI:
    """Returns the review app over one DuckDB file."""
    store = Store(settings.db)
    queries = ReviewQueries(store)
    if not settings.db.exists():
        raise AutointerpError(f"no database at {settings.db}; run `autointerp run` first or pass --db")
    store.migrate()
    queries.check_index(settings.progress)  # built before serving, so no page waits for it
    env = _environment()
    csrf_token = secrets.token_urlsafe(32)
    # one call at a time (DuckDB refuses mixed read-only/read-write handles on one file in one process)
    db = StoreAccess(store, idle_seconds=settings.hold_seconds)
    hidden_paths = sorted({str(settings.db), str(settings.db.resolve()), str(settings.db.absolute())}, key=len)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        db.release()

    app = FastAPI(title="autointerp review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store_access = db
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        html = env.get_template(name).render(csrf=csrf_token, reviewer=settings.reviewer, **values)
        return HTMLResponse(html, status_code=status_code)

    def error_page(message: str, status_code: int) -> HTMLResponse:
        for path in reversed(hidden_paths):  # never show where the database lives on disk
            message = message.replace(path, settings.db.name)
        return page("error.html", status_code=status_code, message=message)

    def host_allowed(host: str) -> bool:
        return not settings.allowed_hosts or host in settings.allowed_hosts or is_loopback(host)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = (request.url.hostname or "").strip("[]")
        if not host_allowed(host):
            return Response(f"host {host[:100]!r} not allowed", status_code=421, media_type="text/plain")
        if settings.token is not None:
            offered = request.query_params.get("token")
            if offered is not None and hmac.compare_digest(offered.encode(), settings.token.encode()):
                query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response: Response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
                response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
                return response
            header = request.headers.get("authorization", "")
            given = request.cookies.get(TOKEN_COOKIE) or (header[7:] if header.lower().startswith("bearer ") else "")
            if not hmac.compare_digest(given.encode(), settings.token.encode()):
                return Response(
                    "token required: open the URL printed by `autointerp review` (it carries ?token=...)",
                    status_code=401,
                    media_type="text/plain",
                )
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin and origin != "null" and _netloc(origin) != request.url.netloc:
                return Response("cross-origin request refused", status_code=403, media_type="text/plain")
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    for error, code in (
        (BadRequest, 400),
        (UnknownListScope, 400),
        (Forbidden, 403),
        (NotFound, 404),
        (UnknownExplanation, 404),
        (Conflict, 409),
        (ReviewConflict, 409),
    ):

        def handler(request: Request, exc: Exception, code: int = code) -> Response:
            return error_page(str(exc), code)

        app.add_exception_handler(error, handler)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return Response(str(exc), status_code=413, media_type="text/plain", headers={"Connection": "close"})

    @app.exception_handler(AutointerpError)
    async def store_error(request: Request, exc: AutointerpError) -> Response:
        return error_page(str(exc), 503)  # the database is locked or unreadable: try again later

    def check_csrf(form: dict[str, str]) -> None:
        if not hmac.compare_digest(form.get("csrf", "").encode(), csrf_token.encode()):
            raise Forbidden("the form is missing its CSRF token or it is stale; reload the page and retry")

    @app.get("/", response_class=HTMLResponse)
    def feature_list(request: Request) -> Response:
        params = dict(request.query_params)
        query = forms.list_query(params)
        listing = db(lambda: queries.feature_list(query))
        facets = db(queries.feature_facets)
        context = forms.list_context(params)
        pages = max(1, -(-listing.total // query.limit))
        current = query.offset // query.limit + 1
        batch = params.get("batch", "")
        if batch and not BATCH_PATTERN.fullmatch(batch):
            raise BadRequest("batch must be the id of a bulk action")
        bulk = db(lambda: queries.bulk_summary(batch)) if batch else None

        def link(**changes: Any) -> str:
            merged = {**context, **{k: str(v) for k, v in changes.items() if v is not None}}
            return "/?" + urlencode({k: v for k, v in merged.items() if v})

        first_unreviewed = next((r["feature_id"] for r in listing.rows if r["status"] == "unreviewed"), None)
        return page(
            "features.html",
            rows=listing.rows,
            total=listing.total,
            reviewable=listing.reviewable,
            stale=listing.stale,
            max_bulk=MAX_BULK,
            query=query,
            params=params,
            facets=facets,
            statuses=forms.STATUSES,
            sorts=list(FEATURE_SORTS),
            page=current,
            pages=pages,
            link=link,
            context=context,
            context_qs=urlencode(context),
            first_unreviewed=first_unreviewed,
            metric=query.metric,
            bulk=bulk,
            batch=batch,
        )

    @app.get("/feature", response_class=HTMLResponse)
    def feature_page(request: Request) -> Response:
        params = dict(request.query_params)
        feature_id = params.get("id", "")
        query = forms.list_query(params)
        if len(feature_id) > forms.MAX_PARAM_CHARS:
            raise BadRequest("feature id too long")
        record = db(lambda: queries.feature_record(feature_id))
        if not record["features"]:
            raise NotFound(f"no feature {text.clip(feature_id, 200)!r} in this database")
        neighbours = db(lambda: queries.feature_neighbours(query, feature_id))
        unread = db(lambda: queries.unread_tokens([f["run_id"] for f in record["features"]]))
        context = forms.list_context(params)
        view = feature_view(feature_id, record, query.metric, unread)
        return page("feature.html", **view, **_nav(neighbours, context))

    @app.post("/review")
    async def review(request: Request) -> Response:
        form = await forms.read_form(request)
        check_csrf(form)
        verdict = form.get("verdict", "")
        if verdict not in VERDICTS:
            raise BadRequest(f"verdict must be one of {', '.join(VERDICTS)}")
        explanation_id = form.get("explanation_id", "")
        if not explanation_id or len(explanation_id) > forms.MAX_PARAM_CHARS:
            raise BadRequest("the form names no explanation")
        edited = (  # the edit box rides along with a note; only an edit reads it
            forms.form_text(form, "edited_text", forms.MAX_EDIT_CHARS, "the edited explanation")
            if verdict == "edit"
            else None
        )
        note = forms.form_text(form, "note", forms.MAX_NOTE_CHARS, "the note")
        reviewer = forms.form_text(form, "reviewer", forms.MAX_REVIEWER_CHARS, "the reviewer name")
        if verdict == "edit" and not edited:
            raise BadRequest("an edit needs the new explanation text")
        if verdict == "note" and not note:
            raise BadRequest("a note needs some text")
        row = {
            "id": str(uuid.uuid4()),
            "explanation_id": explanation_id,
            "verdict": verdict,
            "edited_text": edited if verdict == "edit" else None,
            "reviewer": reviewer or settings.reviewer,
            "note": note,
            "created_at": now(),
        }
        await run_in_threadpool(db, lambda: queries.add_review(row))
        fallback = "/feature?" + urlencode({"id": form.get("feature_id", "")[: forms.MAX_PARAM_CHARS]})
        return RedirectResponse(_safe_next(form.get("next"), fallback), status_code=303)

    @app.post("/bulk")
    async def bulk(request: Request) -> Response:
        form = await forms.read_form(request)
        check_csrf(form)
        verdict = form.get("verdict", "")
        if verdict not in BULK_VERDICTS:
            raise BadRequest(f"a bulk action is one of {', '.join(BULK_VERDICTS)}")
        query = forms.list_query({k: form[k] for k in forms.LIST_PARAMS if k in form})
        expected = forms.whole(form, "expected", -1, 0, None)
        if expected < 0:
            raise BadRequest("the form lacks the number of features it showed (expected)")
        reviewer = forms.form_text(form, "reviewer", forms.MAX_REVIEWER_CHARS, "the reviewer name")
        batch = uuid.uuid4().hex

        def decide() -> list[dict[str, Any]]:
            """Reads the list and writes its rows in one store call: a second click (or tab) sent before the
            first one's rows were written sees them, so it writes nothing instead of a second batch."""
            targets = queries.bulk_targets(query, MAX_BULK + 1)
            if len(targets) > MAX_BULK:
                raise BadRequest(f"a bulk action reviews at most {MAX_BULK:,} features; narrow the filter")
            if expected != len(targets):
                raise Conflict(
                    f"the list changed since it was shown ({len(targets):,} features now, {expected:,} then); "
                    "reload it and retry"
                )
            when, status = now(), STATUS_OF_DECISION[verdict]
            rows = [
                {
                    "id": f"bulk-{batch}-{n}",
                    "explanation_id": t["explanation_id"],
                    "verdict": verdict,
                    "edited_text": None,
                    "reviewer": reviewer or settings.reviewer,
                    "note": None,
                    "created_at": when,
                }
                for n, t in enumerate(t for t in targets if t["status"] != status)
            ]
            queries.add_reviews(rows)
            return rows

        rows = await run_in_threadpool(db, decide)
        context = forms.list_context({k: form[k] for k in forms.LIST_PARAMS if k in form})
        return RedirectResponse("/?" + urlencode({**context, "batch": batch} if rows else context), status_code=303)

    @app.post("/bulk/undo")
    async def undo_bulk(request: Request) -> Response:
        form = await forms.read_form(request)
        check_csrf(form)
        batch = form.get("batch", "")
        if not BATCH_PATTERN.fullmatch(batch):
            raise BadRequest("batch must be the id of a bulk action")
        reviewer = forms.form_text(form, "reviewer", forms.MAX_REVIEWER_CHARS, "the reviewer name")

        def undo() -> None:
            if queries.bulk_summary(batch) is None:
                raise NotFound("no such bulk action in this database")
            queries.undo_bulk(batch, reviewer or settings.reviewer, now())

        await run_in_threadpool(db, undo)
        context = forms.list_context({k: form[k] for k in forms.LIST_PARAMS if k in form})
        return RedirectResponse("/?" + urlencode({**context, "batch": batch}), status_code=303)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page() -> Response:
        return page("runs.html", runs=db(store.run_progress))

    @app.get("/export")
    def export(request: Request) -> Response:
        format = request.query_params.get("format") or "jsonl"
        if format not in EXPORT_FORMATS:
            raise BadRequest(f"unknown export format {format[:20]!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        data = db(lambda: export_reviews(store, format))
        return Response(
            data,
            media_type=EXPORT_FORMATS[format],
            headers={"Content-Disposition": f'attachment; filename="reviews.{format}"'},
        )

    return app


def _nav(neighbours: dict[str, str | None], context: dict[str, str]) -> dict[str, Any]:
    def url(feature_id: str | None) -> str | None:
        return None if feature_id is None else "/feature?" + urlencode({"id": feature_id, **context})

    return {
        "prev_url": url(neighbours["prev"]),
        "next_url": url(neighbours["next"]),
        "next_unreviewed_url": url(neighbours["next_unreviewed"]),
        "list_url": "/?" + urlencode(context),
        "context": context,
    }
