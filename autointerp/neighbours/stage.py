"""The neighbours step, after collection: each feature's nearest features by write-direction cosine.

Co-occurrence neighbours are counted during collection and stored with it (`autointerp.collect.stage`);
this step adds the cosine ones, once per run: a resumed run that has them skips it.
"""

from __future__ import annotations

import logging

from autointerp.config import RunConfig
from autointerp.neighbours.cosine import cosine_neighbours
from autointerp.pipeline.common import load_subject
from autointerp.store.database import Store
from autointerp.subject.kinds import build_feature_source

log = logging.getLogger(__name__)


def run_neighbours(config: RunConfig, store: Store, run_id: str) -> int:
    """Computes and stores the run's cosine neighbours; returns how many rows were written (0 when
    neighbours are off, already stored, or the source's features write no direction, e.g. planted ones).

    The search covers every feature of the run's dictionary or layer(s) (`features` with every index), so
    a neighbour may lie outside the run (`other_in_run` False)."""
    settings = config.neighbours
    if not settings.enabled or store.has_neighbours(run_id, "cosine"):
        return 0
    features = store.features(run_id)
    if not features:
        return 0
    subject = load_subject(config)
    universe = build_feature_source(config.features.model_copy(update={"indices": [], "count": "all"}), subject)
    directions = universe.write_directions()
    if directions is None:
        log.info("neighbours: %s features write no direction; no cosine neighbours", universe.kind)
        return 0
    items = cosine_neighbours(
        [f.id for f in features],
        universe.feature_ids,
        directions.hooks,
        directions.vectors,
        settings.k,
        settings.cosine_scope,
    )
    written = store.write_neighbours(run_id, items, kinds=["cosine"])
    log.info("neighbours: %d cosine neighbours of %d features among %d", written, len(features), len(directions.hooks))
    return written
