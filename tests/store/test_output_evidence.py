"""The output_evidence table: its migration carries an older file forward, records round-trip exactly, and
writing the same features again (a resumed run) leaves one row per feature."""

from __future__ import annotations

from pathlib import Path

import duckdb

from autointerp.outputs import PLANTED_NO_OUTPUT, OutputEvidence, TokenEffect
from autointerp.store.database import SCHEMA_VERSION, Store, now
from autointerp.store.schema import MIGRATIONS, _migration_output_evidence, schema_version

RUN = "run-a"


def _evidence(feature_id: str, scale: float = 1.0) -> OutputEvidence:
    return OutputEvidence(
        feature_id,
        promoted=(TokenEffect(" Monday", 12397, 2.5 * scale), TokenEffect("Friday", 11, 2.0)),
        suppressed=(TokenEffect(" the", 260, -1.25),),
        steer_raised=(TokenEffect("\n", 198, 0.75),),
        steer_lowered=(TokenEffect('"', 18, -0.5), TokenEffect("é", 7, -0.25)),
        steer_scale=4.0,
        steer_prompts=3,
    )


def test_a_file_before_output_evidence_is_migrated_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    before = MIGRATIONS.index(_migration_output_evidence)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for version in range(1, before + 1):
        MIGRATIONS[version - 1](con)
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now()])
    assert schema_version(con) == before
    con.close()
    store = Store(path)
    assert store.migrate() == SCHEMA_VERSION
    assert store.output_evidence(RUN, "m/mlp.1/2") is None and store.output_evidence_by_feature(RUN) == {}
    items = [_evidence("m/mlp.1/2"), OutputEvidence("planted/digits", no_output_reason=PLANTED_NO_OUTPUT)]
    assert store.write_output_evidence(RUN, items) == 2
    assert store.output_evidence(RUN, "m/mlp.1/2") == items[0]
    assert store.output_evidence_by_feature(RUN) == {e.feature_id: e for e in items}
    assert not store.output_evidence_by_feature(RUN)["planted/digits"].has_output
    assert store.output_evidence_ids(RUN) == {"m/mlp.1/2", "planted/digits"}
    assert store.output_evidence_ids("other-run") == set()


def test_writing_a_feature_again_replaces_its_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    store.write_output_evidence(RUN, [_evidence("f/0"), _evidence("f/1")])
    store.write_output_evidence(RUN, [_evidence("f/1", scale=2.0)])
    store.write_output_evidence("run-b", [_evidence("f/1")])
    assert store.query("SELECT count(*) AS n FROM output_evidence WHERE run_id = ?", [RUN])[0]["n"] == 2
    assert store.output_evidence(RUN, "f/1") == _evidence("f/1", scale=2.0)
    assert store.output_evidence("run-b", "f/1") == _evidence("f/1")
    assert store.write_output_evidence(RUN, []) == 0
