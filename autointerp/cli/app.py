"""`autointerp ...`: run the loop, show results, inspect the config."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from autointerp.config import DEFAULT_DB_PATH, RunConfig, load_config
from autointerp.errors import AutointerpError, RunIncomplete
from autointerp.metric_names import DISTRACTOR_SUFFIX, HARD_SUFFIX
from autointerp.outputs.records import OutputEvidence
from autointerp.store.database import Store

EXIT_INCOMPLETE = 3
"""Exit code of a run that stopped with live features left undone (rerun to resume); 1 is a failure."""


def error_line(error: BaseException) -> str:
    """Returns the one line the CLI prints for an error: `error: message`, the message's lines joined."""
    message = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return f"error: {message or type(error).__name__}"


class _OneLineErrors(TyperGroup):
    """The CLI's one error handler: an AutointerpError from any command (bad input, a failed model,
    a Prefect start-up failure) is printed as one plain line on stderr, never read as Rich markup,
    and the command exits with code 1."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (its click base is private to typer)
        try:
            return super().invoke(ctx)
        except AutointerpError as exc:
            typer.echo(error_line(exc), err=True)
            incomplete = isinstance(exc, RunIncomplete) and exc.status == "incomplete"
            raise typer.Exit(code=EXIT_INCOMPLETE if incomplete else 1) from None


app = typer.Typer(
    cls=_OneLineErrors,
    help="Explain, score and test the features of a neural network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
if not console.is_terminal:
    console = Console(width=120)  # logs and pipes get the whole table, not 80 columns


def print_table(table: Table) -> None:
    """Prints a table; into a pipe or a log at its natural width, so no column is cut short."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(width=max(console.width, natural), file=console.file).print(table)


ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML run config.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config key, e.g. -s features.layer=10.")
]
DbOption = Annotated[Path, typer.Option("--db", help="DuckDB file.")]
# options of both planted benchmarks (`bench`, `bench-outputs`)
CorpusOption = Annotated[str, typer.Option(help="Corpus source.")]
MaxWindowsOption = Annotated[int, typer.Option(help="Windows cut from the corpus.", min=1)]
HeldoutOption = Annotated[int, typer.Option(help="Held-out activating (and as many non-activating) windows.", min=1)]
DistractorsOption = Annotated[int, typer.Option(help="Distractor descriptions per feature.", min=0)]


def warn_each(warnings: list[str]) -> None:
    """Prints each preflight warning as one plain line on stderr."""
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)


def resolve_run(store: Store, run_id: str | None) -> str:
    """Returns `run_id` when the store holds it, else the latest run; raises AutointerpError otherwise."""
    chosen = run_id or store.latest_run_id()
    if chosen is None:
        raise AutointerpError(f"{store.path} holds no runs yet; run `autointerp run` first")
    if not store.run_exists(chosen):
        raise AutointerpError(f"no run {chosen!r} in {store.path}; `autointerp runs` lists them")
    return chosen


HEADLINE_ORDER = ("simulation", "detection", "fuzzing", "embedding")
"""Which scorer's headline metric the run table sorts by when a run has several (the first with values)."""


def table_metric(store: Store, run_id: str) -> tuple[str, str]:
    """Returns (metric, scorer) that a run's table sorts by: the simulation score on top-and-random
    windows when the run has it, else the first headline metric with values of the other scorers."""
    from autointerp.metric_names import MAIN_METRIC
    from autointerp.score.registry import SCORERS

    order = [n for n in HEADLINE_ORDER if n in SCORERS.names()] + sorted(set(SCORERS.names()) - set(HEADLINE_ORDER))
    candidates = [(MAIN_METRIC, "simulation")] + [(m, n) for n in order for m in SCORERS.get(n).headline]
    for metric, scorer in candidates:
        if any(s["value"] is not None for s in store.scores(run_id, metric)):
            return metric, scorer
    return MAIN_METRIC, "simulation"


