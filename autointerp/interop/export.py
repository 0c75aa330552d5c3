"""Exports of a run's explanations for other tools: Neuronpedia's explanation records and a plain JSONL.

Neuronpedia (its bulk exports and explanation API) names a feature by `modelId`, `layer` (the
source id, e.g. `15-res-jb`: the layer and a source-set name) and `index` (a string), and an
explanation by `description`, `explanationModelName` and `typeName` (the explanation method). One
record per explanation; our scores ride along in `scores` (`typeName` = metric, `value`,
`scorerModel`; distractor scores are left out) and the autointerp ids in `autointerp`.

The plain JSONL has one line per explanation: the text, who wrote it, every score by metric
(distractor metrics included, so a reader sees the chance level), the feature's statistics and its
exemplars (tokens and activations, both splits).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from autointerp.errors import AutointerpError
from autointerp.metric_names import DISTRACTOR_SUFFIX
from autointerp.store import Store

EXPORT_FORMATS = ("neuronpedia", "jsonl")

_SOURCE_SETS = {"neuron": "mlp", "sae": "res-autointerp", "transcoder": "transcoder-autointerp", "direction": "dir"}
"""Default Neuronpedia source-set names per stored feature kind."""


def layer_of(hook: str) -> int | None:
    """Returns the block number in a stored hook (`mlp.15`, `blocks.15.hook_resid_post`), or None (planted)."""
    match = re.search(r"\d+", hook)
    return int(match.group(0)) if match else None


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def _explanations_with_scores(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Returns the run's explanations (oldest first), each with `scores`: metric -> (value, scorer model)."""
    explanations = store.explanations(run_id)
    scores: dict[str, dict[str, tuple[float | None, str]]] = {}
    for row in store.query("SELECT explanation_id, metric, value, scorer_model FROM scores WHERE run_id = ?", [run_id]):
        scores.setdefault(row["explanation_id"], {})[row["metric"]] = (_number(row["value"]), row["scorer_model"])
    for explanation in explanations:
        explanation["scores"] = scores.get(explanation["id"], {})
    return explanations


def neuronpedia_records(
    store: Store, run_id: str, model_id: str | None = None, source_set: str | None = None
) -> list[dict[str, Any]]:
    """Returns one Neuronpedia explanation record per explanation of the run (see the module docstring).

    `model_id` defaults to the feature's model (e.g. `smollm2-135m`); `source_set` to one per kind
    (`mlp`, `res-autointerp`, ...), giving `layer` values such as `15-mlp`.
    """
    features = {f["id"]: f for f in store.features(run_id)}
    records = []
    for explanation in _explanations_with_scores(store, run_id):
        feature = features.get(explanation["feature_id"])
        if feature is None:
            continue
        layer = layer_of(str(feature["hook"]))
        source = source_set or _SOURCE_SETS.get(str(feature["kind"]), str(feature["kind"]))
        records.append(
            {
                "modelId": model_id or feature["model"],
                "layer": f"{layer}-{source}" if layer is not None else source,
                "index": str(feature["idx"]),
                "description": explanation["text"],
                "explanationModelName": explanation["explainer"],
                "typeName": f"autointerp-{explanation['prompt_hash'] or 'unknown'}"[:64],
                "scores": [
                    {"typeName": metric, "value": value, "scorerModel": scorer_model}
                    for metric, (value, scorer_model) in sorted(explanation["scores"].items())
                    if not metric.endswith(DISTRACTOR_SUFFIX)
                ],
                "autointerp": {
                    "run_id": run_id,
                    "feature_id": explanation["feature_id"],
                    "explanation_id": explanation["id"],
                    "iteration": explanation["iteration"],
                },
            }
        )
    return records


def jsonl_lines(store: Store, run_id: str) -> Iterator[str]:
    """Yields one JSON line per explanation: text, explainer, scores by metric, feature stats, exemplars."""
    features = {f["id"]: f for f in store.features(run_id)}
    exemplars = store.exemplars_by_feature(run_id, "explain")
    for feature_id, rows in store.exemplars_by_feature(run_id, "score").items():
        exemplars.setdefault(feature_id, []).extend(rows)
    for explanation in _explanations_with_scores(store, run_id):
        feature = features.get(explanation["feature_id"], {})
        line = {
            "run_id": run_id,
            "feature_id": explanation["feature_id"],
            "explanation_id": explanation["id"],
            "text": explanation["text"],
            "explainer": explanation["explainer"],
            "prompt_hash": explanation["prompt_hash"],
            "iteration": explanation["iteration"],
            "parent_id": explanation["parent_id"],
            "scores": {metric: value for metric, (value, _) in sorted(explanation["scores"].items())},
            "feature": {key: feature.get(key) for key in ("model", "hook", "kind", "idx", "dead")}
            | {key: _number(feature.get(key)) for key in ("density", "max_activation", "mean_activation")},
            "exemplars": [
                {
                    "kind": e["kind"],
                    "rank": e["rank"],
                    "split": e["split"],
                    "tokens": list(e["tokens"]),
                    "activations": [_number(a) for a in e["activations"]],
                    "max_activation": _number(e["max_activation"]),
                }
                for e in exemplars.get(explanation["feature_id"], [])
            ],
        }
        yield json.dumps(line, ensure_ascii=False)


def export_run(
    store: Store, run_id: str, fmt: str, model_id: str | None = None, source_set: str | None = None
) -> bytes:
    """Returns a run's explanations and scores as `fmt`: `neuronpedia` (a JSON array of explanation
    records) or `jsonl` (one line per explanation, with scores and exemplars)."""
    if fmt not in EXPORT_FORMATS:
        raise AutointerpError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "neuronpedia":
        records = neuronpedia_records(store, run_id, model_id, source_set)
        return (json.dumps(records, indent=1, ensure_ascii=False) + "\n").encode()
    return "".join(line + "\n" for line in jsonl_lines(store, run_id)).encode()
