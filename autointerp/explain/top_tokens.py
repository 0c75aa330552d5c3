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
from autointerp.config import ExplainerConfig, TokenRanking
from autointerp.records import stored_json

TOP_TOKENS_NAMED: int = ExplainerConfig.model_fields["top_tokens_named"].default
"""Tokens the list names by default (`explainer.top_tokens_named`)."""
TOP_TOKENS_RANK: TokenRanking = ExplainerConfig.model_fields["top_tokens_rank"].default
"""How the list ranks tokens by default (`explainer.top_tokens_rank`)."""
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


def strongest_tokens(
    exemplars: Sequence[dict[str, Any]],
    max_activation: float,
    limit: int,
    rank: TokenRanking = "strongest",
    unread: int = 0,
) -> list[str]:
    """Returns up to `limit` distinct tokens (as displayed, spaces stripped) that fire (level 0-10 >= 1) in the
    windows, the first `unread` tokens of each not read. `rank` "strongest": by their highest level; "recurring":
    by the windows they fire in times their mean level over every read occurrence, so a token that fires once,
    or that appears often without firing, falls behind one that fires wherever it appears. Ties: the highest
    level, then the first to fire."""
    best: dict[str, int] = {}
    windows: dict[str, int] = {}
    occurrences: dict[str, int] = {}
    level_sum: dict[str, int] = {}
    for exemplar in exemplars:
        levels = normalize_activations(exemplar["activations"], max_activation)
        fired_here: set[str] = set()
        for token, level in list(zip(exemplar["tokens"], levels, strict=True))[unread:]:
            shown = display_token(token)
            key = shown.strip() or shown
            occurrences[key] = occurrences.get(key, 0) + 1
            level_sum[key] = level_sum.get(key, 0) + level
            if level >= 1:
                best[key] = max(level, best.get(key, 0))
                fired_here.add(key)
        for key in fired_here:
            windows[key] = windows.get(key, 0) + 1

    def weight(token: str) -> float:
        if rank == "strongest":
            return best[token]
        return windows[token] * level_sum[token] / occurrences[token]

    ranked = sorted(best, key=lambda token: (-weight(token), -best[token]))  # stable: then the first to fire
    return ranked[:limit]


def quote_token(token: str) -> str:
    """Returns a token in double quotes; in single quotes when it holds `"` but not `'`; else in double quotes
    with its backslashes and `"` escaped."""
    if '"' not in token:
        return f'"{token}"'
    if "'" not in token:
        return f"'{token}'"  # `'"__'`, not `""__"`
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def top_tokens_explanation(
    exemplars: Sequence[dict[str, Any]],
    max_activation: float,
    limit: int = TOP_TOKENS_NAMED,
    rank: TokenRanking = TOP_TOKENS_RANK,
    unread: int = 0,
) -> str | None:
    """Returns `the words "a", "b" and "c"` (`the tokens ...` when one is not a word of letters or digits; each
    quoted by `quote_token`) for the first `limit` tokens of `exemplars` ranked by `strongest_tokens`, or None
    when no token fires."""
    tokens = strongest_tokens(exemplars, max_activation, limit, rank, unread)
    if not tokens:
        return None
    kind = "word" if all(t.isalnum() for t in tokens) else "token"
    quoted = [quote_token(t) for t in tokens]
    if len(quoted) == 1:
        return f"the {kind} {quoted[0]}"
    return f"the {kind}s {', '.join(quoted[:-1])} and {quoted[-1]}"
