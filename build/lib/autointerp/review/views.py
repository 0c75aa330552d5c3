"""Turning stored rows into what the feature page shows: shaded tokens, predictions, a histogram."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from autointerp.activations import display_token

HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Token:
    """One token of a window: its text, the value shown on hover and its shading (0..1)."""

    text: str
    value: str
    alpha: float


def shade(tokens: list[str], values: list[float], scale: float, fmt: str = "{:.3f}") -> list[Token]:
    """Returns the tokens with values shown as shading relative to `scale` (the feature's max)."""
    scale = scale if scale > 0 else 1.0
    return [
        Token(display_token(t), fmt.format(v), round(min(1.0, max(0.0, v / scale)), 3))
        for t, v in zip(tokens, values, strict=False)
    ]


def loads(value: Any) -> Any:
    """Returns a JSON column decoded (DuckDB hands JSON back as text); None stays None."""
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def pretty(value: Any, limit: int = 20_000) -> str:
    """Returns a JSON column pretty-printed for a <pre>, cut at `limit` characters."""
    decoded = loads(value)
    text = decoded if isinstance(decoded, str) else json.dumps(decoded, indent=2, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
    """Returns bars (x, height 0..1, label) of the values' histogram over [min(0, lo), hi]."""
    if not values:
        return []
    lo, hi = min(0.0, min(values)), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    top = max(counts)
    return [
        {
            "i": i,
            "height": c / top,
            "label": f"{lo + i * width:.2f} to {lo + (i + 1) * width:.2f}: {c} tokens",
        }
        for i, c in enumerate(counts)
    ]


def simulation_windows(score_details: dict[str, Any] | None, exemplars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns the held-out windows of a simulation score: tokens shaded by true and by predicted level."""
    if not score_details:
        return []
    by_key = {(e["kind"], e["rank"]): e for e in exemplars}
    shown = []
    for window in score_details.get("windows", []):
        exemplar = by_key.get((window.get("kind"), window.get("rank")))
        if exemplar is None:
            continue
        tokens = exemplar["tokens"]
        shown.append(
            {
                "label": f"{window['kind']} #{window['rank']}",
                "true": shade(tokens, [float(v) for v in window.get("true", [])], 10.0, "{:.0f}"),
                "predicted": shade(tokens, [float(v) for v in window.get("predicted", [])], 10.0, "{:.2f}"),
            }
        )
    return shown


def chance_levels(scores: list[dict[str, Any]]) -> dict[str, float | None]:
    """Returns metric -> chance level: a `<metric>_distractor` score, or `distractor` in the details."""
    values = {s["metric"]: s["value"] for s in scores}
    chance: dict[str, float | None] = {}
    for score in scores:
        metric = score["metric"]
        if metric.endswith("_distractor"):
            continue
        details = loads(score.get("details"))
        if f"{metric}_distractor" in values:
            chance[metric] = values[f"{metric}_distractor"]
        elif isinstance(details, dict) and isinstance(details.get("distractor"), int | float):
            chance[metric] = float(details["distractor"])
    return chance
