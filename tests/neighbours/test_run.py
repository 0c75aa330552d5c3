"""Neighbours of a real collection (SmolLM2-135M, layer 15): cosine equals the weights' dense reference,
co-occurrence equals a brute-force count over the run's windows, and both reach the review page and the
export."""

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from autointerp.activations import fires
from autointerp.collect.stage import run_collect
from autointerp.collect.stream import batches
from autointerp.config import RunConfig
from autointerp.corpus.sources import corpus_windows
from autointerp.interop.export import export_run
from autointerp.neighbours.stage import run_neighbours
from autointerp.review import ReviewSettings
from autointerp.store.database import Store
from autointerp.subject import SubjectModel
from autointerp.subject.hooks import mlp_down_proj
from autointerp.subject.kinds import build_feature_source
from tests.conftest import tiny_config
from tests.review.conftest import serve  # noqa: F401  (the live review server fixture)

INDICES = [5, 400, 1201, 77, 1000, 3]


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory, subject: SubjectModel) -> tuple[RunConfig, str]:
    config = tiny_config(tmp_path_factory.mktemp("neighbours"), f"features.indices={INDICES}", "neighbours.k=4")
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, config.model_dump(mode="json"), config.config_hash(), "test", None)
    run_collect(config, store, run_id)
    assert run_neighbours(config, store, run_id) == len(INDICES) * 4
    return config, run_id


def test_cosine_neighbours_are_the_nearest_down_projection_columns_of_the_layer(
    collected: tuple[RunConfig, str], subject: SubjectModel
) -> None:
    config, run_id = collected
    store = Store(config.store.path)
    weight = mlp_down_proj(subject, 15).weight
    assert isinstance(weight, torch.Tensor)
    columns = weight.detach().float().T  # (1536, d_model): a neuron's column
    unit = torch.nn.functional.normalize(columns, dim=1)
    for index in INDICES:
        sims = unit @ unit[index]
        sims[index] = float("-inf")
        expected = sims.topk(4)
        got = store.neighbours(run_id, f"smollm2-135m/mlp.15/{index}", "cosine")
        assert [n.other for n in got] == [f"smollm2-135m/mlp.15/{i}" for i in expected.indices.tolist()]
        assert [n.rank for n in got] == [1, 2, 3, 4]
        assert all(abs(n.value - v) < 1e-5 for n, v in zip(got, expected.values.tolist(), strict=True))
        assert all(n.other_in_run == (int(n.other.rsplit("/", 1)[1]) in INDICES) for n in got)
    assert run_neighbours(config, store, run_id) == 0  # stored: a resumed run skips the step


def test_cooccurrence_neighbours_equal_a_brute_force_count_of_firing_windows(
    collected: tuple[RunConfig, str], subject: SubjectModel
) -> None:
    config, run_id = collected
    store = Store(config.store.path)
    source = build_feature_source(config.features, subject)
    stored = {f.id: f for f in store.features(run_id)}
    features = [stored[i] for i in source.feature_ids]  # the collection's order (equal fractions: lower first)
    window_max: list[list[float]] = []
    for batch in batches(corpus_windows(subject.tokenizer, config.corpus), config.corpus.batch_size):
        with torch.inference_mode():
            acts = source.activations(torch.tensor([w.token_ids for w in batch]))  # (B, T, F), as collected
        window_max.extend(acts.amax(dim=1).tolist())
    fired = [
        {w for w, row in enumerate(window_max) if fires(row[f], feature.max_activation)}
        for f, feature in enumerate(features)
    ]
    expected = []
    for a, feature in enumerate(features):
        ranked = sorted(
            (-len(fired[a] & fired[b]) / len(fired[a] | fired[b]), -len(fired[a] & fired[b]), b)
            for b in range(len(features))
            if b != a and fired[a] & fired[b]
        )[:4]
        expected += [(feature.id, features[b].id, -both, rank) for rank, (_, both, b) in enumerate(ranked, start=1)]
    got = [
        (n.feature, n.other, n.count, n.rank) for f in features for n in store.neighbours(run_id, f.id, "cooccurrence")
    ]
    assert got == expected and len(got) >= len(INDICES)  # these neurons fire together in some windows


def test_the_feature_page_links_its_neighbours_and_the_export_carries_them(
    collected: tuple[RunConfig, str],
    serve: Callable[[ReviewSettings], str],  # noqa: F811
) -> None:
    import httpx

    config, run_id = collected
    store = Store(config.store.path)
    feature = "smollm2-135m/mlp.15/400"
    base = serve(ReviewSettings(db=Path(config.store.path)))
    page = httpx.get(f"{base}/feature", params={"id": feature}).text
    assert 'id="nearest"' in page
    linked = re.findall(r'class="nearest-link (cosine|cooccurrence)" href="/feature\?id=([^"]+)"', page)
    in_run = [n for n in store.neighbours(run_id, feature) if n.other_in_run]
    assert sorted((kind, target.replace("%2F", "/")) for kind, target in linked) == sorted(
        (n.kind, n.other) for n in in_run
    )
    assert in_run and all(httpx.get(f"{base}/feature", params={"id": n.other}).status_code == 200 for n in in_run)
    outside = [n.other for n in store.neighbours(run_id, feature, "cosine") if not n.other_in_run]
    assert all(f'<span class="nearest-other" title="not in this run">{o}</span>' in page for o in outside)

    store.write_results(
        {
            "explanations": [
                {
                    "id": "e1",
                    "run_id": run_id,
                    "feature_id": feature,
                    "iteration": 0,
                    "text": "x",
                    "explainer": "t",
                    "prompt_hash": "h",
                }
            ]
        }
    )
    line = json.loads(export_run(store, run_id, "jsonl").decode().splitlines()[0])
    assert [(n["kind"], n["rank"], n["other"]) for n in line["neighbours"]] == [
        (n.kind, n.rank, n.other) for n in store.neighbours(run_id, feature)
    ]
