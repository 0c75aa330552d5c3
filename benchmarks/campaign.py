"""Benchmark: a labeling campaign against an OpenAI-compatible server with a fixed latency.

    PYTHONPATH=. .venv/bin/python benchmarks/campaign.py [--features 1000] [--slow-features 20]
        [--windows 4] [--latency 0.5] [--rate-429 0.01]

1. Starts a loopback OpenAI-compatible server in its own process (asyncio, HTTP/1.1 keep-alive) that
   answers every request after a fixed latency and knows the right answer: feature i fires on one
   made-up word, the server explains it as "the word <w>", simulates 10 on that word and 0 elsewhere,
   says yes where the word is. It serves chat completions (generated text, and first-token
   `top_logprobs` for P("yes")) and vLLM-style `/v1/completions` with `echo` (prompt log-probabilities
   for all-at-once simulation). Token counts are those of a simple word/digit/punctuation tokenizer.
   A small share of requests gets HTTP 429 with `retry-after-ms`, which the client must retry.
2. Writes synthetic features to a fresh DuckDB per (stage, concurrency): 8 explanation windows of 32
   tokens each and `--windows` held-out windows (half firing, half not) per feature.
3. Runs each stage with the real pipeline (`run_explain` / `run_score`: feature pool, backend, recorder,
   limiter, store writes) at concurrency 1 (on `--slow-features` features: at 0.5 s a call that is what
   fits in minutes) and 16 and 64 (on `--features`): features/hour, calls and tokens per feature,
   client CPU per call, 429s retried; checks that every feature was explained / scored exactly once
   and that the scores are ~1.0 (the server knows the answer).
4. Client overhead per call: the same stages against the same server with no latency, where a call's
   wall time is all client (prompt, SDK, HTTP, recording, DuckDB) plus the server's few hundred µs.
Writes results/benchmarks/campaign.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.config import load_config  # noqa: E402
from autointerp.explain.stage import run_explain  # noqa: E402
from autointerp.llm import LLMSession  # noqa: E402
from autointerp.pipeline.pool import StageResult  # noqa: E402
from autointerp.records import Explanation, Rows  # noqa: E402
from autointerp.score.stage import run_score  # noqa: E402
from autointerp.store.database import Store  # noqa: E402
from tests.llm.loopback_server import VLLMResponder, split_tokens  # noqa: E402

RESULTS = ROOT / "results" / "benchmarks" / "campaign.md"
FILLER = (  # noqa: SIM905 (a sentence reads better than a list of 83 strings)
    "the of and to in is was for on that with as by at from this have are not be or it an which one all "
    "were when there can more has been their if will would into time about than only other some what new "
    "people after first also made could these two may then do any like over such where most through back "
    "years much before good well way even because very just those while last great state world still long"
).split()
WINDOW_TOKENS = 32
EXPLAIN_WINDOWS = 8
PRICE_IN, PRICE_OUT = 0.15, 0.60
"""gpt-4o-mini list price, USD per million input / output tokens."""
DELPHI_PER_100K = {"explanation": 16.0, "detection / fuzzing": 12.5, "simulation": 470.0}
"""EleutherAI's published cost per 1M features with gpt-4o-mini ($160, $125, $4,700), per 100k."""


# --------------------------------------------------------------------------------------------- server


def word_of(index: int) -> str:
    """Returns feature `index`'s made-up word (letters only: one token)."""
    letters = ""
    for _ in range(4):
        index, digit = divmod(index, 26)
        letters += chr(ord("a") + digit)
    return "zq" + letters


def chat_tokens(messages: list[dict[str, Any]]) -> int:
    """Returns the prompt tokens of a chat request: its words, digits and marks, plus 4 per message."""
    return sum(len(split_tokens(str(m["content"]))) + 4 for m in messages)


