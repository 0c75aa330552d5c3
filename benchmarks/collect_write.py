"""The collect stage's exemplar write: rows built as Arrow columns vs per-row dicts, each then written to DuckDB.

A collection of `--features` features x 20 exemplars (8 top, 8 quantile, 4 random) over real windows of the
builtin corpus, with SmolLM2's tokenizer decoding the tokens, as `store_collection` stores one. Each arm builds
the exemplar rows and writes them with the features through `Store.write_collection` into a fresh store:

- per-row dicts: one dict per exemplar, token strings decoded through a per-token cache, `pa.Table.from_pylist`
  (the stage before this benchmark was written);
- Arrow columns: `exemplar_table` (what the stage does now).

The arms alternate, `--repeats` times each; medians of wall and CPU seconds of this process.

    .venv/bin/python benchmarks/collect_write.py --features 10000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.collect.exemplar_table import exemplar_table  # noqa: E402
from autointerp.collect.results import Exemplar  # noqa: E402
from autointerp.corpus.sources import iter_windows  # noqa: E402
from autointerp.store.database import Store  # noqa: E402
from autointerp.subject import load_subject_model  # noqa: E402

RUN = "run-write"
KINDS = [("top", r) for r in range(8)] + [(f"quantile-{q}", r) for q in range(1, 5) for r in range(2)]
KINDS += [("random", r) for r in range(4)]


def fabricate(features: int, windows: int) -> tuple[list[str], list[dict[str, Any]], list[Exemplar]]:
    """Returns feature ids, feature rows and exemplars over `windows` real corpus windows."""
    rng = np.random.default_rng(0)
    corpus = list(iter_windows(SUBJECT.tokenizer, "builtin:python-docs", window_tokens=32, max_windows=windows))
    ids = [f"{SUBJECT.slug}/mlp.{f // 1536}/{f % 1536}" for f in range(features)]
    rows = [
        {"run_id": RUN, "id": i, "model": SUBJECT.slug, "hook": "mlp.0", "kind": "neuron", "idx": f}
        for f, i in enumerate(ids)
    ]
    exemplars = []
    for f in range(features):
        picks = rng.choice(len(corpus), len(KINDS), replace=False)
        acts = rng.random((len(KINDS), 32), dtype=np.float32)
        for (kind, rank), pick, a in zip(KINDS, picks, acts, strict=True):
            split = "score" if kind == "random" or rank % 2 else "explain"
            window = corpus[pick]
            exemplars.append(Exemplar(f, kind, rank, window, a[: len(window.token_ids)].tolist(), split))
    return ids, rows, exemplars


def dict_rows(ids: list[str], exemplars: list[Exemplar]) -> list[dict[str, Any]]:
    """Returns the exemplars as the stage built them before: one dict per row, tokens decoded per token."""
    token_text: dict[int, str] = {}

    def decode(token_ids: list[int]) -> list[str]:
        for token_id in token_ids:
            if token_id not in token_text:
                token_text[token_id] = SUBJECT.decode_tokens([token_id])[0]
        return [token_text[t] for t in token_ids]

    return [
        {
            "run_id": RUN,
            "feature_id": ids[e.feature_index],
            "kind": e.kind,
            "rank": e.rank,
            "doc_id": e.window.doc_id,
            "token_offset": e.window.offset,
            "token_ids": e.window.token_ids,
            "tokens": decode(e.window.token_ids),
            "activations": e.activations,
            "max_activation": e.max_activation,
            "split": e.split,
        }
        for e in exemplars
    ]


def timed(write: Callable[[Store], None]) -> tuple[float, float]:
    """Returns (wall, CPU) seconds of `write` into a fresh store."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "write.duckdb")
        store.migrate()
        w0, c0 = time.perf_counter(), time.process_time()
        write(store)
        return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    """Prints the table."""
    ids, features, exemplars = fabricate(ARGS.features, ARGS.windows)
    arms: dict[str, Callable[[Store], None]] = {
        "per-row dicts, `from_pylist` (before)": lambda s: s.write_collection(RUN, features, dict_rows(ids, exemplars)),
        "Arrow columns, `exemplar_table` (now)": lambda s: s.write_collection(
            RUN, features, exemplar_table(RUN, ids, exemplars, SUBJECT.decode_tokens)
        ),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    for _ in range(ARGS.repeats):
        for name, write in arms.items():
            times[name].append(timed(write))
    n = len(exemplars)
    print(f"{ARGS.features:,} features, {n:,} exemplar rows of 32 tokens, medians of {ARGS.repeats} runs each\n")
    print("| build and write | wall s | CPU s | exemplar rows / s | rows / CPU-s |\n|---|---:|---:|---:|---:|")
    for name, runs in times.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {n / wall:,.0f} | {n / cpu:,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=2_048)
    parser.add_argument("--repeats", type=int, default=3)
    ARGS = parser.parse_args()
    SUBJECT = load_subject_model("smollm2-135m", "cpu", "float32")
    main()
