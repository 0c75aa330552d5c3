"""Turning stored rows into what the feature page shows: shaded tokens, predictions, a histogram.

Stored data is not trusted to be well formed: activations may be NULL, NaN or infinite, a score's
details may not be the JSON the scorers write. Every function here returns something drawable
for any such input instead of raising.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from autointerp.activations import display_token

HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Token:
    """One token of a window: its text, the value shown on hover and its shading (0..1)."""

    text: str
    value: str
    alpha: float


def as_float(value: Any) -> float:
    """Returns `value` as a float; NaN for None or anything that is not a number."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def as_floats(values: Any) -> list[float]:
    """Returns a stored list of numbers as floats (NaN for a missing element); [] for None or a non-list."""
    if not isinstance(values, list | tuple):
        return []
    return [as_float(v) for v in values]


def finite_values(values: Iterable[float]) -> list[float]:
    """Returns the values that are real numbers (not NaN, not ±inf)."""
    return [v for v in values if math.isfinite(v)]


def _alpha(value: float, scale: float) -> float:
    if math.isnan(value):
        return 0.0
    return round(min(1.0, max(0.0, value / scale)), 3)


def _label(value: float, fmt: str) -> str:
    return fmt.format(value) if math.isfinite(value) else str(value)


def shade(tokens: Any, values: list[float], scale: float, fmt: str = "{:.3f}") -> list[Token]:
    """Returns the tokens with values shown as shading relative to `scale` (the feature's max)."""
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    texts = [display_token(t if isinstance(t, str) else str(t)) for t in (tokens if isinstance(tokens, list) else [])]
    return [Token(t, _label(v, fmt), _alpha(v, scale)) for t, v in zip(texts, values, strict=False)]


def not_read(shaded: list[Token], unread: int) -> list[Token]:
    """Returns the shaded tokens with the first `unread` titled "not read" and unshaded: the feature's source
    does not read them, so their stored 0 is no measurement."""
    unread = max(unread, 0)
    return [Token(t.text, "not read", 0.0) for t in shaded[:unread]] + shaded[unread:]


def loads(value: Any) -> Any:
    """Returns a JSON column decoded (DuckDB hands JSON back as text); None stays None."""
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return value


def pretty(value: Any, limit: int = 20_000) -> str:
    """Returns a JSON column pretty-printed for a <pre>, cut at `limit` characters."""
    decoded = loads(value)
    try:
        text = decoded if isinstance(decoded, str) else json.dumps(decoded, indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = str(decoded)
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


@dataclass
class Histogram:
    """An SVG histogram laid out in user units: bars, axis ticks with labels, and window-max marks."""

    width: int = 460
    height: int = 150
    left: int = 44
    right: int = 450
    top: int = 8
    bottom: int = 112
    bars: list[dict[str, Any]] = field(default_factory=list)
    x_ticks: list[dict[str, Any]] = field(default_factory=list)
    y_ticks: list[dict[str, Any]] = field(default_factory=list)
    maxima: list[dict[str, Any]] = field(default_factory=list)
    counted: int = 0
    """Values drawn (the finite ones)."""
    skipped: int = 0
    """Values left out because they are NaN, infinite or missing."""
    lo: float = 0.0
    hi: float = 0.0


def nice_step(span: float, target: float = 5) -> float:
    """Returns a round step (1, 2, 2.5 or 5 times a power of ten) giving about `target` ticks over `span`."""
    raw = span / target
    if not math.isfinite(raw) or raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    if magnitude <= 0 or not math.isfinite(magnitude):
        return 1.0
    return next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if raw <= m * magnitude * (1 + 1e-9))


def _tick_label(value: float, step: float) -> str:
    if value == 0 or (1e-4 <= step < 1e6 and abs(value) < 1e9):
        decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
        if step < 1 and step * 10**decimals % 1:
            decimals += 1  # 2.5 × 10^-k needs one more digit
        return f"{value:.{decimals}f}"
    return f"{value:.3g}"


