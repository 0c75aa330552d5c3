"""Collected runs for the import/export tests: features of one kind at one hook, with exemplars, and
(for the Neuronpedia example) explanations and scores with fixed ids and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from autointerp.store.database import Store

MODEL = "smollm2-135m"
MONTHS = ["We", " met", " in", " March"]
CODE = ["The", " compiler", " failed", "."]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interop"

PREFIX = {"neuron": "mlp", "sae": "sae", "transcoder": "transcoder"}


def feature_id(kind: str, layer: int, index: int) -> str:
    """Returns the id autointerp gives feature `index` of a `kind` source at `layer`."""
    return f"{MODEL}/{PREFIX[kind]}.{layer}/{index}"


def seed_run(
    store: Store, run_id: str, kind: str = "neuron", hook: str = "mlp.15", indices: tuple[int, ...] = (417, 12)
) -> list[str]:
    """Stores a collected run whose features are `indices` of one `kind` source at `hook` (layer 15);
    feature `indices[0]` fires on months. Returns the feature ids."""
    store.migrate()
    store.start_run(run_id, {}, "hash", "test", None)
    features, exemplars, ids = [], [], []
    for position, index in enumerate(indices):
        fid = feature_id(kind, 15, index)
        ids.append(fid)
        features.append({"run_id": run_id, "id": fid, "model": MODEL, "hook": hook, "kind": kind, "idx": index,
                         "max_activation": 1.0, "density": 0.25, "dead": False})  # fmt: skip
        fires = position == 0
        for exemplar_kind, (tokens, acts) in (
            ("top", (MONTHS, [0, 0, 0, 1.0 if fires else 0])),
            ("random", (CODE, [0] * 4)),
        ):
            for rank, split in enumerate(("explain", "score")):
                exemplars.append({"run_id": run_id, "feature_id": fid, "kind": exemplar_kind, "rank": rank,
                                  "tokens": tokens, "activations": acts, "max_activation": max(acts),
                                  "split": split})  # fmt: skip
    store.write_results({"features": features, "exemplars": exemplars})
    return ids


def seed_scored_run(store: Store, run_id: str) -> None:
    """A neuron run with our explanations and an imported one, scored: one metric with a value, its
    distractor, and one metric without a value (undefined); every id and time fixed."""
    months, code = seed_run(store, run_id)
    start = datetime(2026, 12, 6, tzinfo=UTC)
    explanations = [
        ("ours-417", months, "names of months", "local:smollm2-135m", "b55b1fb719748b45"),
        ("ours-12", code, "programming words", "local:smollm2-135m", "b55b1fb719748b45"),
        ("import-417", months, "calendar months", "import:delphi", "import"),
    ]
    rows = [{"id": eid, "run_id": run_id, "feature_id": fid, "iteration": 0, "text": text, "explainer": explainer,
             "prompt_hash": prompt_hash, "created_at": start + timedelta(seconds=n)}
            for n, (eid, fid, text, explainer, prompt_hash) in enumerate(explanations)]  # fmt: skip
    scores = []
    for n, (eid, *_rest) in enumerate(explanations):
        for metric, value, model in (
            ("embedding_auroc", 0.5 + n / 10, "all-MiniLM-L6-v2"),
            ("embedding_auroc_distractor", 0.5, "all-MiniLM-L6-v2"),
            ("detection_balanced_accuracy", None, "local:smollm2-135m"),
        ):
            scorer = metric.split("_")[0]
            scores.append({"id": f"{eid}-{metric}", "run_id": run_id, "explanation_id": eid, "scorer": scorer,
                           "scorer_model": model, "metric": metric, "value": value, "details": "{}",
                           "created_at": start})  # fmt: skip
    store.write_results({"explanations": rows, "scores": scores})
