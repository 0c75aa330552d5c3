"""The benchmark's harder tests, on planted families and mixed planted features.

Hard negatives: for a planted feature with family neighbours (`autointerp.subject.planted_families`), held-out
windows where a neighbour fires and the feature does not. Each scorer scores the true description, the family's
vague description, the neighbour's description (a hard distractor) and a random other feature's description (an
easy distractor), once with random non-firing windows (easy) and once with the hard negatives (hard), on the same
activating windows. Intruder test: for every planted feature, k-1 activating windows drawn at random from all its
activating windows and one non-firing window per prompt; coherent features vs mixed ones (unions of two
unrelated features).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from autointerp.activations import ACTIVE_LEVEL, normalize_activations
from autointerp.bench.settings import BenchSettings
from autointerp.bench.windows import FeatureSet
from autointerp.config import ScoreConfig
from autointerp.llm import CallRecorder, ChatBackend
from autointerp.progress import progress_bar
from autointerp.score.distractors import choose_distractors
from autointerp.score.intruder import IntruderOptions, IntruderScorer
from autointerp.score.registry import SCORERS, ScoringContext
from autointerp.score.scorers import primary_value, score_candidates
from autointerp.score.windows import HeldOutWindow
from autointerp.subject.planted import PlantedFeature
from autointerp.subject.planted_families import planted_neighbours, vague_description

CANDIDATES = ("truth", "vague", "neighbour distractor", "random distractor")
"""The descriptions scored on easy and hard windows, in the report's order."""


@dataclass
class HardScores:
    """What the harder tests measured."""

    scores: dict[str, dict[str, dict[str, tuple[float | None, float | None]]]] = field(default_factory=dict)
    """method -> feature -> candidate (CANDIDATES) -> (easy value, hard value)."""
    intruder: dict[str, tuple[int, int]] = field(default_factory=dict)
    """feature -> (prompts the judge got right, prompts answered)."""
    intruder_skipped: dict[str, str] = field(default_factory=dict)
    """feature -> why it has no intruder score."""


def attach_hard_windows(
    sets: list[FeatureSet], features: list[PlantedFeature], windows: list[list[str]], settings: BenchSettings
) -> None:
    """Fills each live set's `hard` (up to `heldout_quiet` windows where a family neighbour fires and the feature
    does not; none of them held out or shown to the explainer) and `sampled` (activating windows drawn at random,
    for the intruder test)."""
    by_name = {f.name: f for f in features}
    fired: dict[str, list[bool]] = {}

    def firing(feature: PlantedFeature) -> list[bool]:
        if feature.name not in fired:
            acts = [[float(a) for a in feature.activations(w)] for w in windows]
            top = max((max(a) for a in acts if a), default=0.0)
            fired[feature.name] = [max(normalize_activations(a, top), default=0) >= ACTIVE_LEVEL for a in acts]
        return fired[feature.name]

    for fs in sets:
        if fs.skipped is not None:
            continue
        own = [[float(a) for a in fs.feature.activations(w)] for w in windows]
        levels = [normalize_activations(a, fs.max_activation) for a in own]
        rng = random.Random(f"{settings.seed}:hard:{fs.feature.name}")
        used = {tuple(w.tokens) for w in fs.heldout} | {tuple(e["tokens"]) for e in fs.explain}
        active = [i for i, lv in enumerate(levels) if max(lv, default=0) >= ACTIVE_LEVEL]
        rng.shuffle(active)
        fs.sampled = [HeldOutWindow(windows[i], levels[i], "sampled", r) for r, i in enumerate(active)]
        fs.sampled = fs.sampled[: settings.intruder_prompts * (settings.intruder_windows - 1)]
        neighbours = [by_name[n] for n in planted_neighbours(fs.feature.name) if n in by_name]
        if not neighbours:
            continue
        near = [firing(n) for n in neighbours]
        hard = [
            i
            for i in range(len(windows))
            if any(f[i] for f in near) and max(levels[i], default=0) < ACTIVE_LEVEL and tuple(windows[i]) not in used
        ]
        rng.shuffle(hard)
        fs.hard = [
            HeldOutWindow(windows[i], levels[i], "neighbour", r) for r, i in enumerate(hard[: settings.heldout_quiet])
        ]


