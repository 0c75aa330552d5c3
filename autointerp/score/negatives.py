"""Hard negatives and hard distractors from a feature's neighbours (`autointerp.neighbours`).

A hard negative of feature F is a top window of one of F's neighbours on which F itself stays below the
firing line (`activations.FIRES_FRACTION` of F's max). They are computed once per run with the feature
source, all windows batched through the subject model, and stored as F's exemplars of kind `neighbour`
(split `score`). `score.negatives` then picks which non-firing windows the scorers see: `random`, `neighbour`
or `both` (two passes: plain metrics on random windows, `<metric>_hard` on neighbour windows). A hard
distractor is the explanation of F's nearest explained neighbour (`score.distractor_from = "neighbour"`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import torch

from autointerp.activations import fires_threshold
from autointerp.config import RunConfig
from autointerp.metric_names import HARD_SUFFIX
from autointerp.neighbours.records import Neighbour
from autointerp.records import Exemplar
from autointerp.score.intruder import NEIGHBOUR_KIND
from autointerp.score.windows import HeldOutWindow
from autointerp.store.database import Store

log = logging.getLogger(__name__)

WindowPass = tuple[str, list[HeldOutWindow], str]
"""(metric suffix, windows, which negatives: random | neighbour) of one scoring pass."""


def window_passes(windows: list[HeldOutWindow], negatives: str) -> list[WindowPass]:
    """Returns the scoring passes `score.negatives` asks for over a feature's held-out windows: random
    negatives (plain metrics), neighbour negatives (plain metrics), or both (plain and `_hard`)."""
    easy = [w for w in windows if w.kind != NEIGHBOUR_KIND]
    hard = [w for w in windows if w.activating or w.kind == NEIGHBOUR_KIND]
    if negatives == "random":
        return [("", easy, "random")]
    if negatives == "neighbour":
        return [("", hard, "neighbour")]
    return [("", easy, "random"), (HARD_SUFFIX, hard, "neighbour")]


def ordered_neighbours(neighbours: Sequence[Neighbour]) -> list[Neighbour]:
    """Returns neighbours nearest first across kinds (rank, then cosine before co-occurrence), each feature once."""
    seen: set[str] = set()
    result = []
    for n in sorted(neighbours, key=lambda n: (n.rank, n.kind != "cosine")):
        if n.other not in seen and n.other_in_run:
            seen.add(n.other)
            result.append(n)
    return result


def neighbour_distractor(
    feature_id: str, text: str, neighbours: Sequence[Neighbour], latest: dict[str, dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """Returns [(feature id, explanation row)] of the nearest neighbour with a current explanation whose text
    differs from `text`; [] when none has one."""
    for n in ordered_neighbours(neighbours):
        other = latest.get(n.other)
        if other is not None and other["text"] != text and n.other != feature_id:
            return [(n.other, other)]
    return []


def ensure_hard_negatives(config: RunConfig, store: Store, run_id: str, feature_ids: Collection[str] | None) -> int:
    """Computes and stores the hard negatives of every live feature that has neighbours and none stored yet
    (up to `collect.random_windows` each); returns how many exemplars were written."""
    neighbours = store.neighbours_by_feature(run_id)
    if not neighbours:
        log.warning("no neighbours stored for run %s: no hard negatives (score.negatives)", run_id)
        return 0
    features = {f.id: f for f in store.features(run_id)}
    done = store.features_with_exemplars(run_id, NEIGHBOUR_KIND)
    todo = [
        f
        for f in features.values()
        if f.live and f.id not in done and f.id in neighbours and (feature_ids is None or f.id in feature_ids)
    ]
    if not todo:
        return 0
    kept: dict[str, list[Exemplar]] = {}
    for split in ("explain", "score"):
        for fid, exemplars in store.exemplars_by_feature(run_id, split).items():
            kept.setdefault(fid, []).extend(exemplars)
    wanted = config.collect.random_windows
    candidates: dict[str, list[Exemplar]] = {}
    for feature in todo:
        own = {(e.doc_id, e.token_offset) for e in kept.get(feature.id, [])}
        chosen: list[Exemplar] = []
        for n in ordered_neighbours(neighbours[feature.id]):
            for e in sorted((e for e in kept.get(n.other, []) if e.kind == "top"), key=lambda e: e.rank):
                key = (e.doc_id, e.token_offset)
                if key not in own and len(chosen) < 4 * wanted:
                    own.add(key)
                    chosen.append(e)
        candidates[feature.id] = chosen
    activations = feature_activations(config, [f.id for f in todo], [e for c in candidates.values() for e in c])
    rows = []
    for feature in todo:
        threshold = fires_threshold(feature.max_activation)
        rank = 0
        for e in candidates[feature.id]:
            acts = activations.get((feature.id, e.doc_id, e.token_offset))
            if acts is None or max(acts, default=0.0) >= threshold or rank >= wanted:
                continue
            rows.append(
                Exemplar(
                    run_id, feature.id, NEIGHBOUR_KIND, rank, e.doc_id, e.token_offset, list(e.token_ids),
                    list(e.tokens), acts, max(acts, default=0.0), "score",
                ).to_row()
            )  # fmt: skip
            rank += 1
    store.write_results({"exemplars": rows})
    return len(rows)


def feature_activations(
    config: RunConfig, feature_ids: list[str], windows: list[Exemplar]
) -> dict[tuple[str, int, int], list[float]]:
    """Returns (feature id, doc id, token offset) -> the feature's activation per token on that window, for
    every feature of `feature_ids` on every distinct window, from the run's feature source (batched forward
    passes of windows of equal length)."""
    from autointerp.pipeline.common import load_subject
    from autointerp.subject.kinds import build_feature_source

    unique = {(e.doc_id, e.token_offset): e for e in windows}
    if not unique:
        return {}
    subject = load_subject(config)
    source = build_feature_source(config.features, subject)
    column = {fid: i for i, fid in enumerate(source.feature_ids)}
    wanted = [(fid, column[fid]) for fid in feature_ids if fid in column]
    by_length: dict[int, list[Exemplar]] = {}
    for e in unique.values():
        by_length.setdefault(len(e.token_ids), []).append(e)
    result: dict[tuple[str, int, int], list[float]] = {}
    batch = config.corpus.batch_size
    with torch.no_grad():
        for group in by_length.values():
            for start in range(0, len(group), batch):
                chunk = group[start : start + batch]
                ids = torch.tensor([list(e.token_ids) for e in chunk], dtype=torch.long, device=subject.device)
                acts = source.activations(ids).float().cpu()  # (B, T, F)
                for b, e in enumerate(chunk):
                    for fid, col in wanted:
                        result[(fid, e.doc_id, e.token_offset)] = acts[b, :, col].tolist()
    return result