def histogram(values: list[float], maxima: list[float] | None = None, bins: int = HISTOGRAM_BINS) -> Histogram:
    """Returns the histogram of the finite values over a round axis that starts at or below 0, with
    x ticks (activation) and y ticks (tokens); `maxima` (each window's max) are marked under the axis."""
    chart = Histogram()
    finite = finite_values(values)
    chart.skipped = len(values) - len(finite)
    chart.counted = len(finite)
    if not finite:
        return chart
    lo, hi = min(0.0, min(finite)), max(finite)
    step = nice_step(hi / 2 - lo / 2, 2.5) if hi > lo else 1.0  # ~5 ticks; halves keep a ±1e308 span finite
    lo = math.floor(lo / step) * step
    hi = max(lo + step, math.ceil(hi / step) * step)
    chart.lo, chart.hi = lo, hi
    half_span = hi / 2 - lo / 2
    plot_width = chart.right - chart.left
    plot_height = chart.bottom - chart.top

    def position(v: float) -> float:
        return min(1.0, max(0.0, (v / 2 - lo / 2) / half_span)) if half_span > 0 else 0.0

    counts = [0] * bins
    for v in finite:
        counts[min(bins - 1, int(position(v) * bins))] += 1
    most = max(counts)
    bar_width = plot_width / bins
    for i, c in enumerate(counts):
        height = plot_height * c / most
        start, end = lo + 2 * half_span * i / bins, lo + 2 * half_span * (i + 1) / bins
        chart.bars.append(
            {
                "x": round(chart.left + i * bar_width + 0.5, 2),
                "y": round(chart.bottom - height, 2),
                "width": round(bar_width - 1, 2),
                "height": round(height, 2),
                "label": f"{start:.4g} to {end:.4g}: {c} tokens",
            }
        )
    for k in range(64):
        tick = lo + k * step
        if tick > hi + step * 1e-6 or len(chart.x_ticks) > 12:
            break
        chart.x_ticks.append(
            {"x": round(chart.left + position(tick) * plot_width, 2), "label": _tick_label(tick, step)}
        )
    count_step = max(1, int(nice_step(most, 2)))
    counts_shown = list(range(0, most + 1, count_step))
    if counts_shown[-1] != most and (most - counts_shown[-1]) / most > 0.1:
        counts_shown.append(most)  # label the tallest bar unless a tick sits next to it
    for count in counts_shown:
        chart.y_ticks.append({"y": round(chart.bottom - plot_height * count / most, 2), "label": str(count)})
    for m in finite_values(maxima or []):
        chart.maxima.append({"x": round(chart.left + position(m) * plot_width, 2), "label": f"window max {m:.4g}"})
    return chart


def _window_numbers(window: dict[str, Any], key: str) -> list[float]:
    return as_floats(window.get(key))


def simulation_windows(score_details: dict[str, Any] | None, exemplars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns the held-out windows of a simulation score: tokens shaded by true level (the unread first tokens
    titled "not read") and by predicted level, and by the level predicted with no explanation (`prior`, None
    when the score did not subtract it)."""
    if not isinstance(score_details, dict):
        return []
    windows = score_details.get("windows")
    if not isinstance(windows, list):
        return []
    by_key = {(e["kind"], e["rank"]): e for e in exemplars}
    shown = []
    for window in windows:
        if not isinstance(window, dict):
            continue
        try:
            exemplar = by_key.get((window.get("kind"), window.get("rank")))
        except TypeError:  # an unhashable kind or rank
            continue
        if exemplar is None:
            continue
        tokens = exemplar["tokens"]
        true = shade(tokens, _window_numbers(window, "true"), 10.0, "{:.0f}")
        unread = window.get("unread")
        if isinstance(unread, int) and not isinstance(unread, bool):  # the sink's tokens: no level was read
            true = not_read(true, unread)
        shown.append(
            {
                "label": f"{window.get('kind')} #{window.get('rank')}",
                "true": true,
                "predicted": shade(tokens, _window_numbers(window, "predicted"), 10.0, "{:.2f}"),
                "prior": shade(tokens, _window_numbers(window, "prior"), 10.0, "{:.2f}") if "prior" in window else None,
            }
        )
    return shown


def chance_levels(scores: list[dict[str, Any]]) -> dict[str, float | None]:
    """Returns metric -> chance level: a `<metric>_distractor` score, or `distractor` in the details."""
    values = {s["metric"]: s["value"] for s in scores}
    chance: dict[str, float | None] = {}
    for score in scores:
        metric = score["metric"]
        if not isinstance(metric, str) or metric.endswith("_distractor"):
            continue
        details = loads(score.get("details"))
        if f"{metric}_distractor" in values:
            chance[metric] = values[f"{metric}_distractor"]
        elif isinstance(details, dict) and isinstance(details.get("distractor"), int | float):
            chance[metric] = float(details["distractor"])
    return chance


def score_note(score: dict[str, Any]) -> str:
    """Returns why a score row has no value (its own details' `undefined` reason), or "" when it has one."""
    value = score.get("value")
    if value is not None and math.isfinite(as_float(value)):
        return ""
    details = loads(score.get("details"))
    reason = details.get("undefined") if isinstance(details, dict) else None
    if isinstance(reason, str) and reason:
        return reason
    return "not a number" if value is not None else "undefined (no reason stored)"