def hard_candidates(fs: FeatureSet, features: list[PlantedFeature]) -> list[tuple[str, str]]:
    """Returns (candidate label, description) to score on a feature's easy and hard windows: its truth, its
    family's vague description, its neighbour's description and a random other feature's (deterministic)."""
    name = fs.feature.name
    vague = vague_description(name)
    neighbours = [f for f in features if f.name in planted_neighbours(name)]
    if vague is None or not neighbours:
        return []
    family = {name, *(f.name for f in neighbours)}
    others = [(f.name, f.description) for f in features if f.name not in family]
    chosen = choose_distractors(name, others, 1)
    result = [("truth", fs.feature.description), ("vague", vague), ("neighbour distractor", neighbours[0].description)]
    return result + [("random distractor", text) for _, text in chosen]


def score_hard(
    live: list[FeatureSet],
    features: list[PlantedFeature],
    settings: BenchSettings,
    scorer: Callable[[str], ChatBackend | None],
    recorder: CallRecorder,
) -> HardScores:
    """Returns the easy-vs-hard scores of every method on the features with hard negatives, and the intruder
    accuracy of every live feature; `scorer(method)` is the model that scores with a method."""
    result = HardScores()
    for method in settings.methods:
        if getattr(SCORERS.get(method), "explanation_free", False):
            continue
        options = SCORERS.get(method).options_type.from_config(_score_config(settings))
        per: dict[str, dict[str, tuple[float | None, float | None]]] = {}
        todo = [fs for fs in live if fs.hard and hard_candidates(fs, features)]
        with progress_bar(f"hard {method}", total=len(todo), unit="features") as advance:
            for fs in todo:
                candidates = hard_candidates(fs, features)
                texts = [text for _, text in candidates]
                active = [w for w in fs.heldout if w.activating]
                easy_windows = active + [w for w in fs.heldout if not w.activating]
                values: list[list[float | None]] = []
                for windows in (easy_windows, active + fs.hard):
                    outcomes = score_candidates(
                        method,
                        texts,
                        windows,
                        backend=scorer(method),
                        recorder=recorder,
                        feature_id=fs.feature.name,
                        options=options,
                    )
                    values.append([primary_value(method, o) for o in outcomes])
                    recorder.take()
                per[fs.feature.name] = {
                    label: (easy, hard) for (label, _), easy, hard in zip(candidates, values[0], values[1], strict=True)
                }
                advance(1)
        result.scores[method] = per
    intruder_model = scorer("intruder") if "intruder" in settings.methods else None
    if intruder_model is not None:
        intruder = IntruderScorer(
            IntruderOptions(windows_per_prompt=settings.intruder_windows, prompts=settings.intruder_prompts)
        )
        with progress_bar("intruder", total=len(live), unit="features") as advance:
            for fs in live:
                quiet = [w for w in fs.heldout if not w.activating] + [
                    HeldOutWindow(q["tokens"], [0] * len(q["tokens"]), "random", 100 + r)
                    for r, q in enumerate(fs.quiet)
                ]
                context = ScoringContext(
                    explanations=[],
                    windows=fs.sampled + quiet,
                    recorder=recorder,
                    backend=intruder_model,
                    feature_id=fs.feature.name,
                )
                outcome = intruder.score(context)[0]
                recorder.take()
                if outcome.values["intruder_accuracy"] is None:
                    result.intruder_skipped[fs.feature.name] = outcome.undefined["intruder_accuracy"]
                else:
                    result.intruder[fs.feature.name] = (outcome.details["correct"], outcome.details["answered"])
                advance(1)
    return result


def _score_config(settings: BenchSettings) -> ScoreConfig:
    """Returns the `score` section the benchmark's scorers read their options from."""
    return ScoreConfig(
        simulation_prompt=settings.simulation_prompts[0],
        batch_size=settings.batch_size,
        simulation_prior=settings.simulation_prior,
    )
