"""Distillation: a stronger simulator's per-token predictions from a run, as training examples.

A run's simulation scores keep, per held-out window, what the simulator predicted for each token
(`details.windows[].predicted`); the window's tokens are its score-split exemplar. Each (explanation,
window) becomes one example whose targets are the teacher's predictions rounded to a level, so a cheap
local simulator learns to say what an expensive one says.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from autointerp.errors import ConfigError
from autointerp.simtrain.examples import SimExample

_QUERY = """
    SELECT e.feature_id, e.text, s.scorer_model, s.details
    FROM scores s JOIN explanations e ON e.id = s.explanation_id
    WHERE s.run_id = ? AND s.scorer LIKE 'simulation%' AND s.metric = 'correlation_all' AND s.details IS NOT NULL
"""


def distill_examples(db: Path, run_id: str, teacher: str | None = None) -> list[SimExample]:
    """Returns one example per scored (explanation, held-out window) of `run_id` in the DuckDB file `db`
    whose simulator is `teacher` (any when None); raises ConfigError when the run has none."""
    if not db.is_file():
        raise ConfigError(f"cannot distil from {db}: no such DuckDB file")
    try:
        connection = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        raise ConfigError(f"cannot open {db} to distil from it: {str(exc).splitlines()[0]}") from None
    with connection:
        rows = connection.execute(_QUERY, [run_id]).fetchall()
        exemplars = {
            (feature, kind, rank): tokens
            for feature, kind, rank, tokens in connection.execute(
                "SELECT feature_id, kind, rank, tokens FROM exemplars WHERE run_id = ? AND split = 'score'", [run_id]
            ).fetchall()
        }
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
