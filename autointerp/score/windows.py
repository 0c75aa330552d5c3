"""Held-out windows as the scorers see them: tokens, true levels 0-10, and why each was kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from autointerp.activations import ACTIVE_LEVEL as ACTIVE_LEVEL  # re-exported: the level at which a token fires
from autointerp.activations import display_token, normalize_activations

T = TypeVar("T")

NON_FIRING_KINDS = ("random", "neighbour")
"""Kinds of held-out window kept because the feature does not fire there: random windows, and hard negatives
(a neighbour's top window, `score.negatives`); simulation's "random" part is either."""


@dataclass(frozen=True)
class HeldOutWindow:
    """One held-out window of one feature."""

    tokens: list[str]
    """The window's tokens as decoded strings."""
    levels: list[int]
    """True activation per token, normalised to 0-10 (Bills et al. 2023)."""
    kind: str
    """Why it was kept: `top`, `quantile-k`, `random`, `neighbour` (a hard negative; or `negative` in the benchmark)."""
    rank: int = 0
    """Rank within its kind."""
    raw: list[float] | None = None
    """True activation per token before normalising (for `ev_correlation_score`); None when unknown."""
    unread: int = 0
    """Leading tokens whose activation the feature's source does not read (`features.skip_first_tokens`):
    their level is 0 but not a measured 0, so a simulator sees them and its correlation leaves them out."""

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.levels):
            raise ValueError(f"window has {len(self.tokens)} tokens but {len(self.levels)} levels")
        if not 0 <= self.unread <= len(self.tokens):
            raise ValueError(f"window of {len(self.tokens)} tokens cannot leave {self.unread} unread")

    @classmethod
    def measured(
        cls,
        tokens: Sequence[str],
        activations: Sequence[float],
        max_activation: float,
        kind: str,
        rank: int = 0,
        unread: int = 0,
    ) -> HeldOutWindow:
        """Returns a stored window as a scoring window: levels 0-10 of `max_activation`, the raw activations
        kept, and its first `unread` tokens (at most all of them) marked as not read."""
        return cls(
            tokens=list(tokens),
            levels=normalize_activations(activations, max_activation),
            kind=kind,
            rank=rank,
            raw=[float(a) for a in activations],
            unread=min(unread, len(tokens)),
        )

    @property
    def activating(self) -> bool:
        """True when some token fires (reaches ACTIVE_LEVEL, 10% of the feature's max)."""
        return max(self.levels, default=0) >= ACTIVE_LEVEL

    @property
    def text(self) -> str:
        """The window's text as it reads."""
        return "".join(self.tokens)


def marked(tokens: list[str], marks: list[bool]) -> str:
    """Returns the text with marked tokens wrapped in << >> (newlines and tabs made visible)."""
    return "".join(f"<<{display_token(t)}>>" if m else display_token(t) for t, m in zip(tokens, marks, strict=True))


def read_part(values: Sequence[T], unread: int) -> Sequence[T]:
    """Returns the values of the tokens a window's source read: all but the first `unread`."""
    return values[unread:]


def never_fires_reason(windows: list[HeldOutWindow]) -> str | None:
    """Returns why nothing can be scored when no held-out window activates, else None."""
    if not windows:
        return "no held-out windows"
    if not any(w.activating for w in windows):
        return f"the feature never fires on its {len(windows)} held-out windows"
    return None


def beyond_prior(predicted: list[float] | None, prior: list[float] | None) -> list[float] | None:
    """Returns what a simulation is scored on: its prediction minus the simulator's prediction under a
    description that says nothing (`prior`; None: nothing to subtract), token by token; None when the
    prediction is missing or the two disagree in length (a failed call)."""
    if predicted is None or prior is None:
        return predicted
    if len(prior) != len(predicted):
        return None
    return [p - q for p, q in zip(predicted, prior, strict=True)]


def scored_prediction(window: dict[str, Any]) -> list[float] | None:
    """Returns the prediction a stored simulation window (`details.windows[i]`) was scored on: `predicted`,
    less `prior` where the window has one (None where either call failed)."""
    predicted = window.get("predicted")
    if "prior" in window and window["prior"] is None:
        return None
    return beyond_prior(predicted, window.get("prior"))
