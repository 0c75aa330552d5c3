"""Measuring a simulator the way the benchmark does: the truth against distractors on held-out windows."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from autointerp.bench import BenchSettings, pair_auroc, run_bench
from autointerp.score.registry import SimulationPrompt
from autointerp.subject.planted import PlantedFeature


@dataclass(frozen=True)
class SimulatorEvaluation:
    """A simulator's numbers on one set of features."""

    features: int
    """Features scored (those that fire on the benchmark windows)."""
    auroc: float | None
    """Share of (truth, distractor) pairs of the same feature where the truth scores higher."""
    truth_mean: float | None
    distractor_mean: float | None
    per_feature: dict[str, dict[str, float | None]]

    def summary(self) -> dict[str, float | int | None]:
        """Returns the headline numbers, rounded, for reports and adapter.json."""
        return {
            "features": self.features,
            "auroc_truth_vs_distractors": _round(self.auroc),
            "truth_mean": _round(self.truth_mean),
            "distractor_mean": _round(self.distractor_mean),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def evaluate_simulator(
    spec: str,
    features: Sequence[PlantedFeature],
    settings: BenchSettings | None = None,
    prompt: SimulationPrompt = "zero-shot",
) -> SimulatorEvaluation:
    """Returns simulation scores of each feature's description and of `settings.distractors` other
    features' descriptions on the feature's held-out windows: the planted benchmark run with `spec` as
    its only scorer and no explainer."""
    settings = replace(
        settings or BenchSettings(),
        scorer=spec,
        methods=["simulation"],
        simulation_prompts=[prompt],
        explainers=[],
        rounds=0,
    )
    [per_feature] = run_bench(list(features), settings).scores.values()
    auroc, _ = pair_auroc(per_feature, "truth")
    truth = [v.get("truth") for v in per_feature.values()]
    distractors = [x for v in per_feature.values() for k, x in v.items() if k.startswith("distractor:")]
    return SimulatorEvaluation(len(per_feature), auroc, _mean(truth), _mean(distractors), per_feature)
