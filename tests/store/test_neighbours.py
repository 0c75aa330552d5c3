from pathlib import Path

from autointerp.neighbours import Neighbour
from autointerp.store.database import Store


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "n.duckdb")
    store.migrate()
    return store


def test_neighbours_round_trip_nearest_first_and_replace_per_kind(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cosine = [
        Neighbour("m/mlp.1/0", "m/mlp.1/7", "cosine", 0.5, 2, other_in_run=False),
        Neighbour("m/mlp.1/0", "m/mlp.1/3", "cosine", 0.9, 1),
        Neighbour("m/mlp.1/3", "m/mlp.1/0", "cosine", 0.9, 1),
    ]
    together = [Neighbour("m/mlp.1/0", "m/mlp.1/3", "cooccurrence", 0.25, 1, count=4)]
    assert store.write_neighbours("r", cosine) == 3
    store.write_neighbours("r", together)
    store.write_neighbours("other-run", [Neighbour("m/mlp.1/0", "m/mlp.1/9", "cosine", 0.1, 1)])

    assert store.neighbours("r", "m/mlp.1/0", "cosine") == [cosine[1], cosine[0]]
    assert store.neighbours("r", "m/mlp.1/0") == [together[0], cosine[1], cosine[0]]  # by kind, then rank
    assert store.neighbours("r", "m/mlp.1/0", "cooccurrence")[0].count == 4
    assert store.neighbours("r", "m/mlp.1/5") == []
    assert store.has_neighbours("r", "cosine") and not store.has_neighbours("x", "cosine")
    grouped = store.neighbours_by_feature("r")
    assert sorted(grouped) == ["m/mlp.1/0", "m/mlp.1/3"] and len(grouped["m/mlp.1/0"]) == 3

    # writing one kind again replaces that kind only, so a resumed step never duplicates rows
    store.write_neighbours("r", cosine[1:2])
    assert store.neighbours("r", "m/mlp.1/0") == [together[0], cosine[1]]
    assert store.neighbours("r", "m/mlp.1/3") == []
