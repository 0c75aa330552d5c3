"""Training data both trainers share: corpus windows at several lengths, and the split of synthetic
family members into trained and held-out ones."""

from __future__ import annotations

import random
from collections.abc import Sequence

from autointerp.corpus.sources import iter_windows
from autointerp.simtrain.families import SyntheticFeature
from autointerp.subject.model import SubjectModel


def corpus_window_sets(
    subject: SubjectModel, corpus: str, window_sizes: Sequence[int], per_size: int
) -> list[list[list[str]]]:
    """Returns, per window length, up to `per_size` windows of `corpus` as decoded tokens."""
    sets = []
    for size in window_sizes:
        cut = iter_windows(subject.tokenizer, corpus, window_tokens=size, max_windows=per_size)
        sets.append([subject.decode_tokens(w.token_ids) for w in cut])
    return sets


def split_members(
    members: Sequence[SyntheticFeature], max_members: int | None = None, seed: int = 0
) -> tuple[list[SyntheticFeature], list[SyntheticFeature]]:
    """Returns (training members, held-out members); at most `max_members` training members, sampled."""
    train = [m for m in members if not m.held_out]
    heldout = [m for m in members if m.held_out]
    if max_members is not None:
        train = random.Random(seed).sample(train, min(max_members, len(train)))
    return train, heldout
