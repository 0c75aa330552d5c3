"""The feature page's harder tests: each score on random (easy) and neighbour (hard) negatives side by side,
the distractor each was compared with, and the explanation-free intruder test."""

from __future__ import annotations

from typing import Any

from autointerp.metric_names import DISTRACTOR_SUFFIX, HARD_SUFFIX
from autointerp.review import views


def _details(score: dict[str, Any] | None) -> dict[str, Any]:
    loaded = views.loads(score["details"]) if score else None
    return loaded if isinstance(loaded, dict) else {}


def easy_and_hard(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns, per metric scored on hard negatives (`score.negatives`), `{"metric", "easy", "hard",
    "easy_distractor", "hard_distractor", "distractor_from"}` (a value None when not scored that way)."""
    by_metric = {s["metric"]: s for s in scores}
    rows = []
    for metric, score in sorted(by_metric.items()):
        if metric.endswith(DISTRACTOR_SUFFIX) or metric.endswith(HARD_SUFFIX):
            continue
        negatives = _details(score).get("negatives")
        hard = by_metric.get(metric + HARD_SUFFIX)
        if hard is None and negatives != "neighbour":
            continue
        easy_row, hard_row = (score, hard) if hard is not None else (None, score)
        suffix = HARD_SUFFIX if hard is not None else ""
        easy_chance = by_metric.get(metric + DISTRACTOR_SUFFIX) if easy_row is not None else None
        hard_chance = by_metric.get(metric + suffix + DISTRACTOR_SUFFIX)
        rows.append(
            {
                "metric": metric,
                "easy": easy_row["value"] if easy_row else None,
                "hard": hard_row["value"] if hard_row else None,
                "easy_distractor": easy_chance["value"] if easy_chance else None,
                "hard_distractor": hard_chance["value"] if hard_chance else None,
                "distractor_from": _details(hard_row).get("distractor_from", "random"),
                "undefined": _details(hard_row).get("undefined"),
            }
        )
    return rows


def intruder(rows: list[dict[str, Any]], run_id: str) -> dict[str, Any] | None:
    """Returns the feature's intruder test in `run_id` (`{"value", "low", "high", "chance", "p", "negatives",
    "answered", "undefined"}`); None when the run did not run it."""
    row = next((r for r in rows if r["run_id"] == run_id and r["metric"] == "intruder_accuracy"), None)
    if row is None:
        return None
    details = _details(row)
    low, high = details.get("interval") or (None, None)
    return {
        "value": row["value"],
        "low": low,
        "high": high,
        "chance": details.get("chance"),
        "p": details.get("p_vs_chance"),
        "negatives": details.get("negatives"),
        "answered": details.get("answered"),
        "undefined": details.get("undefined"),
    }
