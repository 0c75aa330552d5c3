"""Exemplars stored once per window: a file at the schema before it is carried forward, and writes round-trip."""

from __future__ import annotations

from pathlib import Path

import duckdb

from autointerp.records import Exemplar, Feature, now
from autointerp.store.database import SCHEMA_VERSION, Store
from autointerp.store.exemplar_windows import EXEMPLAR_COLUMNS
from autointerp.store.schema import MIGRATIONS, _migration_exemplar_windows, schema_version

RUN = "run-windows"


def _exemplar(feature: str, rank: int, ids: list[int], tokens: list[str], scale: float = 1.0) -> Exemplar:
    acts = [scale * (i % 3) for i in range(len(ids))]
    return Exemplar(RUN, feature, "top", rank, 7, 64 * rank, ids, tokens, acts, max(acts), "explain")


def _exemplars() -> list[Exemplar]:
    shared = ([5, 6, 7], ["The", " cat", " sat"])
    return [
        _exemplar("f/0", 0, *shared),
        _exemplar("f/1", 0, *shared, scale=2.0),  # the same window kept by another feature
        _exemplar("f/1", 1, [5, 6, 7], ["<b>", " same", " ids"]),  # same ids, other strings: its own window
        _exemplar("f/2", 0, [9], ["x"]),
    ]


def _features() -> list[Feature]:
    return [Feature(RUN, f"f/{i}", "m", "mlp.0", "neuron", i, 2.0) for i in range(3)]


def _old_store(path: Path) -> None:
    """Writes a file at the schema version before exemplar windows, with rows in its `exemplars` table."""
    before = MIGRATIONS.index(_migration_exemplar_windows)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
    for version in range(1, before + 1):
        MIGRATIONS[version - 1](con)
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now()])
    for e in _exemplars():
        row = e.to_row()
        con.execute(
            f"INSERT INTO exemplars ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values())
        )
    con.execute(
        "INSERT INTO scores VALUES ('s1', ?, 'e1', 'sim', 'm', 'correlation_top_and_random', 0.5, '{}', ?)",
        [RUN, now()],
    )
    assert schema_version(con) == before
    con.close()


def test_a_file_at_the_previous_schema_is_carried_forward(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _old_store(path)
    store = Store(path)
    assert store.migrate() == SCHEMA_VERSION
    for feature in ("f/0", "f/1", "f/2"):
        expected = [e for e in _exemplars() if e.feature_id == feature]
        assert store.exemplars(RUN, feature) == expected
    assert store.query("SELECT count(*) AS n FROM exemplar_windows")[0]["n"] == 3  # 4 rows, 3 distinct windows
    assert store.query("SELECT value FROM scores WHERE id = 's1'")[0]["value"] == 0.5
    assert [r["name"] for r in store.query("SELECT column_name AS name FROM (DESCRIBE exemplars)")] == list(
        EXEMPLAR_COLUMNS
    )


def test_writes_share_windows_and_replace_a_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "new.duckdb")
    store.migrate()
    store.write_collection(RUN, _features(), _exemplars())
    store.write_collection(RUN, _features(), _exemplars())  # a resumed collection replaces, never duplicates
    assert store.exemplars_by_feature(RUN, "explain")["f/1"] == [e for e in _exemplars() if e.feature_id == "f/1"]
    assert store.query("SELECT count(*) AS n FROM exemplar_rows")[0]["n"] == 4
    assert store.query("SELECT count(*) AS n FROM exemplar_windows")[0]["n"] == 3

    exported = store.export_run(RUN, ["exemplars"])
    other = Store(tmp_path / "other.duckdb")
    other.migrate()
    other.load_tables(exported)
    assert other.ingest_part(RUN, "part-1", exported) == 4  # windows already there are not stored twice
    assert other.query("SELECT count(*) AS n FROM exemplar_windows")[0]["n"] == 3
    assert other.exemplars(RUN, "f/2") == [e for e in _exemplars() if e.feature_id == "f/2"] * 2


def test_windows_without_token_ids_are_kept_apart(tmp_path: Path) -> None:
    """An imported run may carry token strings without ids: such a window is its own, in the same write as
    windows with ids, and a second write of the same rows stores no window twice."""
    store = Store(tmp_path / "mixed.duckdb")
    store.migrate()
    rows = [e.to_row() for e in _exemplars()]
    rows.append({**rows[0], "feature_id": "f/3", "token_ids": None})  # f/0's window, imported without ids
    rows.append({**rows[3], "feature_id": "f/4", "token_ids": None, "tokens": ["y"]})
    store.write_results({"exemplars": rows})
    store.write_results({"exemplars": rows})
    assert store.query("SELECT count(*) AS n FROM exemplar_windows")[0]["n"] == 5  # 3 with ids, 2 without
    f3, f4 = store.exemplars(RUN, "f/3"), store.exemplars(RUN, "f/4")
    assert [(e.token_ids, e.tokens) for e in f3] == [(None, ["The", " cat", " sat"])] * 2
    assert [(e.token_ids, e.tokens) for e in f4] == [(None, ["y"])] * 2
    assert store.exemplars(RUN, "f/0") == [_exemplars()[0]] * 2


def test_every_row_of_a_large_write_gets_its_own_window(tmp_path: Path) -> None:
    """A write's keys are hashed once, in row order, and carried beside its rows as a column: over many vectors
    of rows, each row still reads back its own window."""
    store = Store(tmp_path / "large.duckdb")
    store.migrate()
    rows = [
        Exemplar(RUN, f"f/{i // 10}", "top", i % 10, i, 0, [i, i + 1], [f"t{i}", "x"], [0.5, 1.0], 1.0, "explain")
        for i in range(30_000)
    ]
    store.write_results({"exemplars": [e.to_row() for e in rows]})
    stored = store.query("SELECT doc_id, token_ids, tokens FROM exemplars")
    assert len(stored) == 30_000
    assert all(r["token_ids"] == [r["doc_id"], r["doc_id"] + 1] and r["tokens"][0] == f"t{r['doc_id']}" for r in stored)
