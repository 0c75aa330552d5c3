"""Distillation: a stronger simulator's per-token predictions from a run, as training examples.

A run's simulation scores keep, per held-out window, what the simulator predicted for each token
(`details.windows[].predicted`); the window's tokens are its score-split exemplar. Each (explanation,
window) becomes one example whose targets are the teacher's predictions rounded to a level, so a cheap
local simulator learns to say what an expensive one says.
"""

from __future__ import annotations

import json
from pathlib import Path

from autointerp.errors import ConfigError, StoreError
from autointerp.simtrain.examples import SimExample
from autointerp.store.database import Store


def distill_examples(db: Path, run_id: str, teacher: str | None = None) -> list[SimExample]:
    """Returns one example per scored (explanation, held-out window) of `run_id` in the DuckDB file `db`
    whose simulator is `teacher` (any when None); raises ConfigError when the run has none."""
    if not db.is_file():
        raise ConfigError(f"cannot distil from {db}: no such DuckDB file")
    store = Store(db)
    try:
        rows = store.simulation_predictions(run_id)
        exemplars = {
            (e.feature_id, e.kind, e.rank): e.tokens
            for held_out in store.exemplars_by_feature(run_id, "score").values()
            for e in held_out
        }
    except StoreError as exc:
        raise ConfigError(f"cannot distil from {db}: {exc}") from None
    examples: list[SimExample] = []
    teachers = set()
    for feature, text, model, details in rows:
        teachers.add(model)
        if teacher is not None and model != teacher:
            continue
        for window in json.loads(details).get("windows", []):
            tokens = exemplars.get((feature, window["kind"], window["rank"]))
            predicted = window.get("predicted")
            if tokens is None or predicted is None or len(predicted) != len(tokens):
                continue
            levels = [min(10, max(0, round(float(v)))) for v in predicted]
            examples.append(SimExample(text, list(tokens), levels, f"distill:{run_id}:{feature}"))
    if not examples:
        found = f"; its simulators: {', '.join(sorted(teachers))}" if teachers else ""
        wanted = f" by {teacher}" if teacher else ""
        raise ConfigError(f"run {run_id!r} in {db} has no simulation predictions{wanted} to distil{found}")
    return examples
