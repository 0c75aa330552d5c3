"""The evidence invariants every stored run must hold, checked on the database a test's run wrote.

A token fires at >= FIRES_FRACTION (10 %) of its feature's max; a window fires when one of its tokens
does. Top and quantile exemplars fire, non-activating (`random`) ones do not, and no window is in both
the explain and the score split of a feature.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from autointerp.activations import FIRES_FRACTION


def evidence_violations(db_path: Path, run_id: str | None = None) -> list[str]:
    """Returns one line per exemplar that breaks an evidence invariant (empty when the run is sound)."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        where = "WHERE e.run_id = ?" if run_id else ""
        params = [run_id] if run_id else []
        rows = con.execute(
            f"""
            SELECT e.feature_id, e.kind, e.rank, e.split, e.max_activation, f.max_activation,
                   e.doc_id, e.token_offset
            FROM exemplars e JOIN features f ON f.run_id = e.run_id AND f.id = e.feature_id
            {where}
            """,
            params,
        ).fetchall()
    finally:
        con.close()
    problems = []
    splits: dict[tuple[str, int, int], set[str]] = {}
    for feature, kind, rank, split, window_max, feature_max, doc, offset in rows:
        threshold = FIRES_FRACTION * feature_max
        fires = feature_max > 0 and window_max >= threshold * (1 - 1e-6)
        if kind == "random" and fires:
            problems.append(f"{feature} random #{rank} fires ({window_max:.4g} >= 10% of {feature_max:.4g})")
        if kind != "random" and not fires:
            problems.append(f"{feature} {kind} #{rank} does not fire ({window_max:.4g} of max {feature_max:.4g})")
        splits.setdefault((feature, doc, offset), set()).add(split)
    problems += [f"{f} window {d}:{o} is in both splits" for (f, d, o), s in splits.items() if len(s) > 1]
    return problems


def assert_evidence_invariants(db_path: Path, run_id: str | None = None) -> int:
    """Asserts the invariants on every exemplar of `run_id` (default: every run); returns the exemplar count."""
    problems = evidence_violations(db_path, run_id)
    assert not problems, "evidence invariants broken:\n" + "\n".join(problems[:20])
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        query = "SELECT count(*) FROM exemplars" + (" WHERE run_id = ?" if run_id else "")
        count = con.execute(query, [run_id] if run_id else []).fetchone()
    finally:
        con.close()
    assert count is not None and count[0] > 0, "the run stored no exemplars"
    return int(count[0])
