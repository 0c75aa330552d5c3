"""The campaign benchmark's Markdown report: throughput per stage, goals, client overhead, the profile,
and the cost of 100,000 features."""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from autointerp.pipeline.pool import StageResult
from benchmarks.campaign_runs import EXPLAIN_WINDOWS, WINDOW_TOKENS, Measured

PRICE_IN, PRICE_OUT = 0.15, 0.60
"""gpt-4o-mini list price, USD per million input / output tokens."""
DELPHI_PER_100K = {"explanation": 16.0, "detection / fuzzing": 12.5, "simulation": 470.0}
"""EleutherAI's published cost per 1M features with gpt-4o-mini ($160, $125, $4,700), per 100k."""


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def measurements(slow: list[Measured], fast: list[Measured], zero: list[Measured]) -> dict[str, list[dict[str, Any]]]:
    """Returns every measurement (all but the stage's tallies) as JSON-ready dicts, by kind of run."""
    plain = [f.name for f in fields(Measured) if f.name != "result"]
    return {
        kind: [{name: getattr(m, name) for name in plain} for m in measured]
        for kind, measured in (("slow", slow), ("fast", fast), ("zero", zero))
    }


def measured_from(saved: dict[str, list[dict[str, Any]]]) -> tuple[list[Measured], list[Measured], list[Measured]]:
    """Returns (slow, fast, zero) runs read back from `measurements` (without the stage's tallies)."""
    slow, fast, zero = (
        [Measured(**m, result=StageResult(m["stage"])) for m in saved[k]] for k in ("slow", "fast", "zero")
    )
    return slow, fast, zero


def before_after(
    before: dict[str, list[dict[str, Any]]], slow: list[Measured], fast: list[Measured], zero: list[Measured]
) -> list[str]:
    """Returns the table of client CPU per call and features per hour, before (`--before`) and after."""
    old_slow, old_fast, old_zero = measured_from(before)
    rows = [
        "## Client CPU per call: before and after",
        "",
        "| stage | concurrency | server latency | client CPU ms/call before | after | features/hour before | after |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for latency, new, old in (("yes", slow + fast, old_slow + old_fast), ("none", zero, old_zero)):
        by = {(m.stage, m.concurrency): m for m in old}
        for m in new:
            b = by.get((m.stage, m.concurrency))
            if b is None or m.concurrency == 1:
                continue
            rows.append(
                f"| {m.stage} | {m.concurrency} | {latency} | {b.cpu_ms_per_call:.1f} | {m.cpu_ms_per_call:.1f} "
                f"| {fmt(b.per_hour)} | {fmt(m.per_hour)} |"
            )
    return [*rows, ""]


def render(
    args: argparse.Namespace,
    slow: list[Measured],
    fast: list[Measured],
    zero: list[Measured],
    before: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """Returns the Markdown report (opening with the before / after table when `before` is given)."""
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    command = (
        f"PYTHONPATH=. .venv/bin/python benchmarks/campaign.py --features {args.features} --slow-features "
        f"{args.slow_features} --windows {args.windows} --latency {args.latency} --rate-429 {args.rate_429} "
        f"--zero-features {args.zero_features} --concurrency {' '.join(map(str, args.concurrency))}"
        + (f" --before {args.before}" if args.before else "")
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
        *(before_after(before, slow, fast, zero) if before is not None else []),
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

Then (2026-12-06, issue 26 part 6): `py-spy record -f raw` of the two simulation stages at 64-way against
the no-latency server, 200 features. Share of all samples: starting a thread pool per feature for its
window calls (`ThreadPoolExecutor.submit` starting threads, under `parallel_map`) 20%; the simulation
score's bootstrap interval (400 resamples, a `np.corrcoef` each, twice with the distractor) 14%; the SDK
client's `post` 8.6%; the DuckDB writes 5%. Fixed:

- One long-lived pool per width for every feature's window calls (`autointerp/llm/executor.py`); the
  backend's limiter still bounds the calls in flight.
- `openai-compatible` backends post with one keep-alive `httpx` client (`autointerp/llm/lean_http.py`):
  JSON bytes in, text out, failures mapped to the same retries; `openai:` keeps the SDK.
- The bootstrap computes every resample's pooled correlation from per-window sums in one matrix
  product: the same draws and the same numbers (ties within 1e-9 count as losses), 99 -> 4 ms per feature.
- The feature pool writes finished features with their call records once a second or per 2,048 rows
  (was 64: a DuckDB transaction every few features at 64-way), and flushes them when a stage is
  interrupted.

Then (2026-12-06, second pass): `cProfile` with a per-thread CPU clock (`time.thread_time`) around each
feature's work and the stage's main thread, 300 features at 64-way, no latency; and
`benchmarks/campaign_profile.py` for CPU per call by thread group. Found and fixed:

- `Record.to_row` was `dataclasses.asdict`, a deep copy of every value before the JSON dump: a call
  record's whole prompt, a simulation score's per-window details. It was the largest item of the main
  thread in every score stage. Rows are now a flat copy (lists copied, JSON fields dumped as before,
  a dataclass inside details still becomes a dict): 0.63 -> 0.10 ms per simulation score row, 0.10 ->
  0.02 ms per call record. The explain stage turned each of a feature's 8 windows into a dict the
  same way (0.23 -> 0.004 ms per window).
- The bootstrap drew its 400 resamples with `random.randrange`, 1,600 draws per feature, identical for
  every feature with as many windows (the seed is fixed). They are now drawn once per window count.
- The lean HTTP path for plain `http://` servers without a proxy uses one keep-alive `http.client`
  connection per calling thread instead of `httpx` (connection pool, `h11`, request models):
  `benchmarks/campaign_http.py` measured 0.81 -> 0.22 ms CPU per request on one thread, 0.87 -> 0.31 ms
  on 16 (shared machine). A connection the server closed while idle is replaced at once (no retry spent). HTTPS and
  proxied servers keep `httpx`.
- The explainer prompt normalised every window's activations twice (marked text, top-token summary);
  once now.

What is left, not in the client's code: each store read and each batch write opens a DuckDB connection
(about 16 ms of CPU per open on this machine; 20-30 per stage), which at 300 features is about 1 ms of
the explain stage's CPU per call.
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
