"""The campaign benchmark's runs: synthetic features written to a fresh DuckDB, each stage run by the real
pipeline against the knowing server at one concurrency (`run_stage`), and the checks that every feature
was done once and every score is ~1.0."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autointerp.config import load_config
from autointerp.explain.stage import run_explain
from autointerp.llm import LLMSession
from autointerp.pipeline.pool import StageResult
from autointerp.records import Explanation, Rows
from autointerp.score.stage import run_score
from autointerp.store.database import Store
from benchmarks.campaign_server import ServerProcess, word_of

FILLER = (  # noqa: SIM905 (a sentence reads better than a list of 83 strings)
    "the of and to in is was for on that with as by at from this have are not be or it an which one all "
    "were when there can more has been their if will would into time about than only other some what new "
    "people after first also made could these two may then do any like over such where most through back "
    "years much before good well way even because very just those while last great state world still long"
).split()
WINDOW_TOKENS = 32
EXPLAIN_WINDOWS = 8


def window(rng: random.Random, word: str | None) -> tuple[list[str], list[float]]:
    """Returns a 32-token window of filler words, with `word` (firing at 4.0) at a random place."""
    tokens = [" " + rng.choice(FILLER) for _ in range(WINDOW_TOKENS)]
    activations = [0.0] * WINDOW_TOKENS
    if word is not None:
        at = rng.randrange(1, WINDOW_TOKENS - 1)
        tokens[at], activations[at] = " " + word, 4.0
    return tokens, activations


def write_campaign(store: Store, run_id: str, count: int, windows: int, explained: bool) -> None:
    """Stores `count` features with their windows, and (`explained`) the right explanation of each."""
    store.migrate()
    store.start_run(run_id, {}, "benchmark", "benchmark", None)
    features, exemplars = [], []
    for i in range(count):
        fid = f"campaign/mlp.0/{i}"
        rng = random.Random(i)
        features.append(
            {"run_id": run_id, "id": fid, "model": "campaign", "hook": "mlp.0", "kind": "mlp", "idx": i,
             "max_activation": 4.0, "mean_activation": 0.01, "density": 0.01, "tokens": 10**6, "dead": False}
        )  # fmt: skip
        plan = [("explain", "top", True)] * EXPLAIN_WINDOWS + [("score", "top", True)] * (windows // 2)
        plan += [("score", "random", False)] * (windows - windows // 2)
        for rank, (split, kind, fires) in enumerate(plan):
            tokens, activations = window(rng, word_of(i) if fires else None)
            exemplars.append(
                {"run_id": run_id, "feature_id": fid, "kind": kind, "rank": rank, "doc_id": rank, "token_offset": 0,
                 "token_ids": list(range(WINDOW_TOKENS)), "tokens": tokens, "activations": activations,
                 "max_activation": max(activations), "split": split}
            )  # fmt: skip
    store.write_collection(run_id, features, exemplars)
    if explained:
        store.write_results(
            Rows(
                Explanation(run_id=run_id, feature_id=f"campaign/mlp.0/{i}", text=f"the word {word_of(i)}",
                            explainer="benchmark", prompt_hash="benchmark", llm_call_id=None)
                for i in range(count)
            )
        )  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """One stage of the campaign, as a run configures it."""

    name: str
    logprobs: str
    """`?logprobs=` of the model spec."""
    overrides: tuple[str, ...]
    metric: str | None
    """The metric checked to be ~1.0 (None: the explain stage, checked against the words)."""


def stages(windows: int) -> list[Stage]:
    """Returns the stages measured: explain, simulation (generate, all at once), detection (two ways)."""
    return [
        Stage("explain", "none", (), None),
        Stage(
            "simulation, generate-and-parse",
            "none",
            ("score.methods=['simulation']", "score.simulation='generate'"),
            "correlation_top_and_random",
        ),
        Stage(
            "simulation, all at once over HTTP",
            "prompt,answer",
            # as read: one request per window, the workload of campaign.md (the prior adds one per window)
            ("score.methods=['simulation']", "score.simulation='all-at-once'", "score.simulation_prior='keep'"),
            "correlation_top_and_random",
        ),
        Stage("detection, P(yes) over HTTP", "prompt,answer", ("score.methods=['detection']",), "detection_auroc"),
        Stage(
            f"detection, {windows} windows per prompt",
            "none",
            ("score.methods=['detection']", f"score.judge_windows_per_prompt={windows}"),
            "detection_balanced_accuracy",
        ),
    ]


@dataclass
class Measured:
    """One stage at one concurrency."""

    stage: str
    concurrency: int
    features: int
    seconds: float
    cpu_s: float
    calls: int
    input_tokens: int
    output_tokens: int
    mean_latency_s: float
    errors: int
    server: dict[str, int]
    result: StageResult
    checks: list[str] = field(default_factory=list)
    """What did not hold (empty: every feature once, every score ~1.0)."""
    mean_value: float | None = None

    @property
    def per_hour(self) -> float:
        """Returns features per hour."""
        return self.features / self.seconds * 3600

    @property
    def cpu_ms_per_call(self) -> float:
        """Returns the client process's CPU time (all threads) per call, in ms."""
        return 1000 * self.cpu_s / max(self.calls, 1)


