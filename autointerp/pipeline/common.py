"""Helpers shared by the stages: feature ids, the subject model, what a run already holds."""

from __future__ import annotations

from autointerp.config import RunConfig
from autointerp.metric_names import MAIN_METRIC
from autointerp.records import Feature
from autointerp.store.database import Store
from autointerp.store.reads import CallKey
from autointerp.subject import SubjectModel, load_subject_model

__all__ = ["MAIN_METRIC", "attempted", "feature_id", "live_features", "load_subject", "needing_explanation"]


def feature_id(slug: str, layer: int, index: int) -> str:
    """Returns the stable feature id, e.g. `smollm2-135m/mlp.15/417`."""
    return f"{slug}/mlp.{layer}/{index}"


def load_subject(config: RunConfig) -> SubjectModel:
    """Returns the run's subject model (cached per process)."""
    return load_subject_model(config.subject.model, config.subject.device, config.subject.dtype)


def live_features(store: Store, run_id: str) -> list[Feature]:
    """Returns the run's features to explain and score: not dead, and not skipped for too few firing
    windows (`features.skip_reason`)."""
    return [f for f in store.features(run_id) if f.live]


def attempted(store: Store, run_id: str, role: str, key: CallKey) -> set[str]:
    """Returns feature or explanation ids (`key`) that already have a call of `role` in this run."""
    return store.ids_with_calls(run_id, role, key)


def needing_explanation(
    store: Store, run_id: str, features: list[Feature], explainer: str, prompt_hash: str
) -> list[Feature]:
    """Incremental runs: keeps the features that are new or whose latest explanation in another run
    came from a different explainer (`backend:model`) or prompt template."""
    current = store.current_explainers(exclude_run_id=run_id)
    return [f for f in features if current.get(f.id) != (explainer, prompt_hash)]