def knowing_chat(body: dict[str, Any], vllm: VLLMResponder) -> dict[str, Any]:
    """Returns the right chat answer to an explain, simulate or judge request."""
    messages = body["messages"]
    system = messages[0]["content"]
    user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    named = re.search(r"fires on the word (\w+)", user)
    word = named.group(1) if named else None
    if body.get("logprobs"):  # P("yes") of a one-window judge (or the backend's probe: "Say yes.")
        parts = re.split(r"Text(?: with marked tokens)?: ", user, maxsplit=1)
        says_yes = len(parts) < 2 or word in parts[1].split("\n")[0].split()
        text_answer = "yes" if says_yes else "no"
        answer = vllm.chat({**body, "messages": [{"role": "user", "content": text_answer}]})
    elif "predict how strongly" in system:
        lines = user.split("one per line:\n", 1)[1].split("\nCopy every token", 1)[0].splitlines()
        text_answer = "\n".join(f"{t}\t{10 if t.strip() == word else 0}" for t in lines)
        answer = vllm.chat(body)
    elif "several numbered texts" in system:
        texts = re.findall(r"^Text \d+(?: with marked tokens)?: (.*)$", user, re.MULTILINE)
        text_answer = "[" + ", ".join("1" if word in t.split() else "0" for t in texts) + "]"
        answer = vllm.chat(body)
    elif "You check descriptions" in system:
        text = re.split(r"Text(?: with marked tokens)?: ", user, maxsplit=1)[1].split("\n")[0]
        text_answer = "yes" if word in text.split() else "no"
        answer = vllm.chat(body)
    else:  # explain: the marked word
        marked = re.search(r"<<\s*(zq\w+)>>", user)
        text_answer = f"The neuron fires on the word {marked.group(1) if marked else 'nothing'}."
        answer = vllm.chat(body)
    answer["choices"][0]["message"]["content"] = text_answer
    completion = len(split_tokens(text_answer)) if not body.get("logprobs") else 1
    prompt = chat_tokens(messages)
    answer["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return answer


class CampaignServer:
    """The knowing server's event loop: fixed latency, injected 429s, request statistics."""

    def __init__(self, latency_s: float, rate_429: float, seed: int = 0) -> None:
        self.latency_s = latency_s
        self.rate_429 = rate_429
        self.rng = random.Random(seed)
        self.stats = {"requests": 0, "answered": 0, "429": 0, "in_flight": 0, "max_in_flight": 0}

        def value(prompt: str, line: str) -> int:
            named = re.search(r"fires on the word (\w+)", prompt)
            return 10 if named and line.strip() == named.group(1) else 0

        self.vllm = VLLMResponder(
            value=value, p_yes=lambda messages: 0.99 if messages[-1]["content"] == "yes" else 0.01
        )

    async def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path.endswith("/stats"):
            return 200, {}, dict(self.stats)
        self.stats["requests"] += 1
        if self.rng.random() < self.rate_429:
            self.stats["429"] += 1
            error = {"error": {"message": "rate limited (injected)", "type": "rate_limit", "param": None, "code": None}}
            return 429, {"retry-after-ms": "200"}, error
        self.stats["in_flight"] += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        finally:
            self.stats["in_flight"] -= 1
        self.stats["answered"] += 1
        if path.endswith("/chat/completions"):
            return 200, {}, knowing_chat(body, self.vllm)
        return 200, {}, self.vllm.completion(body)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                path = request_line.decode().split(" ")[1]
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else {}
                status, headers, answer = await self.answer(path, body)
                payload = json.dumps(answer).encode()
                head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Too Many Requests'}\r\n"
                head += f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                writer.write(head.encode() + payload)  # one write: no Nagle / delayed-ACK stall
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve(self) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=512)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()


