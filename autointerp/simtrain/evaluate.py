"""Measuring a simulator the way the benchmark does: the truth against distractors on held-out windows."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.bench import BenchSettings, build_feature_sets, pair_auroc
from autointerp.config import LLMConfig
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.planted import PlantedFeature
from autointerp.progress import progress_bar
from autointerp.score.distractors import choose_distractors
from autointerp.score.registry import SimulationPrompt
from autointerp.score.scorers import primary_value, score_candidates


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
    label: str = "evaluate",
    prompt: SimulationPrompt = "zero-shot",
) -> SimulatorEvaluation:
    """Returns simulation scores of each feature's description and of `settings.distractors` other
    features' descriptions on the feature's held-out windows (as the planted benchmark cuts them)."""
    settings = settings or BenchSettings(methods=["simulation"], explainers=[], rounds=0)
    sets, _ = build_feature_sets(list(features), settings)
    live = [s for s in sets if s.skipped is None]
    descriptions = [(f.name, f.description) for f in features]
    backend = get_backend(spec)
    recorder = CallRecorder("simulator-eval", LLMSession.from_settings(LLMConfig(cache=False)))
    per_feature: dict[str, dict[str, float | None]] = {}
    with progress_bar(f"{label} {spec}", total=len(live), unit="features") as advance:
        for fs in live:
            labels, texts = ["truth"], [fs.feature.description]
            for name, text in choose_distractors(fs.feature.name, descriptions, settings.distractors):
                labels.append(f"distractor:{name}")
                texts.append(text)
            outcomes = score_candidates(
                "simulation",
                texts,
                fs.heldout,
                backend=backend,
                recorder=recorder,
                feature_id=fs.feature.name,
                batch_size=settings.batch_size,
                simulation_prompt=prompt,
            )
            recorder.take()
            per_feature[fs.feature.name] = {
                label: primary_value("simulation", o) for label, o in zip(labels, outcomes, strict=True)
            }
            advance(1)
    auroc, _ = pair_auroc(per_feature, "truth")
    truth = [v.get("truth") for v in per_feature.values()]
    distractors = [x for v in per_feature.values() for k, x in v.items() if k.startswith("distractor:")]
    return SimulatorEvaluation(len(live), auroc, _mean(truth), _mean(distractors), per_feature)
