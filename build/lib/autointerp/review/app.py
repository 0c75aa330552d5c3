"""The review app's HTTP side: routes, the token and CSRF guards, and page rendering.

Every page is rendered on the server from Jinja2 templates with autoescaping on, so corpus
text and model output are always escaped. DuckDB access goes through `Store` (short
connections that wait out another process's lock), one at a time within this process.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import os
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from autointerp.errors import AutointerpError
from autointerp.metric_names import MAIN_METRIC
from autointerp.review import views
from autointerp.review.export import EXPORT_FORMATS, export_reviews
from autointerp.review.queries import FEATURE_SORTS, FeatureQuery, ReviewQueries
from autointerp.store import Store, now

HERE = Path(__file__).parent
VERDICTS = ("accept", "reject", "edit", "note", "request_experiments")
STATUSES = ("unreviewed", "accepted", "rejected", "edited")
LIST_PARAMS = ("run", "hook", "kind", "status", "q", "min", "max", "sort", "dir", "metric", "per")
MAX_PAGE = 500
TOKEN_COOKIE = "autointerp_token"
T = TypeVar("T")


@dataclass
class ReviewSettings:
    """How the app is served: the database, an access token (required off loopback), the hosts it answers."""

    db: Path
    token: str | None = None
    allowed_hosts: set[str] = field(default_factory=lambda: {"127.0.0.1", "localhost", "::1"})
    """Host header names accepted (guards against DNS rebinding); empty: any host (token required)."""
    reviewer: str = field(default_factory=lambda: os.environ.get("USER") or getpass.getuser() or "reviewer")


def is_loopback(host: str) -> bool:
    """True when `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BadRequest(AutointerpError):
    """A request the app refuses, with the reason shown to the user (HTTP 400)."""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is HTML-escaped unless a template says otherwise (none do)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, d=3: "—" if v is None else f"{v:.{d}f}"
    env.filters["when"] = lambda v: "" if v is None else f"{v:%Y-%m-%d %H:%M:%S}"
    return env


def _list_query(params: dict[str, str]) -> FeatureQuery:
    """Returns the feature-list query named by URL parameters; raises BadRequest on a bad value."""

    def number(name: str) -> float | None:
        raw = params.get(name, "").strip()
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            raise BadRequest(f"{name} must be a number, not {raw!r}") from None

    sort = params.get("sort") or "score"
    if sort not in FEATURE_SORTS:
        raise BadRequest(f"cannot sort by {sort!r}; choose one of {', '.join(FEATURE_SORTS)}")
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    try:
        per = min(MAX_PAGE, max(1, int(params.get("per") or 50)))
        page = max(1, int(params.get("page") or 1))
    except ValueError:
        raise BadRequest("page and per must be whole numbers") from None
    return FeatureQuery(
        metric=params.get("metric") or MAIN_METRIC,
        run_id=params.get("run") or None,
        hook=params.get("hook") or None,
        kind=params.get("kind") or None,
        status=status,
        search=params.get("q") or None,
        min_score=number("min"),
        max_score=number("max"),
        sort=sort,
        descending=(params.get("dir") or ("desc" if sort == "score" else "asc")) == "desc",
        limit=per,
        offset=(page - 1) * per,
    )


def _list_context(params: dict[str, str]) -> dict[str, str]:
    """Returns the list parameters worth carrying from page to page (filters and sort, not the page)."""
    return {k: params[k] for k in LIST_PARAMS if params.get(k)}


def _safe_next(target: str | None, fallback: str) -> str:
    """Returns `target` when it is a path on this site (never another origin), else `fallback`."""
    if not target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    return target


def create_app(settings: ReviewSettings) -> FastAPI:
    """Returns the review app over one DuckDB file."""
    store = Store(settings.db)
    queries = ReviewQueries(store)
    if not settings.db.exists():
        raise AutointerpError(f"no database at {settings.db}; run `autointerp run` first or pass --db")
    store.migrate()
    env = _environment()
    csrf_token = secrets.token_urlsafe(32)
    db_lock = threading.Lock()  # DuckDB refuses mixed read-only/read-write handles on one file in one process

    app = FastAPI(title="autointerp review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def db(fn: Callable[[], T]) -> T:
        with db_lock:
            return fn()

    def page(name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        html = env.get_template(name).render(csrf=csrf_token, reviewer=settings.reviewer, **values)
        return HTMLResponse(html, status_code=status_code)

    def error_page(message: str, status_code: int) -> HTMLResponse:
        return page("error.html", status_code=status_code, message=message)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = (request.url.hostname or "").strip("[]")
        if settings.allowed_hosts and host not in settings.allowed_hosts:
            return Response(f"host {host!r} not allowed", status_code=421, media_type="text/plain")
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
            if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
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

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return error_page(str(exc), 400)

    @app.exception_handler(AutointerpError)
    async def store_error(request: Request, exc: AutointerpError) -> Response:
        return error_page(str(exc), 503)

    @app.get("/", response_class=HTMLResponse)
    def feature_list(request: Request) -> Response:
        params = dict(request.query_params)
        query = _list_query(params)
        rows, total = db(lambda: queries.feature_list(query))
        facets = db(queries.feature_facets)
        context = _list_context(params)
        pages = max(1, -(-total // query.limit))
        current = query.offset // query.limit + 1

        def link(**changes: Any) -> str:
            merged = {**context, **{k: str(v) for k, v in changes.items() if v is not None}}
            return "/?" + urlencode({k: v for k, v in merged.items() if v})

        first_unreviewed = next((r["feature_id"] for r in rows if r["status"] == "unreviewed"), None)
        return page(
            "features.html",
            rows=rows,
            total=total,
            query=query,
            params=params,
            facets=facets,
            statuses=STATUSES,
            sorts=list(FEATURE_SORTS),
            page=current,
            pages=pages,
            link=link,
            context_qs=urlencode(context),
            first_unreviewed=first_unreviewed,
            metric=query.metric,
        )

    @app.get("/feature", response_class=HTMLResponse)
    def feature_page(request: Request) -> Response:
        params = dict(request.query_params)
        feature_id = params.get("id", "")
        query = _list_query(params)
        record = db(lambda: queries.feature_record(feature_id))
        if not record["features"]:
            return error_page(f"no feature {feature_id!r} in {settings.db}", 404)
        neighbours = db(lambda: queries.feature_neighbours(query, feature_id))
        context = _list_context(params)
        return page("feature.html", **_feature_view(feature_id, record, query.metric), **_nav(neighbours, context))

    @app.post("/review")
    async def review(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        if not hmac.compare_digest(form.get("csrf", "").encode(), csrf_token.encode()):
            return error_page("the form is missing its CSRF token or it is stale; reload the page and retry", 403)
        verdict = form.get("verdict", "")
        if verdict not in VERDICTS:
            raise BadRequest(f"verdict must be one of {', '.join(VERDICTS)}")
        edited = form.get("edited_text", "").strip() or None
        note = form.get("note", "").strip() or None
        if verdict == "edit" and not edited:
            raise BadRequest("an edit needs the new explanation text")
        if verdict == "note" and not note:
            raise BadRequest("a note needs some text")
        row = {
            "id": str(uuid.uuid4()),
            "explanation_id": form.get("explanation_id", ""),
            "verdict": verdict,
            "edited_text": edited if verdict == "edit" else None,
            "reviewer": (form.get("reviewer", "").strip() or settings.reviewer)[:100],
            "note": note,
            "created_at": now(),
        }
        await run_in_threadpool(db, lambda: queries.add_review(row))
        fallback = "/feature?" + urlencode({"id": form.get("feature_id", "")})
        return RedirectResponse(_safe_next(form.get("next"), fallback), status_code=303)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page() -> Response:
        return page("runs.html", runs=db(store.run_progress))

    @app.get("/export")
    def export(format: str = "jsonl") -> Response:
        if format not in EXPORT_FORMATS:
            raise BadRequest(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
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


def _feature_view(feature_id: str, record: dict[str, list[dict[str, Any]]], metric: str) -> dict[str, Any]:
    """Returns the template values of a feature page from everything stored about the feature."""
    explanations = record["explanations"]
    current = explanations[0] if explanations else None
    run_id = current["run_id"] if current else record["features"][0]["run_id"]
    feature = next((f for f in record["features"] if f["run_id"] == run_id), record["features"][0])
    exemplars = [e for e in record["exemplars"] if e["run_id"] == run_id]
    scale = float(feature["max_activation"] or 0.0)
    scores_by_explanation: dict[str, list[dict[str, Any]]] = {}
    for s in record["scores"]:
        scores_by_explanation.setdefault(s["explanation_id"], []).append(s)
    current_scores = scores_by_explanation.get(current["id"], []) if current else []
    simulation = next((s for s in current_scores if s["metric"] == metric), None) or next(
        (s for s in current_scores if isinstance(views.loads(s["details"]), dict)), None
    )
    details = views.loads(simulation["details"]) if simulation else None
    reviews_by_explanation: dict[str, list[dict[str, Any]]] = {}
    for r in record["reviews"]:
        reviews_by_explanation.setdefault(r["explanation_id"], []).append(r)
    status = "unreviewed"
    for r in reviews_by_explanation.get(current["id"], []) if current else []:
        if r["verdict"] in ("accept", "reject", "edit"):
            status = {"accept": "accepted", "reject": "rejected", "edit": "edited"}[r["verdict"]]
            break
    token_values = [float(a) for e in exemplars for a in e["activations"]]
    return {
        "feature_id": feature_id,
        "feature": feature,
        "runs": record["features"],
        "current": current,
        "status": status,
        "explanations": explanations,
        "scores_by_explanation": scores_by_explanation,
        "main_metric": metric,
        "current_scores": current_scores,
        "chance": views.chance_levels(current_scores),
        "score_details": details if isinstance(details, dict) else None,
        "exemplars": [
            {**e, "shaded": views.shade(e["tokens"], [float(a) for a in e["activations"]], scale)} for e in exemplars
        ],
        "simulated": views.simulation_windows(details if isinstance(details, dict) else None, exemplars),
        "histogram": views.histogram(token_values),
        "exemplar_maxima": sorted((float(e["max_activation"]) for e in exemplars), reverse=True),
        "hist_max": max(token_values, default=0.0),
        "experiments": [
            {
                **x,
                "spec_text": views.pretty(x["spec"]),
                "predicted_text": views.pretty(x["predicted"]),
                "measured_text": views.pretty(x["measured"]),
            }
            for x in record["experiments"]
        ],
        "llm_calls": [
            {**c, "request_text": views.pretty(c["request"]), "response_text": views.pretty(c["response"])}
            for c in record["llm_calls"]
        ],
        "reviews": record["reviews"],
    }