def run_stage(
    stage: Stage, server: ServerProcess, concurrency: int, count: int, windows: int, folder: Path
) -> Measured:
    """Runs one stage on `count` fresh features at `concurrency`; returns what it measured."""
    slug = re.sub(r"\W+", "-", stage.name)
    db = folder / f"{slug}-c{concurrency}-{time.monotonic_ns()}.duckdb"
    store = Store(db)
    run_id = "campaign"
    write_campaign(store, run_id, count, windows, explained=stage.metric is not None)
    spec = f"openai-compatible:{server.url}/v1#campaign?logprobs={stage.logprobs}"
    config = load_config(
        None,
        [
            f"store.path='{db}'",
            f"explainer.model='{spec}'",
            f"score.simulator.model='{spec}'",
            f"score.judge.model='{spec}'",
            f"llm.concurrency={concurrency}",
            "llm.cache=false",
            "score.distractor=false",
            "explainer.top_tokens_candidate=false",  # the explain stage's calls are the explainer's alone
            *stage.overrides,
        ],
    )
    session = LLMSession.for_run(config.llm, store, run_id)
    run: Callable[..., StageResult] = run_score if stage.metric else run_explain
    before = server.stats()
    cpu, started = time.process_time(), time.perf_counter()
    result = run(config, store, run_id, session)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    after = server.stats()
    calls = store.query(
        "SELECT count(*) AS n, coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o, "
        "coalesce(avg(latency_s), 0) AS l, count(error) AS e FROM llm_calls WHERE run_id = ?",
        [run_id],
    )[0]
    measured = Measured(
        stage.name, concurrency, count, seconds, cpu_s, calls["n"], calls["i"], calls["o"], calls["l"], calls["e"],
        {k: after[k] - before[k] for k in ("requests", "429")} | {"max_in_flight": after["max_in_flight"]}, result,
    )  # fmt: skip
    measured.checks, measured.mean_value = check(store, run_id, stage, count, result)
    return measured


def check(store: Store, run_id: str, stage: Stage, count: int, result: StageResult) -> tuple[list[str], float | None]:
    """Returns (what failed, mean headline value): every feature done once, explanations right, scores ~1."""
    problems = [] if result.complete and result.done == count else [result.summary()]
    if stage.metric is None:
        rows = store.query(
            "SELECT feature_id, text FROM explanations WHERE run_id = ? AND explainer <> 'benchmark'", [run_id]
        )
        if len({r["feature_id"] for r in rows}) != len(rows) or len(rows) != count:
            problems.append(f"{len(rows)} explanations for {count} features")
        wrong = [r for r in rows if r["text"] != f"the word {word_of(int(r['feature_id'].rsplit('/', 1)[1]))}"]
        if wrong:
            problems.append(f"{len(wrong)} wrong explanations, e.g. {wrong[0]['text']!r}")
        return problems, 1.0 - len(wrong) / max(len(rows), 1)
    rows = store.query(
        "SELECT explanation_id, value FROM scores WHERE run_id = ? AND metric = ?", [run_id, stage.metric]
    )
    if len({r["explanation_id"] for r in rows}) != len(rows) or len(rows) != count:
        problems.append(f"{len(rows)} {stage.metric} rows for {count} explanations")
    values = [r["value"] for r in rows if r["value"] is not None]
    if len(values) != len(rows) or any(v < 0.99 for v in values):
        problems.append(
            f"{sum(v is None or v < 0.99 for v in (r['value'] for r in rows))} scores below 0.99 or undefined"
        )
    return problems, (sum(values) / len(values) if values else None)