class ServerProcess:
    """The knowing server in a child process (so its work does not share the client's GIL)."""

    def __init__(self, latency_s: float, rate_429: float) -> None:
        command = [sys.executable, __file__, "--serve", str(latency_s), str(rate_429)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def stats(self) -> dict[str, int]:
        """Returns the server's request counters."""
        request = urllib.request.Request(f"{self.url}/stats", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return dict(json.loads(answer.read()))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# ------------------------------------------------------------------------------------------ the runs


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
            ("score.methods=['simulation']", "score.simulation='all-at-once'"),
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


# ------------------------------------------------------------------------------------------ the report


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def render(args: argparse.Namespace, slow: list[Measured], fast: list[Measured], zero: list[Measured]) -> str:
    """Returns the Markdown report."""
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    command = (
        f"PYTHONPATH=. .venv/bin/python benchmarks/campaign.py --features {args.features} --slow-features "
        f"{args.slow_features} --windows {args.windows} --latency {args.latency} --rate-429 {args.rate_429}"
    )
    lines = [
        "# Labeling campaign over HTTP: throughput, calls, tokens, client overhead",
        "",
        f"`{command}`",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}; load average at the end {load} (the machine is shared: other work ran "
        "at the same time). The server runs in its own process on the same cores.",
        "",
        f"Server: OpenAI-compatible, loopback, HTTP/1.1 keep-alive, **{args.latency} s** per answer, "
        f"HTTP 429 (`retry-after-ms: 200`) on {args.rate_429:.0%} of requests; it knows the right answer. "
        f"Features: {EXPLAIN_WINDOWS} explanation windows and {args.windows} held-out windows (half firing) of "
        f"{WINDOW_TOKENS} tokens each; distractors off (they double every score stage's calls); response "
        "cache off. Each stage runs the real pipeline (`run_explain` / `run_score`) on a fresh DuckDB. "
        f"Concurrency 1 runs on {args.slow_features} features (at {args.latency} s a call, 1,000 would take "
        f"an hour per stage) and is reported per hour; 16 and 64 on {args.features}.",
        "",
        "## Throughput per stage",
        "",
        "| stage | concurrency | features | seconds | features/hour | vs concurrency 1 | calls/feature "
        "| input tokens/feature | output tokens/feature | client CPU ms/call | 429s retried | all once, scores ≈ 1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    base = {m.stage: m.per_hour for m in slow}
    for m in sorted(slow + fast, key=lambda m: ([s.stage for s in slow].index(m.stage), m.concurrency)):
        ok = "yes" if not m.checks else "NO: " + "; ".join(m.checks)
        if m.mean_value is not None and not m.checks:
            ok += f" (mean {m.mean_value:.3f})"
        lines.append(
            f"| {m.stage} | {m.concurrency} | {m.features} | {m.seconds:.1f} | {fmt(m.per_hour)} "
            f"| {m.per_hour / base[m.stage]:.1f}x | {m.calls / m.features:.2f} | {fmt(m.input_tokens / m.features)} "
            f"| {fmt(m.output_tokens / m.features, 1)} | {m.cpu_ms_per_call:.1f} | {m.server['429']} | {ok} |"
        )
    lines += goals(args, slow, fast, zero)
    lines += overhead_section(zero)
    lines += PROFILE.rstrip("\n").split("\n")
    lines += cost_section(args, fast)
    return "\n".join(lines) + "\n"


def goals(args: argparse.Namespace, slow: list[Measured], fast: list[Measured], zero: list[Measured]) -> list[str]:
    """Returns the goals table: measured against the targets of issue 12."""
    by = {(m.stage, m.concurrency): m for m in slow + fast}
    rows = ["", "## Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]
    for m in slow:
        if m.stage == "explain":
            continue
        ratio = by[(m.stage, 16)].per_hour / m.per_hour
        rows.append(
            f"| {m.stage}: concurrency 16 ≥ 12x concurrency 1 | {ratio:.1f}x | {'yes' if ratio >= 12 else 'no'} |"
        )
    for m in [m for m in fast if m.concurrency == 64]:
        rows.append(
            f"| client CPU < 5 ms per call at 64-way: {m.stage} | {m.cpu_ms_per_call:.1f} ms "
            f"| {'yes' if m.cpu_ms_per_call < 5 else 'no'} |"
        )
    generate = by[("simulation, generate-and-parse", 16)]
    at_once = by[("simulation, all at once over HTTP", 16)]
    ratio = generate.output_tokens / max(at_once.output_tokens, 1)
    shown = "∞" if not at_once.output_tokens else f"{ratio:.0f}x"
    rows.append(
        "| all-at-once over HTTP ≥ 4x fewer output tokens than generate-and-parse "
        f"| {fmt(generate.output_tokens / generate.features, 1)} vs {fmt(at_once.output_tokens / at_once.features, 1)}"
        f" per feature ({shown}) | {'yes' if ratio >= 4 else 'no'} |"
    )
    lost = [m for m in slow + fast if m.checks]
    rows.append(
        f"| no feature lost or duplicated, retried 429s never fail a call, scores ≈ 1.0 | "
        f"{sum(m.server['429'] for m in slow + fast)} 429s, {sum(m.errors for m in slow + fast)} failed calls, "
        f"{len(lost)} runs with a problem | {'yes' if not lost and not any(m.errors for m in slow + fast) else 'no'} |"
    )
    return rows


def overhead_section(zero: list[Measured]) -> list[str]:
    """Returns the client-overhead table (a server that answers at once)."""
    rows = [
        "",
        "## Client overhead per call (the same server with no latency, no 429s)",
        "",
        "Wall ms/call at concurrency 1 is everything a call costs besides the server's latency: building the",
        "prompt, the `openai` SDK, HTTP on loopback, the server's own work (~0.3 ms, in its process),",
        "recording the call and the DuckDB writes. Client CPU ms/call is the benchmark process's CPU time",
        "(every thread) per call; at 64-way on 2 shared cores it is the number that bounds throughput.",
        "",
        "| stage | concurrency | calls | wall ms/call | client CPU ms/call |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m in zero:
        rows.append(
            f"| {m.stage} | {m.concurrency} | {m.calls} | {1000 * m.seconds / m.calls:.1f} | {m.cpu_ms_per_call:.1f} |"
        )
    return rows


PROFILE = """
## Where a call's client time goes (py-spy)

`py-spy record --gil` of `run_stage` against the no-latency server, 300 features explained and 1,200
detection calls at concurrency 16 (2026-11-30, same machine, shared). Before the fixes in this change:
explain 38.4 ms wall / 18.3 ms CPU per call, detection 19.7 / 15.5. Found and fixed:

- `PromptTemplate.render` compiled the Jinja template on every call: 37% of the worker threads' CPU
  samples. Now compiled once per template source.
- The `openai` SDK's per-call parameter transform (`maybe_transform`, 18%) and its response models.
  The backends now post their JSON with the SDK client's `post()` (same auth, timeouts, error types,
  our retries) and read the JSON answer themselves.
- Choosing a distractor sorted every explanation of the run, per feature (22% at 300 features;
  quadratic in a campaign). `DistractorPool` sorts once and makes the same choice in O(log n).
- rich's progress refresh thread redrew the bar when output is not a terminal (7%). No live display
  off a terminal now.

After: explain 18.4 ms wall / 11.7 ms CPU per call, detection 11.2 / 8.1. What is left, per call: the
SDK client's `post` (request building, httpx transport and connection pool: ~40% of the samples), a
thread pool created per feature and candidate for its windows' calls (`parallel_map`, ~10%), building
prompts (explain: normalising activations and the top-token summary), recording the `LLMCall` and the
DuckDB write of each batch. The next steps would be one long-lived executor for window calls and
a plain `httpx` client for OpenAI-compatible servers; both are larger changes than this one.
"""


def cost_section(args: argparse.Namespace, fast: list[Measured]) -> list[str]:
    """Returns the cost table: measured calls and tokens per feature turned into hours and dollars."""
    rows = [
        "",
        f"## 100,000 features: hours and dollars (gpt-4o-mini list price, ${PRICE_IN}/M input, ${PRICE_OUT}/M output)",
        "",
        f"Calls and tokens per feature as measured above (concurrency 64; {args.windows} held-out windows per feature;",
        "the simulation and detection rows grow linearly with windows, and double with distractors). Hours: at the",
        f"measured 64-way rate, i.e. with a {args.latency} s server that is never the bottleneck. Token counts are",
        "the benchmark tokenizer's (words, digits and marks: close to a BPE tokenizer on English text).",
        "",
        "| stage | calls | input tokens | output tokens | hours at 64-way | USD | delphi's published USD per 100k "
        "(gpt-4o-mini) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    delphi = {
        "explain": DELPHI_PER_100K["explanation"],
        "simulation, generate-and-parse": DELPHI_PER_100K["simulation"],
        "simulation, all at once over HTTP": None,
        "detection, P(yes) over HTTP": DELPHI_PER_100K["detection / fuzzing"],
    }
    for m in [m for m in fast if m.concurrency == 64]:
        n = 100_000 / m.features
        usd = n * (m.input_tokens * PRICE_IN + m.output_tokens * PRICE_OUT) / 1e6
        published = delphi.get(m.stage)
        rows.append(
            f"| {m.stage} | {fmt(n * m.calls)} | {fmt(n * m.input_tokens / 1e6, 1)} M "
            f"| {fmt(n * m.output_tokens / 1e6, 2)} M "
            f"| {100_000 / m.per_hour:.1f} | {usd:,.2f} | {'—' if published is None else f'{published:,.2f}'} |"
        )
    rows += [
        "",
        "delphi's numbers: EleutherAI's blog post accompanying Paulo et al. 2024 (\"Automatically Interpreting",
        'Millions of Features in Large Language Models", https://blog.eleuther.ai/autointerp/) gives the cost per',
        "1M features with gpt-4o-mini as $160 (explanation), $125 (detection / fuzzing) and $4,700 (simulation),",
        "for prompts of about 397 (explanation), 725 (detection / fuzzing) and 24,075 (simulation) tokens per",
        "evaluation of 5 examples; shown here divided by 10. These figures were read from a secondary summary of",
        "that post (the post itself was not reachable from this machine); simulation there is generate-and-parse.",
        "OpenAI does not echo prompt log-probabilities, so the all-at-once row prices a vLLM-style server's",
        'tokens at gpt-4o-mini\'s price only for comparison. A P("yes") call generates one token, which the',
        "call record does not count (its prompt tokens are estimated at 4 characters each): add 1 output",
        "token per call.",
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--slow-features", type=int, default=20)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rate-429", type=float, default=0.01)
    parser.add_argument("--zero-features", type=int, default=200, help="features for the no-latency overhead runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("AUTOINTERP_LLM_TIMEOUT", "30")
    slow: list[Measured] = []
    fast: list[Measured] = []
    zero: list[Measured] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = ServerProcess(args.latency, args.rate_429)
        instant = ServerProcess(0.0, 0.0)
        try:
            for stage in stages(args.windows):
                for concurrency, count, into in [(1, args.slow_features, slow)] + [
                    (c, args.features, fast) for c in args.concurrency
                ]:
                    measured = run_stage(stage, server, concurrency, count, args.windows, folder)
                    into.append(measured)
                    print(
                        f"{stage.name} c{concurrency}: {measured.seconds:.1f} s, {measured.per_hour:,.0f}/h, "
                        f"{measured.cpu_ms_per_call:.1f} ms CPU/call, checks {measured.checks or 'ok'}",
                        flush=True,
                    )
                for concurrency in (1, 64):
                    zero.append(run_stage(stage, instant, concurrency, args.zero_features, args.windows, folder))
                    print(
                        f"  no latency c{concurrency}: {1000 * zero[-1].seconds / zero[-1].calls:.1f} ms/call",
                        flush=True,
                    )
        finally:
            server.close()
            instant.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(args, slow, fast, zero), encoding="utf-8")
    print(f"report written to {args.output}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(CampaignServer(float(sys.argv[2]), float(sys.argv[3])).serve())
    else:
        main()
