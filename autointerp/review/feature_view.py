"""The feature page's values, built from everything stored about one feature (`ReviewQueries.feature_record`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from autointerp.review import harder, views
from autointerp.review.forms import MAX_EDIT_CHARS, MAX_NOTE_CHARS
from autointerp.review.queries import DECISIONS, STATUS_OF_DECISION
from autointerp.review.text import clip, has_controls, reveal_plain
from autointerp.score.confidence import metric_confidence, score_text

REVIEW_TEXT_CHARS = 200
"""Characters of an explanation quoted beside a review about it."""


_NEVER = datetime.min.replace(tzinfo=UTC)


def _when(row: dict[str, Any]) -> datetime:
    value = row.get("created_at")
    return value if isinstance(value, datetime) and value.tzinfo is not None else _NEVER


def _review_origin(review_id: str) -> str:
    if review_id.startswith("bulk-"):
        return "bulk action"
    if review_id.startswith("undo-"):
        return "undo of a bulk action"
    return ""


def _status(reviews: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """Returns the status set by the latest decision among `reviews` (newest first) and that review."""
    decision = next((r for r in reviews if r["verdict"] in DECISIONS), None)
    return (STATUS_OF_DECISION[decision["verdict"]], decision) if decision else ("unreviewed", None)


def _earlier_verdict(
    current: dict[str, Any] | None, explanations: list[dict[str, Any]], by_explanation: dict[str, list[dict[str, Any]]]
) -> dict[str, Any] | None:
    """Returns the latest verdict on an explanation older than the current one (what a re-explaining
    run made the status forget), with the explanation it was about; None when there is none."""
    if current is None:
        return None
    found: dict[str, Any] | None = None
    for explanation in explanations:
        if explanation["id"] == current["id"]:
            continue
        if _when(explanation) > _when(current):
            continue
        status, review = _status(by_explanation.get(explanation["id"], []))
        if review is None or status == "unreviewed":
            continue
        if found is None or _when(review) > _when(found["review"]):
            found = {"status": status, "review": review, "explanation": explanation}
    if found is not None:
        found["text"] = clip(found["explanation"]["text"], REVIEW_TEXT_CHARS)
    return found


def _headline(scores: list[dict[str, Any]], metric: str, distractor: float | None) -> dict[str, Any] | None:
    """Returns the headline score as `autointerp show` prints it (`0.62 ± 0.08 (distractor 0.05)`) with
    its stored confidence (None for older runs and other scorers); None when `metric` was not scored."""
    score = next((s for s in scores if s["metric"] == metric), None)
    if score is None:
        return None
    value = None if score["value"] is None else views.as_float(score["value"])
    confidence = metric_confidence(metric, score["details"], value)
    half_width = confidence.half_width if confidence else None
    return {"metric": metric, "text": score_text(value, half_width, distractor), "confidence": confidence}


def feature_view(
    feature_id: str, record: dict[str, list[dict[str, Any]]], metric: str, unread: dict[str, int] | None = None
) -> dict[str, Any]:
    """Returns the template values of a feature page from everything stored about the feature; `unread` (run
    id -> leading tokens of each window its features do not read) keeps those tokens out of the histogram and
    titles them "not read"."""
    explanations = record["explanations"]
    current = explanations[0] if explanations else None
    run_id = current["run_id"] if current else record["features"][0]["run_id"]
    feature = next((f for f in record["features"] if f["run_id"] == run_id), record["features"][0])
    exemplars = [e for e in record["exemplars"] if e["run_id"] == run_id]
    activations = {id(e): views.as_floats(e["activations"]) for e in exemplars}
    skipped = max((unread or {}).get(run_id, 0), 0)
    token_values = [a for e in exemplars for a in activations[id(e)][skipped:]]  # a stored 0 there is no reading
    finite = views.finite_values(token_values)
    stored_max = views.as_float(feature["max_activation"])
    scale = stored_max if math.isfinite(stored_max) and stored_max > 0 else max(finite, default=1.0)

    scores_by_explanation: dict[str, list[dict[str, Any]]] = {}
    for s in record["scores"]:
        scores_by_explanation.setdefault(s["explanation_id"], []).append(s)
    current_scores = scores_by_explanation.get(current["id"], []) if current else []
    simulation = next((s for s in current_scores if s["metric"] == metric), None) or next(
        (s for s in current_scores if isinstance(views.loads(s["details"]), dict)), None
    )
    chance = views.chance_levels(current_scores)
    details = views.loads(simulation["details"]) if simulation else None
    details = details if isinstance(details, dict) else None

    by_explanation: dict[str, list[dict[str, Any]]] = {}
    for r in record["reviews"]:
        by_explanation.setdefault(r["explanation_id"], []).append(r)
    status, _ = _status(by_explanation.get(current["id"], [])) if current else ("unreviewed", None)
    explanation_of = {e["id"]: e for e in explanations}
    edit_text = reveal_plain(current["text"] or "") if current else ""  # what the edit box starts from
    reviews = [
        {
            **r,
            "origin": _review_origin(str(r["id"])),
            "about": explanation_of.get(r["explanation_id"]),
            "about_current": current is not None and r["explanation_id"] == current["id"],
            "about_text": clip((explanation_of.get(r["explanation_id"]) or {}).get("text"), REVIEW_TEXT_CHARS),
        }
        for r in record["reviews"]
    ]
    return {
        "feature_id": feature_id,
        "feature": feature,
        "runs": record["features"],
        "current": current,
        "current_has_controls": bool(current and has_controls(current["text"])),
        "edit_text": edit_text[:MAX_EDIT_CHARS],
        "edit_clipped": len(edit_text) > MAX_EDIT_CHARS,
        "edit_max": MAX_EDIT_CHARS,
        "note_max": MAX_NOTE_CHARS,
        "status": status,
        "earlier": _earlier_verdict(current, explanations, by_explanation),
        "explanations": explanations,
        "scores_by_explanation": scores_by_explanation,
        "main_metric": metric,
        "current_scores": [
            {
                **s,
                "note": views.score_note(s),
                "confidence": metric_confidence(s["metric"], s["details"], s["value"]),
            }
            for s in current_scores
        ],
        "headline": _headline(current_scores, metric, chance.get(metric)),
        "chance": chance,
        "score_details": details,
        "exemplars": [
            {
                **e,
                "shaded": views.not_read(views.shade(e["tokens"], activations[id(e)], scale), skipped),
                "max": views.as_float(e["max_activation"]),
            }
            for e in exemplars
        ],
        "simulated": views.simulation_windows(details, exemplars),
        "histogram": views.histogram(token_values, [views.as_float(e["max_activation"]) for e in exemplars]),
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
        "reviews": reviews,
        "nearest": _nearest(record.get("nearest", []), run_id),
        "outputs": _outputs(record.get("outputs", []), run_id),
        "easy_hard": harder.easy_and_hard(current_scores),
        "intruder": harder.intruder(record.get("feature_scores", []), run_id),
    }


def _nearest(rows: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Returns the feature's neighbours in `run_id` by kind (`cosine`, then `cooccurrence`), each
    `{"kind", "label", "items": [{"other", "value", "count", "in_run"}]}`, nearest first."""
    labels = {"cosine": "write-direction cosine", "cooccurrence": "co-occurrence (Jaccard of firing windows)"}
    out = []
    for kind, label in labels.items():
        items = [
            {"other": r["other_id"], "value": r["value"], "count": r["count"], "in_run": r["other_in_run"]}
            for r in rows
            if r["run_id"] == run_id and r["kind"] == kind
        ]
        if items:
            out.append({"kind": kind, "label": label, "items": items})
    return out