def print_explanations(store: Store, run_id: str, limit: int | None = None) -> None:
    """Prints a run's features with their explanation and score, best first (text shown as is, never as
    markup), by the metric `table_metric` picks, named in the title."""
    from autointerp.score.confidence import CHANCE_P, metric_confidence, score_text

    metric, scorer = table_metric(store, run_id)
    rows = store.explanation_table(run_id, metric)
    explanation_ids = {(e["feature_id"], e["text"]): e["id"] for e in store.explanations(run_id)}
    chance = {s["explanation_id"]: s["value"] for s in store.scores(run_id, metric + DISTRACTOR_SUFFIX)}
    confidence = {
        s["explanation_id"]: metric_confidence(metric, s["details"], s["value"]) for s in store.scores(run_id, metric)
    }
    band = ", ± half a 95% bootstrap interval" if any(confidence.values()) else ""
    table = Table(
        title=Text(
            f"run {run_id}: explanations by {scorer} score ({metric}{band}; "
            f"~chance: not better than its distractor, p > {CHANCE_P}, or not above 0)"
        )
    )
    table.add_column("feature", no_wrap=True)
    table.add_column("explanation", overflow="fold", min_width=30)
    for column in ("score", "density", "experiments"):
        table.add_column(column, justify="right")
    hard = {s["explanation_id"]: s["value"] for s in store.scores(run_id, metric + HARD_SUFFIX)}  # negatives=both
    hard_distractor = metric + HARD_SUFFIX + DISTRACTOR_SUFFIX
    hard_chance = {s["explanation_id"]: s["value"] for s in store.scores(run_id, hard_distractor)}
    if hard:
        table.add_column("hard negatives", justify="right")
    intruder = store.feature_scores(run_id, "intruder_accuracy")  # explanation-free: every feature has one
    if intruder:
        table.add_column("intruder (chance)", justify="right")
    outputs = store.output_evidence_by_feature(run_id)  # what each feature writes (`autointerp.outputs`)
    if outputs:
        table.add_column("promotes (direct path)", overflow="fold", max_width=32)
    for row in rows[:limit]:
        text = Text(row["explanation"]) if row["explanation"] is not None else Text("(none)", style="dim")
        explanation_id = explanation_ids.get((row["feature_id"], row["explanation"]))
        interval = confidence.get(explanation_id) if explanation_id else None
        score = score_text(row["score"], interval.half_width if interval else None, chance.get(explanation_id))
        if interval and interval.like_chance:
            score += " ~chance"
        cells: list[Text | str] = [Text(row["feature_id"]), text, score, f"{row['density']:.3f}"]
        cells.append(str(row["experiments"]))
        if hard:
            cells.append(score_text(hard.get(explanation_id or ""), None, hard_chance.get(explanation_id or "")))
        if intruder:
            cells.append(intruder_text(*intruder.get(row["feature_id"], (None, {}))))
        if outputs:
            cells.append(promotes_text(outputs.get(row["feature_id"])))
        table.add_row(*cells)
    print_table(table)


def promotes_text(evidence: OutputEvidence | None, count: int = 3) -> Text:
    """Returns the first `count` tokens a feature promotes on the direct path, quoted (`' Monday' ' Friday'`);
    `no output side` (dim) for a feature that writes nothing, `—` when none is stored."""
    if evidence is None:
        return Text("—")
    if evidence.no_output_reason is not None:
        return Text("no output side", style="dim")
    return Text(" ".join(repr(e.token) for e in evidence.promoted[:count]))


def intruder_text(value: float | None, details: dict[str, Any]) -> str:
    """Returns a feature's intruder accuracy as `show` prints it: `0.83 [0.44, 0.97] (0.25)`, `~chance` when
    not above chance at p < 0.05, `—` with no value."""
    if value is None:
        return "—"
    low, high = details.get("interval") or (None, None)
    text = f"{value:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")
    text += f" ({details.get('chance', 0):.2f})"
    p = details.get("p_vs_chance")
    return text + (" ~chance" if p is not None and p > 0.05 else "")


def load_checked_config(config: Path | None, set_: list[str] | None, *, experiments: bool | None = None) -> RunConfig:
    """Returns the run config after the preflight checks (store, models, subject, features, corpus);
    prints their warnings. Raises AutointerpError before any model is loaded."""
    from autointerp.cli.preflight import check_run

    run_config = load_config(config, set_ or [])
    warn_each(check_run(run_config, experiments=experiments))
    return run_config


INTERRUPTED = "interrupted; rerun the same command to resume"
"""The line a run stopped by Ctrl-C or SIGTERM prints (exit code 130 / 143)."""

INTERRUPT_RECORD_SECONDS = 3.0
"""How long a stopped run waits to mark itself `interrupted` in the store (another process may hold the file)."""

_run_in_progress: tuple[Path, str] | None = None
"""The store and run id of the `autointerp run` in progress, for `_stop_at_once` to mark interrupted."""


def _record_interruption(signum: int) -> None:
    """Marks the run in progress `interrupted` (a daemon thread: the signal may have cut a store call short
    on this thread), waiting at most INTERRUPT_RECORD_SECONDS; any failure leaves it as it was."""
    import signal
    import threading

    if _run_in_progress is None:
        return
    path, run_id = _run_in_progress
    from autointerp.store.run_lock import holds_run

    if not holds_run(path, run_id):  # refused as busy, or stopped before its lock: the run is another process's
        return
    reason = f"stopped by {signal.Signals(signum).name}; rerun the same command to resume"

    def mark() -> None:
        with suppress(Exception):
            Store(path).interrupt_run(run_id, reason)

    marker = threading.Thread(target=mark, name="mark-interrupted", daemon=True)
    marker.start()
    marker.join(INTERRUPT_RECORD_SECONDS)


