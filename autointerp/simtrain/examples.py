"""Training examples for a simulator: a description, a window's tokens and the true levels 0-10.

From synthetic families, each member gives windows where it fires, windows where it does not, and
"cross" examples (another member's description on this member's firing window, with that other
member's true levels), so the simulator learns to predict 0 when a description does not match.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.activations import normalize_activations
from autointerp.simtrain.families import SyntheticFeature


@dataclass(frozen=True)
class SimExample:
    """One simulation prompt to learn: the description and the true level of every window token."""

    description: str
    tokens: list[str]
    levels: list[int]
    source: str
    """The family member (or `distill:<run>`) the example comes from."""


@dataclass
class MemberActivations:
    """One member's raw activations on every window of one window set, and its max there."""

    member: SyntheticFeature
    activations: list[list[float]]
    max_activation: float

    def levels(self, index: int) -> list[int]:
        """Returns the normalised levels 0-10 of window `index`."""
        return normalize_activations(self.activations[index], self.max_activation)

    def fires(self, index: int) -> bool:
        """Returns whether some token of window `index` reaches level 1."""
        return max(self.levels(index), default=0) >= 1


def member_activations(member: SyntheticFeature, windows: Sequence[Sequence[str]]) -> MemberActivations:
    """Returns the member's activations on `windows` (negative values are clipped to 0)."""
    activations = [[max(0.0, float(a)) for a in member.activations(list(tokens))] for tokens in windows]
    top = max((max(a) for a in activations if a), default=0.0)
    return MemberActivations(member, activations, top)


def build_examples(
    members: Sequence[SyntheticFeature],
    window_sets: Sequence[Sequence[Sequence[str]]],
    *,
    active_per_member: int = 4,
    quiet_per_member: int = 2,
    cross_per_member: int = 2,
    seed: int = 0,
) -> list[SimExample]:
    """Returns examples for `members`, shuffled: per member and window set, firing windows, quiet windows
    and cross examples (another member's description on a firing window). Members that never fire on a
    window set give none there."""
    rng = random.Random(seed)
    examples: list[SimExample] = []
    for windows in window_sets:
        table = [member_activations(m, windows) for m in members]
        live = [t for t in table if t.max_activation > 0]
        for acts in live:
            firing = [i for i in range(len(windows)) if acts.fires(i)]
            quiet = [i for i in range(len(windows)) if not acts.fires(i)]
            chosen = rng.sample(firing, min(active_per_member, len(firing)))
            chosen += rng.sample(quiet, min(quiet_per_member, len(quiet)))
            for index in chosen:
                examples.append(_example(acts, index, windows, rng))
            for index in rng.sample(firing, min(cross_per_member, len(firing))):
                other = rng.choice([t for t in live if t is not acts])
                examples.append(_example(other, index, windows, rng))
    rng.shuffle(examples)
    return examples


def _example(acts: MemberActivations, index: int, windows: Sequence[Sequence[str]], rng: random.Random) -> SimExample:
    return SimExample(
        description=rng.choice(acts.member.descriptions),
        tokens=list(windows[index]),
        levels=acts.levels(index),
        source=acts.member.name,
    )
