"""A run of N features fabricated straight into a store through Arrow, shaped like a default run's rows.

Per feature: one `features` row (with a window-max histogram), the default sampling's 20 windows of 32
tokens (8 top, 4 quantile bins x 2, 4 random; alternate ones in the explain and score splits) drawn from a
corpus of `--corpus-windows` distinct windows, one explanation (5 % also a revision), the simulation
scorer's ten metrics (five and their distractors, one details JSON per scorer as the scorer writes it, with a
bootstrap confidence), the embedding scorer's two, and reviews on 6 % of features (accept, reject, edit,
notes). LLM calls are left out (they are the size of their prompts, which a campaign keeps or not).

Every table goes in through `Store.load_tables` (Arrow, one transaction per chunk of features), the path
sharded runs use; exemplar rows are timed on their own for the write rate.

    .venv/bin/python benchmarks/scale_fixture.py --features 100000 --db /tmp/scale/100k.duckdb
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.metric_names import MAIN_METRIC  # noqa: E402
from autointerp.store.database import Store  # noqa: E402

RUN_ID = "run-scale"
MODEL = "smollm2-135m"
WINDOW_TOKENS = 32
VOCAB = 49_152
LATENTS_PER_HOOK = 131_072
CHUNK_FEATURES = 20_000
WINDOW_KINDS = [("top", r) for r in range(8)] + [(f"quantile-{q}", r) for q in range(1, 5) for r in range(2)]
WINDOW_KINDS += [("random", r) for r in range(4)]
SIM_METRICS = ["correlation_top_and_random", "correlation_all", "correlation_top", "correlation_random"]
SIM_METRICS += ["ev_correlation_score"]
WORDS = [
    "token",
    "tokens",
    "the",
    "a",
    "of",
    "in",
    "and",
    "after",
    "before",
    "comma",
    "period",
    "quote",
    "bracket",
    "code",
    "python",
    "function",
    "name",
    "names",
    "number",
    "numbers",
    "year",
    "years",
    "date",
    "dates",
    "month",
    "city",
    "cities",
    "country",
    "plural",
    "verb",
    "noun",
    "adjective",
    "past",
    "tense",
    "negation",
    "legal",
    "medical",
    "sports",
    "music",
    "chemistry",
    "biology",
    "physics",
    "math",
    "equation",
    "variable",
    "loop",
    "string",
    "list",
    "html",
    "tag",
    "url",
    "email",
    "french",
    "german",
    "spanish",
    "chinese",
    "japanese",
    "emoji",
    "punctuation",
    "newline",
    "indentation",
    "whitespace",
    "capital",
    "capitalised",
    "first",
    "last",
    "word",
    "words",
    "sentence",
    "paragraph",
    "question",
    "answer",
    "dialogue",
    "speaker",
    "pronoun",
    "he",
    "she",
    "they",
    "it",
    "this",
    "that",
    "which",
    "when",
    "where",
    "money",
    "price",
    "dollar",
    "percent",
    "unit",
    "measurement",
    "colour",
    "animal",
    "food",
    "weather",
    "time",
    "hour",
    "minute",
    "religion",
    "politics",
    "election",
    "war",
    "history",
    "science",
    "space",
    "planet",
    "star",
    "computer",
    "software",
    "error",
    "exception",
    "file",
]


@dataclass
class Fixture:
    """What a fixture wrote: its size and how long each part took."""

    features: int
    exemplar_rows: int
    exemplar_seconds: float
    exemplar_cpu_seconds: float
    """CPU time of this process (all its threads) during the exemplar writes: the rate on a shared machine."""
    total_seconds: float
    bytes: int


def _vocabulary() -> np.ndarray:
    """Returns made-up token strings, one per id (short, as BPE tokens are; a leading space on most)."""
    rng = np.random.default_rng(7)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    out = []
    for token_id in range(VOCAB):
        word = "".join(rng.choice(letters, size=int(rng.integers(1, 8))))
        out.append((" " if token_id % 5 else "") + word)
    return np.array(out, dtype=object)


def _corpus(rng: np.random.Generator, windows: int) -> np.ndarray:
    """Returns `windows` x WINDOW_TOKENS token ids, frequent ids first as in text (a skewed draw)."""
    ids = np.minimum(rng.exponential(scale=2_500.0, size=(windows, WINDOW_TOKENS)), VOCAB - 1)
    return ids.astype(np.int32)


def _list_array(flat: pa.Array, rows: int, width: int) -> pa.Array:
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def _feature_order(features: int) -> np.ndarray:
    """Returns the feature numbers 0 .. features - 1 in the order of their ids as strings (the order a
    collection's one write stores them in, so each row group of exemplars holds a narrow range of ids)."""
    numbers = np.arange(features)
    ids = np.array([f"{MODEL}/res.{i // LATENTS_PER_HOOK}/{i % LATENTS_PER_HOOK}" for i in numbers])
    return numbers[np.argsort(ids, kind="stable")]


def _feature_ids(numbers: np.ndarray) -> tuple[list[str], list[str], np.ndarray]:
    idx = numbers
    hooks = [f"res.{i // LATENTS_PER_HOOK}" for i in idx]
    ids = [f"{MODEL}/{h}/{i % LATENTS_PER_HOOK}" for h, i in zip(hooks, idx, strict=True)]
    return ids, hooks, idx % LATENTS_PER_HOOK


def _chunk_tables(
    rng: np.random.Generator,
    first: int,
    numbers: np.ndarray,
    corpus: np.ndarray,
    vocabulary: np.ndarray,
    start: datetime,
) -> dict[str, pa.Table]:
    """Returns every table's rows for the features `numbers` (the chunk starting at position `first`)."""
    count = len(numbers)
    ids, hooks, idx = _feature_ids(numbers)
    density = rng.beta(0.6, 30.0, size=count)
    max_act = rng.gamma(2.0, 2.0, size=count) + 0.1
    histogram = rng.integers(0, 500, size=(count, 17))
    features = pa.table(
        {
            "run_id": pa.array([RUN_ID] * count),
            "id": pa.array(ids),
            "model": pa.array([MODEL] * count),
            "hook": pa.array(hooks),
            "kind": pa.array(["sae"] * count),
            "idx": pa.array(idx.astype(np.int32)),
            "max_activation": pa.array(max_act),
            "mean_activation": pa.array(density * max_act * 0.3),
            "density": pa.array(density),
            "tokens": pa.array(np.full(count, 2_000_000, dtype=np.int64)),
            "dead": pa.array(np.zeros(count, dtype=bool)),
            "window_max_histogram": _list_array(pa.array(histogram.reshape(-1)), count, 17),
            "firing_windows": pa.array(np.full(count, 16, dtype=np.int32)),
            "nonfiring_windows": pa.array(np.full(count, 4, dtype=np.int32)),
        }
    )

    per = len(WINDOW_KINDS)
    rows = count * per
    picks = rng.integers(0, len(corpus), size=rows)
    token_ids = corpus[picks].reshape(-1)
    acts = rng.normal(0.0, 0.03, size=(rows, WINDOW_TOKENS)).astype(np.float32)
    firing = np.tile(np.array([k != "random" for k, _ in WINDOW_KINDS]), count)
    peaks = rng.integers(0, WINDOW_TOKENS, size=(rows, 3))
    peak_values = (rng.exponential(1.0, size=(rows, 3)) * np.repeat(max_act, per)[:, None]).astype(np.float32)
    for j in range(3):
        acts[np.arange(rows), peaks[:, j]] += np.where(firing, peak_values[:, j], 0.0).astype(np.float32)
    feature_col = np.repeat(np.array(ids, dtype=object), per)
    exemplars = pa.table(
        {
            "run_id": pa.array([RUN_ID] * rows),
            "feature_id": pa.array(feature_col),
            "kind": pa.array([k for _ in range(count) for k, _r in WINDOW_KINDS]),
            "rank": pa.array(np.tile(np.array([r for _, r in WINDOW_KINDS], dtype=np.int32), count)),
            "doc_id": pa.array(picks.astype(np.int64)),
            "token_offset": pa.array(np.zeros(rows, dtype=np.int64)),
            "token_ids": _list_array(pa.array(token_ids), rows, WINDOW_TOKENS),
            "tokens": _list_array(pa.array(vocabulary[token_ids], pa.string()), rows, WINDOW_TOKENS),
            "activations": _list_array(pa.array(acts.reshape(-1)), rows, WINDOW_TOKENS),
            "max_activation": pa.array(acts.max(axis=1)),
            "split": pa.array(np.tile(np.array(["explain", "score"]), rows // 2)),
        }
    )

    revised = rng.random(count) < 0.05
    explanation_ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, size=count + int(revised.sum()))]
    word_picks = rng.integers(0, len(WORDS), size=(len(explanation_ids), 6))
    texts = [
        f"the {WORDS[a]} {WORDS[b]} in {WORDS[c]} {WORDS[d]}, {WORDS[e]} {WORDS[f]}" for a, b, c, d, e, f in word_picks
    ]
    owner = ids + [f for f, r in zip(ids, revised, strict=True) if r]
    iteration = [0] * count + [1] * int(revised.sum())
    parents: list[str | None] = [None] * count + [explanation_ids[i] for i in range(count) if revised[i]]
    created = [start + timedelta(seconds=first + i) for i in range(count)]
    created += [start + timedelta(days=1, seconds=first + i) for i in range(count) if revised[i]]
    explanations = pa.table(
        {
            "id": pa.array(explanation_ids),
            "run_id": pa.array([RUN_ID] * len(owner)),
            "feature_id": pa.array(owner),
            "iteration": pa.array(iteration, pa.int32()),
            "parent_id": pa.array(parents, pa.string()),
            "explainer": pa.array(["openai:gpt-4o-mini"] * len(owner)),
            "prompt_hash": pa.array(["abc123abc123abc1"] * len(owner)),
            "text": pa.array(texts),
            "llm_call_id": pa.array([None] * len(owner), pa.string()),
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        }
    )

    n_expl = len(explanation_ids)
    base = rng.beta(2.0, 3.0, size=n_expl)
    score_cols: dict[str, list[object]] = {k: [] for k in ("explanation_id", "scorer", "metric", "value", "details")}
    pool = [", ".join(f"{v:.3f}" for v in rng.gamma(1.5, 0.6, size=WINDOW_TOKENS)) for _ in range(256)]
    pool_picks = rng.integers(0, len(pool), size=n_expl)
    for e in range(n_expl):
        p = float(rng.random())
        preds = pool[pool_picks[e]]
        sim = (
            f'{{"llm_call_ids": ["{explanation_ids[e]}"], "windows": [{{"kind": "top", "rank": 1, '
            f'"predicted": [{preds}]}}], "failed": 0, "digit_probability_mass": 0.91, "confidence": '
            f'{{"low": {base[e] - 0.08:.4f}, "high": {base[e] + 0.08:.4f}, "half_width": 0.08, '
            f'"p_vs_distractor": {p:.4f}, "resamples": 399, "like_chance": {str(p > 0.05).lower()}}}, '
            f'"non_firing_windows": 4}}'
        )
        emb = json.dumps({"positives": 10, "negatives": 10, "p_vs_distractor": round(p, 4)})
        for m, metric in enumerate(SIM_METRICS):
            value = float(np.clip(base[e] - 0.1 * m + rng.normal(0, 0.05), -1, 1))
            for name, v in ((metric, value), (metric + "_distractor", value * 0.2)):
                score_cols["explanation_id"].append(explanation_ids[e])
                score_cols["scorer"].append("simulation-all-at-once")
                score_cols["metric"].append(name)
                score_cols["value"].append(v)
                score_cols["details"].append(sim)
        auroc = float(np.clip(0.5 + base[e] * 0.5 + rng.normal(0, 0.1), 0, 1))
        for name, v in (("embedding_auroc", auroc), ("embedding_auroc_distractor", 0.5)):
            score_cols["explanation_id"].append(explanation_ids[e])
            score_cols["scorer"].append("embedding")
            score_cols["metric"].append(name)
            score_cols["value"].append(v)
            score_cols["details"].append(emb)
    n_scores = len(score_cols["metric"])
    scores = pa.table(
        {
            "id": pa.array([str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, size=n_scores)]),
            "run_id": pa.array([RUN_ID] * n_scores),
            **{k: pa.array(v) for k, v in score_cols.items()},
            "scorer_model": pa.array(["openai:gpt-4o-mini"] * n_scores),
            "created_at": pa.array([start + timedelta(days=2, seconds=first)] * n_scores, pa.timestamp("us", tz="UTC")),
        }
    )

    reviewed = np.flatnonzero(rng.random(count) < 0.06)
    verdicts = rng.choice(["accept", "accept", "reject", "edit", "note"], size=len(reviewed))
    reviews = pa.table(
        {
            "id": pa.array([f"scale-{first + i}" for i in reviewed]),
            "explanation_id": pa.array([explanation_ids[i] for i in reviewed]),
            "verdict": pa.array(list(verdicts)),
            "edited_text": pa.array(
                [
                    f"edited: the {WORDS[i % len(WORDS)]} tokens" if v == "edit" else None
                    for i, v in zip(reviewed, verdicts, strict=True)
                ],
                pa.string(),
            ),
            "reviewer": pa.array(["ann"] * len(reviewed)),
            "note": pa.array(["looks right" if v == "note" else None for v in verdicts], pa.string()),
            "created_at": pa.array(
                [start + timedelta(days=3, seconds=first + int(i)) for i in reviewed], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    return {
        "features": features,
        "exemplars": exemplars,
        "explanations": explanations,
        "scores": scores,
        "reviews": reviews,
    }


def build(db: Path, features: int, corpus_windows: int = 16_384, seed: int = 0, quiet: bool = False) -> Fixture:
    """Writes a run of `features` features into a new store at `db`; returns what it wrote and how fast."""
    if db.exists():
        raise SystemExit(f"{db} exists; pass a new path")
    began = time.perf_counter()
    store = Store(db)
    store.migrate()
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, 'completed', '{}', 'scale', 'fixture', NULL, NULL)",
            [RUN_ID, start, start + timedelta(days=1)],
        )
    corpus = _corpus(rng, corpus_windows)
    vocabulary = _vocabulary()
    exemplar_seconds = 0.0
    exemplar_cpu = 0.0
    exemplar_rows = 0
    order = _feature_order(features)
    for first in range(0, features, CHUNK_FEATURES):
        tables = _chunk_tables(rng, first, order[first : first + CHUNK_FEATURES], corpus, vocabulary, start)
        exemplars = tables.pop("exemplars")
        store.load_tables(tables)
        t0, c0 = time.perf_counter(), time.process_time()
        store.load_tables({"exemplars": exemplars})
        exemplar_seconds += time.perf_counter() - t0
        exemplar_cpu += time.process_time() - c0
        exemplar_rows += exemplars.num_rows
        if not quiet:
            print(f"  {first + CHUNK_FEATURES:,} features written", file=sys.stderr, flush=True)
    with store.connect() as con:
        con.execute("CHECKPOINT")
    return Fixture(
        features, exemplar_rows, exemplar_seconds, exemplar_cpu, time.perf_counter() - began, db.stat().st_size
    )


def main() -> None:
    """Builds one fixture and prints its size per feature and its exemplar write rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=10_000)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--corpus-windows", type=int, default=16_384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fixture = build(args.db, args.features, args.corpus_windows, args.seed)
    print(
        f"{fixture.features:,} features: {fixture.bytes / fixture.features:,.0f} bytes/feature "
        f"({fixture.bytes / 2**20:,.0f} MiB); exemplars {fixture.exemplar_rows:,} rows in "
        f"{fixture.exemplar_seconds:.2f} s = {fixture.exemplar_rows / fixture.exemplar_seconds:,.0f} rows/s "
        f"({fixture.exemplar_rows / fixture.exemplar_cpu_seconds:,.0f} rows per CPU-second); "
        f"total {fixture.total_seconds:.1f} s; metric {MAIN_METRIC}"
    )


if __name__ == "__main__":
    main()