def _stop_at_once(signum: int, frame: object) -> None:
    """Ends the command within a moment of Ctrl-C or SIGTERM, with one line and exit code 128 + signal,
    even while LLM calls are in flight (their threads would otherwise hold the exit until their timeouts).
    Nothing is half-written: each store write is one DuckDB transaction, a collection checkpoint is
    written to a staging file and renamed, and Prefect's temporary server dies with this process. A run in
    progress is marked `interrupted` first, so `autointerp runs` does not show it running."""
    import os
    import sys

    # the process's own stderr: while a progress bar shows, rich has `sys.stderr` write to its console
    stderr = sys.__stderr__ or sys.stderr
    if stderr.isatty():
        stderr.write("\x1b[?25h\n")  # a progress bar may have hidden the cursor
    _record_interruption(signum)
    stderr.write(f"{INTERRUPTED}\n")
    stderr.flush()
    os._exit(128 + signum)


@contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """While active, Ctrl-C (SIGINT) and SIGTERM end the command at once (`_stop_at_once`); the previous
    handlers come back after (main thread only; elsewhere nothing changes)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _stop_at_once) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def _prefect_leaves_sigterm() -> Iterator[None]:
    """While active, Prefect's flow engine keeps SIGTERM as it is (`_stop_at_once`) instead of swapping in
    its own handler, which raises inside the flow so that it unwinds: its thread pools would then wait for
    every LLM call in flight. Prefect's handler serves cancellation by a deployment's runner, which
    `autointerp run` does not use. Prefect must be configured (`start_prefect`) before this is entered."""
    import contextlib

    from prefect import flow_engine

    original = getattr(flow_engine, "capture_sigterm", None)
    if original is None:
        yield
        return
    flow_engine.capture_sigterm = contextlib.nullcontext  # type: ignore[assignment]
    try:
        yield
    finally:
        flow_engine.capture_sigterm = original


@app.command()
def run(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Run the labeling loop (collect, explain, score, experiment) and print the results."""
    with _stopping_on_signals():
        _run(config, set_)


def _run(config: Path | None, set_: list[str] | None) -> None:
    run_config = load_checked_config(config, set_)
    started = time.perf_counter()
    from autointerp.pipeline.prefect_env import hide_user_error_tracebacks, start_prefect

    start_prefect()
    from autointerp.flows.label_features import label_features

    hide_user_error_tracebacks()
    global _run_in_progress
    _run_in_progress = (run_config.store.path, run_config.resolved_run_id())
    try:
        with _prefect_leaves_sigterm():
            run_id = label_features(run_config.model_dump(mode="json"))
    except RunIncomplete as exc:  # the partial results are worth seeing above the error line
        print_explanations(Store(run_config.store.path), exc.run_id)
        raise
    store = Store(run_config.store.path)
    print_explanations(store, run_id)
    console.print(
        Text(
            f"run {run_id} finished in {time.perf_counter() - started:.0f} s; "
            f"results in {run_config.store.path.resolve()}"
        )
    )


@app.command()
def show(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: latest).")] = None,
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Print a run's explanations, sorted by score."""
    store = Store(db)
    print_explanations(store, resolve_run(store, run_id))


