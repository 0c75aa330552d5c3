"""The planted-feature benchmark's windows: each planted feature's activations on the corpus windows,
its explanation windows (top ranks) and held-out windows (top, spread, non-activating)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from autointerp.activations import ACTIVE_LEVEL, exact_density, normalize_activations
from autointerp.bench.settings import BenchSettings
from autointerp.corpus.sources import iter_windows
from autointerp.errors import ConfigError
from autointerp.score.windows import HeldOutWindow
from autointerp.subject import load_subject_model
from autointerp.subject.planted import PlantedFeature


@dataclass
class FeatureSet:
    """One planted feature's windows and statistics on the corpus."""

    feature: PlantedFeature
    density: float
    """Share of the corpus tokens read that fire (>= FIRES_FRACTION x max), exact: every activation is in memory."""
    max_activation: float
    explain: list[dict[str, Any]]
    """Explanation windows: tokens, token_ids, activations, rank."""
    heldout: list[HeldOutWindow]
    skipped: str | None = None
    quiet: list[dict[str, Any]] = field(default_factory=list)
    """Non-activating windows none of which is held out: the contrastive variant's candidates."""
    hard: list[HeldOutWindow] = field(default_factory=list)
    """Hard negatives (`settings.hard`): windows where a planted family neighbour fires and this feature does not."""
    sampled: list[HeldOutWindow] = field(default_factory=list)
    """Activating windows drawn at random from all of them (the intruder test's; `settings.hard`)."""


def build_feature_sets(features: list[PlantedFeature], settings: BenchSettings) -> tuple[list[FeatureSet], int]:
    """Returns each feature's explanation and held-out windows, and how many corpus windows were cut."""
    subject = load_subject_model(settings.subject, "cpu")
    cut = iter_windows(
        subject.tokenizer, settings.corpus, window_tokens=settings.window_tokens, max_windows=settings.max_windows
    )
    ids = [w.token_ids for w in cut]
    windows = [subject.decode_tokens(w) for w in ids]
    sets = [feature_set(f, windows, settings, ids) for f in features]
    if settings.hard or "intruder" in settings.methods:
        from autointerp.bench.hard import attach_hard_windows  # the harder tests' windows

        attach_hard_windows(sets, features, windows, settings)
    return sets, len(windows)


def feature_set(
    feature: PlantedFeature,
    windows: list[list[str]],
    settings: BenchSettings,
    token_ids: list[list[int]] | None = None,
    unread: int = 0,
) -> FeatureSet:
    """Returns one feature's windows: explanation windows at even top ranks, held-out ones around them. As in a
    run, a window's first `unread` tokens are not read: their activations are 0, no score counts them and the
    density is the share of the read tokens that fire."""
    activations = []
    for tokens in windows:
        acts = [float(a) for a in feature.activations(tokens)]
        if len(acts) != len(tokens) or any(a < 0 for a in acts):
            raise ConfigError(f"planted feature {feature.name!r} must return one activation >= 0 per token")
        skipped = min(unread, len(acts))
        activations.append([0.0] * skipped + acts[skipped:])
    max_activation = max((max(a) for a in activations if a), default=0.0)
    density = exact_density([a[unread:] for a in activations], max_activation)
    if max_activation <= 0:
        reason = f"never fires on the {len(windows)} corpus windows"
        return FeatureSet(feature, density, max_activation, [], [], skipped=reason)
    levels = [normalize_activations(a, max_activation) for a in activations]
    rng = random.Random(f"{settings.seed}:{feature.name}")
    keys = {i: rng.random() for i in range(len(windows))}
    active = sorted(
        (i for i, lv in enumerate(levels) if max(lv) >= ACTIVE_LEVEL),
        key=lambda i: (-max(activations[i]), -sum(activations[i]), keys[i]),
    )
    quiet = sorted((i for i, lv in enumerate(levels) if max(lv) < ACTIVE_LEVEL), key=lambda i: keys[i])
    explain = active[0 : 2 * settings.explain_windows : 2]
    top_n = (settings.heldout_active + 1) // 2
    top = active[1 : 2 * top_n : 2][:top_n]
    rest = [i for i in active if i not in set(explain) | set(top)]
    spread_n = min(settings.heldout_active - len(top), len(rest))
    spread = [rest[round(k * (len(rest) - 1) / max(spread_n - 1, 1))] for k in range(spread_n)] if spread_n else []
    negatives = quiet[: settings.heldout_quiet]
    contrast_pool = quiet[settings.heldout_quiet : settings.heldout_quiet + settings.contrast_pool]
    if not negatives:  # dense: every window fires somewhere; random windows it is, and scorers flag it
        used = set(explain) | set(top) | set(spread)
        negatives = sorted((i for i in range(len(windows)) if i not in used), key=lambda i: keys[i])
        negatives = negatives[: settings.heldout_quiet]
    picked = [("top", top), ("quantile", spread), ("random", negatives)]
    heldout = [
        HeldOutWindow(windows[i], levels[i], kind, r, unread=min(unread, len(windows[i])))
        for kind, chosen in picked
        for r, i in enumerate(chosen)
    ]
    return FeatureSet(
        feature,
        density,
        max_activation,
        [
            {
                "tokens": windows[i],
                "activations": activations[i],
                "token_ids": token_ids[i] if token_ids else [],
                "rank": rank,
            }
            for rank, i in enumerate(explain)
        ],
        heldout,
        quiet=[
            {"tokens": windows[i], "activations": activations[i], "kind": "random", "rank": rank}
            for rank, i in enumerate(contrast_pool)
        ],
    )
