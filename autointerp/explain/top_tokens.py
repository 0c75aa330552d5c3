"""An explanation with no model behind it: the tokens a feature fires on most strongly in the windows the
explainer saw, named as a list (`the words "some", "those" and "is"`).

A small explainer tends to name one of the marked tokens, or a pattern the excerpts do not show; a feature
that fires on a few tokens is often described better by the list itself. The explain stage weighs this
candidate against the explainer's on the explanation-split windows (`explainer.top_tokens_candidate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autointerp.activations import display_token, normalize_activations
from autointerp.records import stored_json

TOP_TOKENS_NAMED = 3
"""Tokens the list names: the strongest distinct ones."""
SOURCE = "top tokens"
"""How `details.best_of` names this candidate (the explainer's are `explainer`)."""
WRITER = "top-tokens"
"""Who wrote a kept list, where an export names an explanation's writer (the row's `explainer` is the stage's)."""


def kept_top_tokens(details: Any) -> bool:
    """Returns whether an explanation's `details` (a dict, or its JSON text) say the kept candidate is the list
    of the strongest tokens, not the explainer's answer."""
    details = stored_json(details)
    best_of = details.get("best_of") if isinstance(details, dict) else None
    if not isinstance(best_of, dict) or not isinstance(best_of.get("candidates"), list):
        return False
    chosen = best_of.get("chosen")
    candidates = best_of["candidates"]
    if not isinstance(chosen, int) or isinstance(chosen, bool) or not 0 <= chosen < len(candidates):
        return False
    kept = candidates[chosen]
    return isinstance(kept, dict) and kept.get("source") == SOURCE


def strongest_tokens(exemplars: Sequence[dict[str, Any]], max_activation: float, limit: int) -> list[str]:
    """Returns up to `limit` distinct tokens (as displayed, spaces stripped) by their highest level 0-10 in
    the windows, strongest first (equal levels: the first seen); only tokens that fire (level >= 1)."""
    best: dict[str, int] = {}
    for exemplar in exemplars:
        levels = normalize_activations(exemplar["activations"], max_activation)
        for token, level in zip(exemplar["tokens"], levels, strict=True):
            shown = display_token(token)
            key = shown.strip() or shown
            if level >= 1 and level > best.get(key, 0):
                best[key] = level
    ranked = sorted(best.items(), key=lambda item: -item[1])  # stable: equal levels keep first-seen order
    return [token for token, _ in ranked[:limit]]


def top_tokens_explanation(
    exemplars: Sequence[dict[str, Any]], max_activation: float, limit: int = TOP_TOKENS_NAMED
) -> str | None:
    """Returns `the words "a", "b" and "c"` (`the tokens ...` when one is not a word of letters or digits; a
    token holding `"` in single quotes) for the strongest tokens of `exemplars`, or None when no token fires."""
    tokens = strongest_tokens(exemplars, max_activation, limit)
    if not tokens:
        return None
    kind = "word" if all(t.isalnum() for t in tokens) else "token"
    quoted = [f"'{t}'" if '"' in t else f'"{t}"' for t in tokens]  # `'"__'`, not `""__"`
    if len(quoted) == 1:
        return f"the {kind} {quoted[0]}"
    return f"the {kind}s {', '.join(quoted[:-1])} and {quoted[-1]}"