@app.command()
def investigate(
    feature_ids: Annotated[list[str], typer.Argument(help="Feature ids, e.g. smollm2-135m/mlp.15/417.")],
    run_id: Annotated[str | None, typer.Option("--run", help="Run id (default: latest).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Run experiment-and-revise rounds on chosen features of a run (the `investigate` flow)."""
    with _stopping_on_signals():
        _investigate(feature_ids, run_id, config, set_)


def _investigate(feature_ids: list[str], run_id: str | None, config: Path | None, set_: list[str] | None) -> None:
    run_config = load_checked_config(config, set_, experiments=True)
    store = Store(run_config.store.path)
    chosen = resolve_run(store, run_id)
    known = {f.id for f in store.features(chosen)}
    missing = [f for f in feature_ids if f not in known]
    if missing:
        raise AutointerpError(f"run {chosen} has no feature {missing[0]!r}; `autointerp show {chosen}` lists them")
    from autointerp.pipeline.prefect_env import hide_user_error_tracebacks, start_prefect

    start_prefect()
    from autointerp.flows.investigate import investigate as investigate_flow

    hide_user_error_tracebacks()
    with _prefect_leaves_sigterm():
        investigate_flow(run_config.model_dump(mode="json"), chosen, feature_ids)
    print_explanations(store, chosen)


@app.command()
def runs(db: DbOption = DEFAULT_DB_PATH) -> None:
    """List the runs in the database, newest first: status, progress, cost so far and errors.

    `skipped`: live features that fire in fewer than `collect.min_firing_windows` windows (not explained or
    scored); `few non-firing`: features scored on fewer non-firing windows than `collect.random_windows`;
    `shards` (sharded runs): shards done / running / failed over every stage, and how many were restarted."""
    store = Store(db)
    rows = store.run_progress()
    shards = store.shard_progress()
    table = Table(title=Text(f"runs in {db}"))
    columns = ["run", "created", "status", "explained", "skipped", "few non-firing", "scored", "experiments"]
    columns += ["llm calls", "failed", "cost USD"]
    if shards:
        columns.append("shards")
    for column in columns:
        table.add_column(column, no_wrap=column in ("run", "created"))
    table.add_column("error", overflow="fold", max_width=50)
    for row in rows:
        table.add_row(
            Text(row["id"]),
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            row["status"],
            f"{row['explained']}/{row['live_features']}",
            str(row["skipped_features"]),
            str(row["few_nonfiring"]),
            str(row["scored"]),
            str(row["experiments"]),
            str(row["llm_calls"]),
            str(row["failed_calls"]),
            f"{row['cost']:.4f}",
            *([_shard_summary(shards.get(row["id"], {}))] if shards else []),
            Text(row["error"] or ""),
        )
    print_table(table)


def _shard_summary(counts: dict[str, int]) -> str:
    """Returns e.g. `7 done, 1 running (2 restarts)` for a run's shards (all stages): their statuses,
    and the attempts started beyond each shard's first."""
    order = ("done", "running", "pending", "incomplete", "failed")
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
    restarts = counts.get("restarts", 0)
    if restarts:
        summary += f" ({restarts} restart{'s' if restarts != 1 else ''})"
    return summary


@app.command()
def costs(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: latest).")] = None,
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Summarise a run's LLM calls per role, backend and model: calls, errors, cache hits, tokens, cost."""
    store = Store(db)
    chosen = resolve_run(store, run_id)
    rows = store.llm_costs(chosen)
    table = Table(title=Text(f"run {chosen}: LLM calls"))
    table.add_column("role")
    table.add_column("backend:model", overflow="fold")
    for column in ("calls", "errors", "cached", "input tok", "output tok", "cost USD", "mean latency s"):
        table.add_column(column, justify="right")
    for row in rows:
        latency = row["mean_latency_s"]
        table.add_row(
            row["role"],
            Text(f"{row['backend']}:{row['model']}"),
            str(row["calls"]),
            str(row["errors"]),
            str(row["cached"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            f"{row['cost']:.4f}",
            "—" if latency is None else f"{latency:.3f}",
        )
    total = sum(row["cost"] for row in rows)
    table.add_section()
    table.add_row("total", "", str(sum(r["calls"] for r in rows)), "", "", "", "", f"{total:.4f}", "")
    print_table(table)


@app.command("config")
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the resolved run config (defaults + file + overrides) as JSON."""
    resolved: RunConfig = load_config(config, set_ or [])
    data: dict[str, Any] = resolved.model_dump(mode="json")
    data["run_id"] = resolved.resolved_run_id()
    console.print_json(json.dumps(data))


@app.command()
def check(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Run the checks `run` makes before it starts (store, models and keys, subject, features, corpus)."""
    run_config = load_checked_config(config, set_)
    console.print(Text(f"ok: {run_config.resolved_run_id()} can start"))


@app.command()
def setup(model: Annotated[str, typer.Option(help="Subject model to prepare.")] = "smollm2-135m") -> None:
    """Prepare the subject model (convert the embedded GGUF to a cached safetensors folder once)."""
    from autointerp.subject.locate import locate_model
    from autointerp.subject.model import prepare_model_folder

    locate_model(model)  # a name that is neither embedded, a file, a folder nor cached: one line, not "ready"
    folder, slug = prepare_model_folder(model)
    console.print(Text(f"{slug} ready at {folder}"))


# commands defined in their own modules register on `app` when imported
from autointerp.cli import bench_outputs, exchange, tools  # noqa: E402, F401
from autointerp.explaintrain.cli import train_explainer_command  # noqa: E402
from autointerp.simtrain.cli import train_simulator_command  # noqa: E402

app.command("train-simulator")(train_simulator_command)
app.command("train-explainer")(train_explainer_command)


def main() -> None:
    """Entry point of the `autointerp` command."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    app(prog_name="autointerp")


if __name__ == "__main__":
    main()
