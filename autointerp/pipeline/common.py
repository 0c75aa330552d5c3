"""Helpers shared by the stages: feature ids, the subject model, what a run already holds."""

from __future__ import annotations

from typing import Any

from autointerp.config import RunConfig
from autointerp.metric_names import MAIN_METRIC
from autointerp.store.database import Store
from autointerp.subject import SubjectModel, load_subject_model

__all__ = ["MAIN_METRIC", "attempted", "feature_id", "live_features", "load_subject", "needing_explanation"]


def feature_id(slug: str, layer: int, index: int) -> str:
    """Returns the stable feature id, e.g. `smollm2-135m/mlp.15/417`."""
    return f"{slug}/mlp.{layer}/{index}"


def load_subject(config: RunConfig) -> SubjectModel:
    """Returns the run's subject model (cached per process)."""
    return load_subject_model(config.subject.model, config.subject.device, config.subject.dtype)


def live_features(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Returns the run's features to explain and score: not dead, and not skipped for too few firing
    windows (`features.skip_reason`)."""
    return [f for f in store.features(run_id) if not f["dead"] and f.get("skip_reason") is None]


def attempted(store: Store, run_id: str, role: str, key: str) -> set[str]:
    """Returns feature or explanation ids that already have a call of `role` in this run."""
    rows = store.query(f"SELECT DISTINCT {key} FROM llm_calls WHERE run_id = ? AND role = ?", [run_id, role])
    return {r[key] for r in rows if r[key] is not None}


def needing_explanation(
    store: Store, run_id: str, features: list[dict[str, Any]], explainer: str, prompt_hash: str
) -> list[dict[str, Any]]:
    """Incremental runs: keeps the features that are new or whose latest explanation in another run
    came from a different explainer (`backend:model`) or prompt template."""
    current = store.current_explainers(exclude_run_id=run_id)
    return [f for f in features if current.get(f["id"]) != (explainer, prompt_hash)]
