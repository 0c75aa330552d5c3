"""What the review app accepts from a request: list parameters, POST bodies, and their limits.

Every value a client sends is checked here; anything out of range becomes a `BadRequest` (400),
`BodyTooLarge` (413) or `NotFound` (404) with a message the page shows, never a server error.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs

from fastapi import Request

from autointerp.errors import AutointerpError
from autointerp.metric_names import MAIN_METRIC
from autointerp.review.feature_list import CHANCE_FILTERS, FEATURE_SORTS, FeatureQuery
from autointerp.review.text import CONTROL_PATTERN, control_name

STATUSES = ("unreviewed", "accepted", "rejected", "edited")
LIST_PARAMS = (
    "run",
    "hook",
    "kind",
    "status",
    "q",
    "min",
    "max",
    "sort",
    "dir",
    "metric",
    "per",
    "disagree",
    "noted",
    "requested",
    "chance",
)
"""List parameters carried from page to page (filters and sort; not the page number)."""

MAX_PER_PAGE = 500
MAX_PAGE_NUMBER = 1_000_000
"""Pages beyond this are refused (the offset must fit DuckDB's 64-bit integer, and nobody pages that far)."""
MAX_PARAM_CHARS = 1_000
"""Longest accepted query parameter (a search, a run id, a metric name)."""
MAX_BODY_BYTES = 256 * 1024
"""Largest POST body read; a longer one is refused with 413 before it is parsed. It fits the longest
edit and note even when every character is non-ASCII (4 UTF-8 bytes, each sent as %XX)."""
MAX_FORM_FIELDS = 50
MAX_EDIT_CHARS = 10_000
"""Longest edited explanation a reviewer may save."""
MAX_NOTE_CHARS = 5_000
MAX_REVIEWER_CHARS = 100


class BadRequest(AutointerpError):
    """A request the app refuses, with the reason shown to the user (HTTP 400)."""


class NotFound(AutointerpError):
    """A request naming something the database does not hold (HTTP 404)."""


class Forbidden(AutointerpError):
    """A POST without the page's CSRF token (HTTP 403)."""


class Conflict(AutointerpError):
    """A bulk action whose list changed since the page showed it (HTTP 409)."""


class BodyTooLarge(AutointerpError):
    """A request body over MAX_BODY_BYTES (HTTP 413)."""


def _number(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {raw[:40]!r}") from None
    if math.isnan(value):
        raise BadRequest(f"{name} must be a number, not NaN")
    return value


def whole(params: dict[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    """Returns parameter `name` as a whole number in [lo, hi] (`default` when absent); raises BadRequest."""
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw[:40]!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"{name} must be between {lo} and {hi:,}" if hi is not None else f"{name} must be ≥ {lo}")
    return value


def _flag(params: dict[str, str], name: str) -> bool:
    raw = params.get(name, "").strip().lower()
    if raw in ("", "0", "no", "off", "false"):
        return False
    if raw in ("1", "yes", "on", "true"):
        return True
    raise BadRequest(f"{name} must be 1 or 0, not {raw[:40]!r}")


def list_query(params: dict[str, str]) -> FeatureQuery:
    """Returns the feature-list query named by URL parameters; raises BadRequest on a bad value."""
    for name, value in params.items():
        if len(value) > MAX_PARAM_CHARS:
            raise BadRequest(f"parameter {name[:40]!r} is longer than {MAX_PARAM_CHARS} characters")
    sort = params.get("sort") or "score"
    if sort not in FEATURE_SORTS:
        raise BadRequest(f"cannot sort by {sort[:40]!r}; choose one of {', '.join(FEATURE_SORTS)}")
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    direction = params.get("dir") or ("desc" if FEATURE_SORTS[sort].descending_first else "asc")
    if direction not in ("asc", "desc"):
        raise BadRequest("dir must be asc or desc")
    chance = params.get("chance") or None
    if chance is not None and chance not in CHANCE_FILTERS:
        raise BadRequest(f"chance must be one of {', '.join(CHANCE_FILTERS)}")
    disagree = _number(params, "disagree")
    if disagree is not None and not 0.0 <= disagree <= 1.0:
        raise BadRequest("disagree must be between 0 and 1")
    per = min(MAX_PER_PAGE, whole(params, "per", 50, 1, None))
    page = whole(params, "page", 1, 1, MAX_PAGE_NUMBER)
    return FeatureQuery(
        metric=params.get("metric") or MAIN_METRIC,
        run_id=params.get("run") or None,
        hook=params.get("hook") or None,
        kind=params.get("kind") or None,
        status=status,
        search=params.get("q") or None,
        min_score=_number(params, "min"),
        max_score=_number(params, "max"),
        min_disagreement=disagree,
        has_note=_flag(params, "noted"),
        experiments_requested=_flag(params, "requested"),
        chance=chance,
        sort=sort,
        descending=direction == "desc",
        limit=per,
        offset=(page - 1) * per,
        after=whole(params, "after", -1, 0, None) if params.get("after") else None,
        before=whole(params, "before", -1, 0, None) if params.get("after") is None and params.get("before") else None,
    )


def list_context(params: dict[str, str]) -> dict[str, str]:
    """Returns the list parameters worth carrying from page to page (filters and sort, not the page)."""
    return {k: params[k] for k in LIST_PARAMS if params.get(k)}


async def read_form(request: Request) -> dict[str, str]:
    """Returns a urlencoded POST body as field -> first value; raises BodyTooLarge past MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body over {MAX_BODY_BYTES // 1024} KiB")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"request body over {MAX_BODY_BYTES // 1024} KiB")
    try:  # bytes that are not UTF-8, raw or %-escaped, are refused: replaced, they were stored as U+FFFD
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the form is not UTF-8 text; send it from the review page") from None
    except ValueError:
        raise BadRequest(f"a form has at most {MAX_FORM_FIELDS} fields") from None
    return {k: v[0] for k, v in parsed.items()}


def form_text(form: dict[str, str], name: str, limit: int, label: str) -> str | None:
    """Returns a text field stripped (None when empty); raises BadRequest when it is too long or holds
    control characters a browser cannot send back unchanged (NUL, other C0/C1 controls)."""
    value = form.get(name, "").strip()
    if len(value) > limit:
        raise BadRequest(f"{label} is {len(value):,} characters; at most {limit:,} are kept")
    bad = next((c for c in value if c not in "\t\n\r" and CONTROL_PATTERN.match(c) and ord(c) < 0x100), None)
    if bad is not None:
        raise BadRequest(f"{label} holds a control character ({control_name(bad)}); remove it")
    return value or None
