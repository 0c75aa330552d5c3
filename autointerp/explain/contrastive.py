"""Contrastive explaining (as delphi's contrastive explainer): windows where the feature does not fire,
chosen for looking like the ones where it does, shown to the explainer as counter-examples.

Only explanation-split windows are used (the ones the explainer may see); held-out score windows never
are. A window is non-activating when no token reaches level 1 of 0-10. Candidates are ranked by the
share of the activating windows' peak tokens they contain, then by how many of the activating windows'
tokens they share, then by kind and rank (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autointerp.activations import display_token, normalize_activations
from autointerp.score.windows import ACTIVE_LEVEL


@dataclass(frozen=True)
class Contrast:
    """The non-activating windows shown to the explainer, most similar first."""

    windows: list[dict[str, Any]]
    """Exemplar dicts (tokens, activations, ...), at most `wanted`."""
    wanted: int
    """How many were asked for; fewer are shown when fewer exist (the prompt says so)."""


def explain_split(exemplars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Returns the exemplars of the explanation split (a dict without `split` counts as one)."""
    return [e for e in exemplars if e.get("split", "explain") == "explain"]


def activates(exemplar: dict[str, Any], max_activation: float) -> bool:
    """Returns whether some token of the window reaches ACTIVE_LEVEL (normalised 0-10)."""
    return max(normalize_activations(exemplar["activations"], max_activation), default=0) >= ACTIVE_LEVEL


def _word(token: str) -> str:
    return display_token(token).strip().lower()


def peak_tokens(activating: list[dict[str, Any]]) -> set[str]:
    """Returns the words at each activating window's strongest activation (ties: all of them)."""
    peaks: set[str] = set()
    for exemplar in activating:
        top = max(exemplar["activations"], default=0.0)
        peaks |= {_word(t) for t, a in zip(exemplar["tokens"], exemplar["activations"], strict=True) if a == top}
    return peaks - {""}


def similarity(window: dict[str, Any], peaks: set[str], vocabulary: set[str]) -> tuple[float, int]:
    """Returns (share of `peaks` the window contains, how many of its distinct words are in `vocabulary`)."""
    words = {_word(t) for t in window["tokens"]} - {""}
    share = len(words & peaks) / len(peaks) if peaks else 0.0
    return share, len(words & vocabulary)


def split_for_contrast(
    exemplars: list[dict[str, Any]], max_activation: float, wanted: int
) -> tuple[list[dict[str, Any]], Contrast]:
    """Returns (the explanation-split windows that activate, up to `wanted` explanation-split windows that
    do not, most similar to the activating ones first)."""
    mine = explain_split(exemplars)
    activating = [e for e in mine if activates(e, max_activation)]
    quiet = [e for e in mine if not activates(e, max_activation)]
    if not activating:  # nothing fires at level 1: show the windows as they are, no contrast
        return mine, Contrast([], wanted)
    peaks = peak_tokens(activating)
    vocabulary = {_word(t) for e in activating for t in e["tokens"]} - {""}
    ranked = sorted(
        quiet,
        key=lambda e: (
            *(-x for x in similarity(e, peaks, vocabulary)),
            str(e.get("kind", "")),
            int(e.get("rank", 0)),
        ),
    )
    return activating, Contrast(ranked[:wanted], wanted)
