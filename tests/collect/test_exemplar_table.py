"""A collection's exemplars built as Arrow columns: the same rows as per-row dicts, and they round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from autointerp.collect import exemplar_table as exemplar_table_module
from autointerp.collect.exemplar_table import exemplar_table
from autointerp.collect.results import Exemplar
from autointerp.corpus.sources import Window
from autointerp.store.database import Store

IDS = ["m/mlp.0/0", "m/mlp.0/7"]


def _decode(token_ids: list[int]) -> list[str]:
    return [f"<{t}>" for t in token_ids]


def _exemplars() -> list[Exemplar]:
    windows = [Window(3, 0, [11, 12, 13]), Window(4, 32, [12, 40]), Window(9, 8, [7])]
    return [
        Exemplar(0, "top", 0, windows[0], [0.5, 2.0, -1.0], "explain"),
        Exemplar(0, "random", 0, windows[1], [0.0, 0.25], "score"),
        Exemplar(1, "top", 0, windows[0], [1.5, 0.0, 0.0], "explain"),  # a window shared by two features
        Exemplar(1, "quantile-2", 1, windows[2], [3.0], "score"),
    ]


def _row(e: Exemplar) -> dict[str, object]:
    return {
        "run_id": "r",
        "feature_id": IDS[e.feature_index],
        "kind": e.kind,
        "rank": e.rank,
        "doc_id": e.window.doc_id,
        "token_offset": e.window.offset,
        "token_ids": e.window.token_ids,
        "tokens": _decode(e.window.token_ids),
        "activations": e.activations,
        "max_activation": e.max_activation,
        "split": e.split,
    }


def test_the_table_holds_each_exemplar_as_its_row() -> None:
    table = exemplar_table("r", IDS, _exemplars(), _decode)
    assert table.to_pylist() == [_row(e) for e in _exemplars()]


def test_decode_is_asked_once_for_each_distinct_token() -> None:
    asked: list[list[int]] = []

    def decode(token_ids: list[int]) -> list[str]:
        asked.append(token_ids)
        return _decode(token_ids)

    exemplar_table("r", IDS, _exemplars(), decode)
    assert asked == [[7, 11, 12, 13, 40]]


def test_an_empty_collection_gives_an_empty_table() -> None:
    assert exemplar_table("r", IDS, [], _decode).num_rows == 0


def test_the_table_is_written_and_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    features = [
        {"run_id": "r", "id": f, "model": "m", "hook": "mlp.0", "kind": "neuron", "idx": i} for i, f in enumerate(IDS)
    ]
    store.write_collection("r", features, exemplar_table("r", IDS, _exemplars(), _decode))
    stored = {(r["feature_id"], r["kind"], r["rank"]): r for r in store.query("SELECT * FROM exemplars")}
    assert len(stored) == 4
    for row in map(_row, _exemplars()):
        got = stored[(row["feature_id"], row["kind"], row["rank"])]
        assert (got["token_ids"], got["tokens"]) == (row["token_ids"], row["tokens"])
        assert got["activations"] == pytest.approx(row["activations"])
        assert got["max_activation"] == pytest.approx(row["max_activation"])


def test_record_batches_hold_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large collection is built batch by batch (a string array holds at most 2 GiB): same rows, each token
    still decoded once."""
    monkeypatch.setattr(exemplar_table_module, "ROWS_PER_BATCH", 3)
    asked: list[int] = []

    def decode(token_ids: list[int]) -> list[str]:
        asked.extend(token_ids)
        return _decode(token_ids)

    table = exemplar_table("r", IDS, _exemplars(), decode)
    assert table.num_rows == 4 and len(table.to_batches()) == 2
    assert table.to_pylist() == [_row(e) for e in _exemplars()]
    assert sorted(asked) == [7, 11, 12, 13, 40]
