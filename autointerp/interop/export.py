"""Exports of a run's explanations for other tools: Neuronpedia's shapes and a plain JSONL.

Neuronpedia (`neuronpedia` client 1.2.x and its upload API) names a feature by `modelId`, `source`
(e.g. `15-mlp`: the layer and a source-set name) and an integer `index`. The export is one JSON object:

- `explanations`: one record per explanation in the shape `Explanation.from_np_db_json` reads:
  `modelId`, `source` (also as `layer`, the older name in Neuronpedia's database exports), `index`,
  `description`, `typeName` (the method, `autointerp-<prompt hash>`) and `explanationModelName`; our
  scores ride along in `scores` as Neuronpedia's score rows (`explanationScoreTypeName` = metric,
  `explanationScoreModelName` = scorer model, `value`; distractor scores and scores without a value
  are left out), and the autointerp ids in `autointerp`.
- `uploads`: the bodies of Neuronpedia's batch upload (`POST /api/upload-batch`), one per
  (modelId, source) and at most 128 features each: `{modelId, source, features: [{index, density,
  activations: [{tokens, values}], explanations: [{text, methodName, modelName}]}]}`.

No value is null: a missing number drops its key (or its score row). The `-` pole of a signed feature
gets its own source (`<source>-neg`), as its activations are another feature's.

The plain JSONL has one line per explanation: the text, who wrote it, every score by metric
(distractor metrics included, so a reader sees the chance level), the feature's statistics, its
exemplars (tokens and activations, both splits) and its nearest features (`neighbours`: kind `cosine` or
`cooccurrence`, rank, the other feature's id, value, co-firing count, whether it is in the run), and
its output evidence (`output`, null when none is stored): the direct path's promoted and suppressed tokens
under Neuronpedia's feature field names (`pos_str` / `pos_values`, highest first; `neg_str` / `neg_values`,
most negative first), the next tokens steering raised and lowered (`steer_raised` / `steer_lowered`:
token, token_id, mean log-prob change) with `steer_scale` and `steer_prompts`, and `no_output_reason`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from autointerp.errors import AutointerpError
from autointerp.explain.top_tokens import WRITER, kept_top_tokens
from autointerp.metric_names import DISTRACTOR_SUFFIX
from autointerp.outputs.records import OutputEvidence, TokenEffect
from autointerp.records import Exemplar, Feature
from autointerp.store.database import Store

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
    for explanation_id, metric, value, scorer_model in store.score_values(run_id):
        scores.setdefault(explanation_id, {})[metric] = (_number(value), scorer_model)
    for explanation in explanations:
        explanation["scores"] = scores.get(explanation["id"], {})
    return explanations


NEURONPEDIA_BATCH = 128
"""The most features one Neuronpedia batch upload takes (`neuronpedia` client's MAX_FEATURES_PER_BATCH)."""


def _neuronpedia_source(feature: Feature, source_set: str | None) -> str:
    layer = layer_of(feature.hook)
    name = source_set or _SOURCE_SETS.get(feature.kind, feature.kind)
    source = f"{layer}-{name}" if layer is not None else name
    return f"{source}-neg" if feature.id.endswith("-") else source


def neuronpedia_records(
    store: Store, run_id: str, model_id: str | None = None, source_set: str | None = None
) -> list[dict[str, Any]]:
    """Returns one Neuronpedia explanation record per explanation of the run (see the module docstring).

    `model_id` defaults to the feature's model (e.g. `smollm2-135m`); `source_set` to one per kind
    (`mlp`, `res-autointerp`, ...), giving `source` values such as `15-mlp`.
    """
    features = {f.id: f for f in store.features(run_id)}
    records = []
    for explanation in _explanations_with_scores(store, run_id):
        feature = features.get(explanation["feature_id"])
        if feature is None:
            continue
        source = _neuronpedia_source(feature, source_set)
        records.append(
            {
                "modelId": model_id or str(feature.model),
                "source": source,
                "layer": source,
                "index": int(feature.idx),
                "description": explanation["text"],
                "typeName": f"autointerp-{explanation['prompt_hash'] or 'unknown'}"[:64],
                "explanationModelName": _writer(explanation),
                "scores": [
                    {
                        "explanationScoreTypeName": metric,
                        "explanationScoreModelName": scorer_model or "unknown",
                        "value": value,
                    }
                    for metric, (value, scorer_model) in sorted(explanation["scores"].items())
                    if value is not None and not metric.endswith(DISTRACTOR_SUFFIX)
                ],
                "autointerp": {
                    "run_id": run_id,
                    "feature_id": explanation["feature_id"],
                    "explanation_id": explanation["id"],
                    "iteration": int(explanation["iteration"] or 0),
                },
            }
        )
    return records


def neuronpedia_uploads(
    store: Store, run_id: str, records: list[dict[str, Any]], source_set: str | None = None
) -> list[dict[str, Any]]:
    """Returns the batch-upload bodies for the features that `records` explain (see the module docstring):
    density when known, the top and quantile exemplars (both splits) as activations, the explanations."""
    features = {f.id: f for f in store.features(run_id)}
    exemplars = _exemplars_of_both_splits(store, run_id)
    by_feature: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_feature.setdefault(record["autointerp"]["feature_id"], []).append(record)
    batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for feature_id, explained in by_feature.items():
        feature = features[feature_id]
        entry: dict[str, Any] = {"index": int(feature.idx)}
        density = _number(feature.density)
        if density is not None:
            entry["density"] = density
        entry["activations"] = [
            {"tokens": list(e.tokens), "values": [_number(a) or 0.0 for a in e.activations]}
            for e in exemplars.get(feature_id, [])
            if e.kind != "random" and e.tokens is not None and e.activations is not None
        ]
        entry["explanations"] = [
            {"text": r["description"], "methodName": r["typeName"], "modelName": r["explanationModelName"]}
            for r in explained
        ]
        batches.setdefault((explained[0]["modelId"], explained[0]["source"]), []).append(entry)
    return [
        {"modelId": model, "source": source, "features": entries[start : start + NEURONPEDIA_BATCH]}
        for (model, source), entries in sorted(batches.items())
        for start in range(0, len(entries), NEURONPEDIA_BATCH)
    ]


def neuronpedia_export(
    store: Store, run_id: str, model_id: str | None = None, source_set: str | None = None
) -> dict[str, Any]:
    """Returns the Neuronpedia export of a run: `{"explanations": [...], "uploads": [...]}`."""
    records = neuronpedia_records(store, run_id, model_id, source_set)
    return {"explanations": records, "uploads": neuronpedia_uploads(store, run_id, records, source_set)}


def _exemplars_of_both_splits(store: Store, run_id: str) -> dict[str, list[Exemplar]]:
    """Returns feature id -> its explanation-split exemplars, then its score-split ones."""
    exemplars = store.exemplars_by_feature(run_id, "explain")
    for feature_id, held_out in store.exemplars_by_feature(run_id, "score").items():
        exemplars.setdefault(feature_id, []).extend(held_out)
    return exemplars


def _feature_summary(feature: Feature | None) -> dict[str, Any]:
    """Returns a feature's model, hook, kind, index, dead flag and statistics (all None when it is unknown)."""
    names = ("model", "hook", "kind", "idx", "dead")
    numbers = ("density", "max_activation", "mean_activation")
    if feature is None:
        return dict.fromkeys(names + numbers)
    return {key: getattr(feature, key) for key in names} | {key: _number(getattr(feature, key)) for key in numbers}


def _writer(explanation: dict[str, Any]) -> str:
    """Returns who wrote an explanation: its explainer (`backend:model`), or `top-tokens` where the explain stage
    kept the list of the strongest tokens over the explainer's answer."""
    return WRITER if kept_top_tokens(explanation.get("details")) else str(explanation["explainer"] or "unknown")


def jsonl_lines(store: Store, run_id: str) -> Iterator[str]:
    """Yields one JSON line per explanation: text, explainer, scores by metric, feature stats, exemplars."""
    features = {f.id: f for f in store.features(run_id)}
    exemplars = _exemplars_of_both_splits(store, run_id)
    nearest = store.neighbours_by_feature(run_id)
    outputs = store.output_evidence_by_feature(run_id)
    for explanation in _explanations_with_scores(store, run_id):
        feature = features.get(explanation["feature_id"])
        line = {
            "run_id": run_id,
            "feature_id": explanation["feature_id"],
            "explanation_id": explanation["id"],
            "text": explanation["text"],
            "explainer": _writer(explanation),
            "prompt_hash": explanation["prompt_hash"],
            "iteration": explanation["iteration"],
            "parent_id": explanation["parent_id"],
            "scores": {metric: value for metric, (value, _) in sorted(explanation["scores"].items())},
            "feature": _feature_summary(feature),
            "exemplars": [
                {
                    "kind": e.kind,
                    "rank": e.rank,
                    "split": e.split,
                    "tokens": list(e.tokens),
                    "activations": [_number(a) for a in e.activations],
                    "max_activation": _number(e.max_activation),
                }
                for e in exemplars.get(explanation["feature_id"], [])
            ],
            "neighbours": [
                {
                    "kind": n.kind,
                    "rank": n.rank,
                    "other": n.other,
                    "value": _number(n.value),
                    "count": n.count,
                    "in_run": n.other_in_run,
                }
                for n in nearest.get(explanation["feature_id"], [])
            ],
            "output": _output_summary(outputs.get(explanation["feature_id"])),
        }
        yield json.dumps(line, ensure_ascii=False)


def _output_summary(evidence: OutputEvidence | None) -> dict[str, Any] | None:
    """Returns a feature's output evidence as the JSONL carries it (Neuronpedia's `pos_str` / `neg_str`
    field names for the direct path), or None when none is stored."""
    if evidence is None:
        return None

    def effects(items: tuple[TokenEffect, ...]) -> list[dict[str, Any]]:
        return [{"token": e.token, "token_id": e.token_id, "value": _number(e.value)} for e in items]

    return {
        "pos_str": [e.token for e in evidence.promoted],
        "pos_values": [_number(e.value) for e in evidence.promoted],
        "neg_str": [e.token for e in evidence.suppressed],
        "neg_values": [_number(e.value) for e in evidence.suppressed],
        "steer_raised": effects(evidence.steer_raised),
        "steer_lowered": effects(evidence.steer_lowered),
        "steer_scale": evidence.steer_scale,
        "steer_prompts": evidence.steer_prompts,
        "no_output_reason": evidence.no_output_reason,
    }


def export_run(
    store: Store, run_id: str, fmt: str, model_id: str | None = None, source_set: str | None = None
) -> bytes:
    """Returns a run's explanations and scores as `fmt`: `neuronpedia` (a JSON object of explanation
    records and batch-upload bodies) or `jsonl` (one line per explanation, with scores and exemplars)."""
    if fmt not in EXPORT_FORMATS:
        raise AutointerpError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "neuronpedia":
        export = neuronpedia_export(store, run_id, model_id, source_set)
        return (json.dumps(export, indent=1, ensure_ascii=False) + "\n").encode()
    return "".join(line + "\n" for line in jsonl_lines(store, run_id)).encode()
