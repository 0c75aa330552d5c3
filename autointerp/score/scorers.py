"""One entry point for every scoring method: several candidate explanations, one feature's windows.

`score_candidates` scores the real explanation and its distractors (or, in the benchmark, the true
description and other features' descriptions) on the same held-out windows in one batched pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from autointerp.errors import ConfigError, LLMError
from autointerp.llm.base import ChatBackend
from autointerp.llm.calls import CallRecorder
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import load_prompt
from autointerp.score.detection import DETECTION_METRICS, DETECTION_SCORER, detection_scores
from autointerp.score.embedding import EMBEDDING_METRICS, EMBEDDING_MODEL, EMBEDDING_SCORER, embedding_scores
from autointerp.score.fuzzing import FUZZING_METRICS, FUZZING_SCORER, fuzzing_scores
from autointerp.score.metrics import pooled_correlation
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.simulation import record_all_at_once, simulate_generated, simulate_many
from autointerp.score.windows import HeldOutWindow, never_fires_reason

Method = Literal["simulation", "detection", "fuzzing", "embedding"]
SimulationMode = Literal["auto", "all-at-once", "generate"]

METHODS: tuple[Method, ...] = ("simulation", "detection", "fuzzing", "embedding")
SIMULATION_ALL_AT_ONCE = "simulation-all-at-once"
SIMULATION_GENERATED = "simulation-generated"
SIMULATION_METRICS = ("correlation_top_and_random", "correlation_all", "correlation_top", "correlation_random")

SCORERS_OF_METHOD: dict[str, tuple[str, ...]] = {
    "simulation": (SIMULATION_ALL_AT_ONCE, SIMULATION_GENERATED),
    "detection": (DETECTION_SCORER,),
    "fuzzing": (FUZZING_SCORER,),
    "embedding": (EMBEDDING_SCORER,),
}
"""The `scores.scorer` values each method writes."""

METRICS_OF_METHOD: dict[str, tuple[str, ...]] = {
    "simulation": SIMULATION_METRICS,
    "detection": DETECTION_METRICS,
    "fuzzing": FUZZING_METRICS,
    "embedding": EMBEDDING_METRICS,
}


def primary_value(method: str, outcome: ScoreOutcome) -> float | None:
    """Returns the one number that ranks explanations for a method (AUROC where a probability exists)."""
    order = {
        "simulation": ("correlation_all",),
        "detection": ("detection_auroc", "detection_balanced_accuracy"),
        "fuzzing": ("fuzzing_auroc", "fuzzing_balanced_accuracy"),
        "embedding": ("embedding_auroc",),
    }[method]
    for metric in order:
        if outcome.values.get(metric) is not None:
            return outcome.values[metric]
    return None


def _correlations(windows: list[HeldOutWindow], predicted: list[list[float] | None]) -> tuple[dict, dict]:
    values: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    subsets = {
        "correlation_top_and_random": lambda w: w.kind in ("top", "random"),
        "correlation_all": lambda w: True,
        "correlation_top": lambda w: w.kind == "top",
        "correlation_random": lambda w: w.kind == "random",
    }
    for metric, keep in subsets.items():
        chosen = [i for i, w in enumerate(windows) if keep(w)]
        scored = [i for i in chosen if predicted[i] is not None]
        value = pooled_correlation([windows[i].levels for i in scored], [predicted[i] or [] for i in scored])
        values[metric] = value
        if value is None:
            if not chosen:
                undefined[metric] = "no held-out windows of this kind"
            elif not scored:
                undefined[metric] = f"every simulation call for the {len(chosen)} windows failed"
            else:
                undefined[metric] = "true activations are constant on these windows"
    return values, undefined


def simulation_scores(
    backend: ChatBackend,
    explanations: list[str],
    windows: list[HeldOutWindow],
    *,
    recorder: CallRecorder,
    feature_id: str | None,
    explanation_ids: Sequence[str | None] | None = None,
    mode: SimulationMode = "auto",
    batch_size: int = 8,
) -> list[ScoreOutcome]:
    """Returns one outcome per explanation: pooled correlations on all, top-and-random, top and random windows."""
    ids = list(explanation_ids or [None] * len(explanations))
    all_at_once = mode == "all-at-once" or (mode == "auto" and isinstance(backend, LocalChatBackend))
    if all_at_once and not isinstance(backend, LocalChatBackend):
        raise LLMError(
            f"all-at-once simulation reads token probabilities and needs a local backend; the simulator is "
            f"{backend.name!r} (use local:<model>, or score.simulation = 'generate')"
        )
    never = never_fires_reason(windows)
    if never is not None:  # nothing to predict: flagged without spending a forward pass
        scorer = SIMULATION_ALL_AT_ONCE if all_at_once else SIMULATION_GENERATED
        return [undefined_outcome(scorer, backend.name, SIMULATION_METRICS, never) for _ in explanations]
    predictions: list[list[list[float] | None]] = []
    call_ids: list[list[str]] = []
    if isinstance(backend, LocalChatBackend) and all_at_once:
        template = load_prompt("simulate")
        started = time.perf_counter()
        items = [(e, w.tokens) for e in explanations for w in windows]
        flat, tokens = simulate_many(backend, template, items, batch_size)
        for k, (explanation, explanation_id) in enumerate(zip(explanations, ids, strict=True)):
            mine: list[list[float] | None] = list(flat[k * len(windows) : (k + 1) * len(windows)])
            predictions.append(mine)
            call_id = record_all_at_once(
                recorder,
                backend,
                template,
                explanation=explanation,
                predictions=[p or [] for p in mine],
                prompt_tokens=max(1, tokens // max(1, len(explanations))),
                started=started,
                feature_id=feature_id,
                explanation_id=explanation_id,
            )
            call_ids.append([call_id])
        scorer = SIMULATION_ALL_AT_ONCE
    else:
        template = load_prompt("simulate_generate")
        for explanation, explanation_id in zip(explanations, ids, strict=True):
            calls_before = len(recorder.rows)
            predictions.append(
                simulate_generated(
                    backend,
                    template,
                    explanation,
                    [w.tokens for w in windows],
                    recorder=recorder,
                    feature_id=feature_id,
                    explanation_id=explanation_id,
                )
            )
            call_ids.append([r["id"] for r in recorder.rows[calls_before:]])
        scorer = SIMULATION_GENERATED
    outcomes = []
    for k, predicted in enumerate(predictions):
        values, undefined = _correlations(windows, predicted)
        outcomes.append(
            ScoreOutcome(
                scorer=scorer,
                scorer_model=backend.name,
                values=values,
                undefined=undefined,
                details={
                    "windows": [
                        {
                            "kind": w.kind,
                            "rank": w.rank,
                            "true": w.levels,
                            "predicted": None if p is None else [round(v, 3) for v in p],
                        }
                        for w, p in zip(windows, predicted, strict=True)
                    ],
                    "failed": sum(p is None for p in predicted),
                },
                call_ids=call_ids[k],
            )
        )
    return outcomes


def score_candidates(
    method: str,
    explanations: list[str],
    windows: list[HeldOutWindow],
    *,
    backend: ChatBackend | None,
    recorder: CallRecorder,
    feature_id: str | None,
    explanation_ids: Sequence[str | None] | None = None,
    simulation_mode: SimulationMode = "auto",
    batch_size: int = 8,
) -> list[ScoreOutcome]:
    """Returns one outcome per explanation for `method`, all on the same held-out windows."""
    ids = list(explanation_ids or [None] * len(explanations))
    if method == "embedding":
        scores = embedding_scores(explanations, [w.text for w in windows], [w.activating for w in windows])
        never = never_fires_reason(windows)
        return [
            ScoreOutcome(
                scorer=EMBEDDING_SCORER,
                scorer_model=EMBEDDING_MODEL,
                values={"embedding_auroc": s.auroc},
                undefined={"embedding_auroc": never or s.undefined_reason or "undefined"} if s.auroc is None else {},
                details={
                    "windows": [
                        {"kind": w.kind, "rank": w.rank, "activating": w.activating, "similarity": round(sim, 4)}
                        for w, sim in zip(windows, s.similarities, strict=True)
                    ]
                },
            )
            for s in scores
        ]
    if backend is None:
        raise ConfigError(f"scoring method {method!r} needs a scorer model")
    if method == "simulation":
        return simulation_scores(
            backend,
            explanations,
            windows,
            recorder=recorder,
            feature_id=feature_id,
            explanation_ids=ids,
            mode=simulation_mode,
            batch_size=batch_size,
        )
    if method == "detection":
        return detection_scores(
            backend,
            load_prompt("detect"),
            explanations,
            windows,
            recorder=recorder,
            feature_id=feature_id,
            explanation_ids=ids,
            batch_size=batch_size,
        )
    if method == "fuzzing":
        return fuzzing_scores(
            backend,
            load_prompt("fuzz"),
            explanations,
            windows,
            recorder=recorder,
            feature_id=feature_id,
            explanation_ids=ids,
            batch_size=batch_size,
        )
    raise ConfigError(f"unknown scoring method {method!r}; choose from {', '.join(METHODS)}")