def _visible(token: str) -> str:
    """Returns a token with its spaces and line breaks made visible (" Monday" -> "␣Monday")."""
    return token.replace(" ", "\u2423").replace("\n", "\u23ce").replace("\t", "\u21e5") or "\u2205"


def _outputs(rows: list[dict[str, Any]], run_id: str) -> dict[str, Any] | None:
    """Returns the feature's output evidence in `run_id` for the page: `reason` (why it has none) or
    `lists` [{"label", "items": [{"token", "value"}]}] (direct path, then steering); None when not stored."""
    from autointerp.store.outputs import evidence_from_row

    row = next((r for r in rows if r["run_id"] == run_id), None)
    if row is None:
        return None
    evidence = evidence_from_row(row)
    steering = f"steered at {evidence.steer_scale:g}x max on {evidence.steer_prompts} prompts"
    lists = [
        ("promoted (direct path, logit per unit)", evidence.promoted),
        ("suppressed (direct path)", evidence.suppressed),
        (f"raised next tokens ({steering}, mean log-prob change)", evidence.steer_raised),
        (f"lowered next tokens ({steering})", evidence.steer_lowered),
    ]
    return {
        "reason": evidence.no_output_reason,
        "lists": [
            {"label": label, "items": [{"token": _visible(e.token), "value": e.value} for e in items]}
            for label, items in lists
            if items
        ],
    }
