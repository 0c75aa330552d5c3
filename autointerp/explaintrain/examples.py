"""Training examples for an explainer: the explain stage's prompt rendered from a feature's windows, and
the description it should answer with.

From synthetic families (the simulator's, `simtrain.families`), each member gives a few prompts, each
showing a different sample of its firing windows (half its strongest, half spread over the rest, as a
run's top and quantile windows), with one of its phrasings as the answer (the canonical one most often).
Single-word members are many and alike, so they give fewer prompts than the other families.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autointerp.explain.explainer import explain_request
from autointerp.llm.base import ChatRequest
from autointerp.simtrain.examples import MemberActivations, member_activations
from autointerp.simtrain.families import SyntheticFeature

CANONICAL_SHARE = 0.6
"""Share of examples whose answer is the member's first (canonical) description."""


@dataclass(frozen=True)
class ExplainExample:
    """One explain prompt to learn: the windows shown (token and activation lists), the feature's max
    activation (what levels are relative to), and the answer."""

    exemplars: list[dict[str, Any]]
    max_activation: float
    description: str
    source: str
    """The family member (or `distill:<run>:<feature>`) the example comes from."""

    def request(self) -> ChatRequest:
        """Returns the request the explain stage sends for these windows (input evidence)."""
        return explain_request(self.exemplars, self.max_activation, max_tokens=24, temperature=0.0)


def _shown(acts: MemberActivations, firing: list[int], count: int, rng: random.Random) -> list[int]:
    """Returns `count` firing windows, strongest first: half from the top, half from the rest."""
    ranked = sorted(firing, key=lambda i: -max(acts.activations[i]))
    top = ranked[: max(1, count // 2)]
    rest = ranked[len(top) :]
    chosen = top + rng.sample(rest, min(count - len(top), len(rest)))
    return sorted(chosen, key=lambda i: -max(acts.activations[i]))


def build_explain_examples(
    members: Sequence[SyntheticFeature],
    window_sets: Sequence[Sequence[Sequence[str]]],
    *,
    per_member: int = 3,
    per_word_member: int = 1,
    shown: tuple[int, int] = (4, 8),
    seed: int = 0,
) -> list[ExplainExample]:
    """Returns explain examples for `members`, shuffled: per member and window set, `per_member` prompts
    (`per_word_member` for single-word members), each showing between `shown` firing windows. Members
    firing in fewer than 2 windows of a set give none there."""
    rng = random.Random(seed)
    examples: list[ExplainExample] = []
    for windows in window_sets:
        for member in members:
            acts = member_activations(member, windows)
            firing = [i for i in range(len(windows)) if acts.fires(i)]
            if len(firing) < 2:
                continue
            for _ in range(per_word_member if member.family == "word" else per_member):
                count = min(rng.randint(*shown), len(firing))
                exemplars = [
                    {"tokens": list(windows[i]), "activations": acts.activations[i]}
                    for i in _shown(acts, firing, count, rng)
                ]
                canonical = rng.random() < CANONICAL_SHARE or len(member.descriptions) == 1
                description = member.descriptions[0] if canonical else rng.choice(member.descriptions[1:])
                examples.append(ExplainExample(exemplars, acts.max_activation, description, member.name))
    rng.shuffle(examples)
    return examples
