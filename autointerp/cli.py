"""`autointerp ...`: run the loop, show results, inspect the config."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from autointerp.config import DEFAULT_DB_PATH, RunConfig, load_config
from autointerp.errors import AutointerpError
from autointerp.store import Store

app = typer.Typer(
    help="Explain, score and test the features of a neural network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
if not console.is_terminal:
    console = Console(width=120)  # logs and pipes get the whole table, not 80 columns

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML run config.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config key, e.g. -s features.layer=10.")
]
DbOption = Annotated[Path, typer.Option("--db", help="DuckDB file.")]


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def print_explanations(store: Store, run_id: str, limit: int | None = None) -> None:
    """Prints a run's features with their explanation and score, best first."""
    from autointerp.pipeline import MAIN_METRIC

    rows = store.explanation_table(run_id, MAIN_METRIC)
    table = Table(title=f"run {run_id}: explanations by simulation score ({MAIN_METRIC})")
    table.add_column("feature", no_wrap=True)
    table.add_column("explanation", overflow="fold", min_width=30)
    for column in ("score", "density", "experiments"):
        table.add_column(column, justify="right")
    for row in rows[:limit]:
        text = row["explanation"] if row["explanation"] is not None else "[dim](none)[/dim]"
        table.add_row(row["feature_id"], text, _fmt(row["score"]), f"{row['density']:.3f}", str(row["experiments"]))
    console.print(table)


@app.command()
def run(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Run the labeling loop (collect, explain, score, experiment) and print the results."""
    try:
        run_config = load_config(config, set_ or [])
        started = time.perf_counter()
        from flows.label_features import label_features

        run_id = label_features(run_config.model_dump(mode="json"))
        store = Store(run_config.store.path)
        print_explanations(store, run_id)
        console.print(
            f"run {run_id} finished in {time.perf_counter() - started:.0f} s; "
            f"results in {run_config.store.path.resolve()}",
            highlight=False,
        )
    except AutointerpError as exc:
        _fail(exc)


@app.command()
def show(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: latest).")] = None,
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Print a run's explanations, sorted by score."""
    try:
        store = Store(db)
        chosen = run_id or store.latest_run_id()
        if chosen is None:
            raise AutointerpError(f"{db} holds no runs yet; run `autointerp run` first")
        if not store.query("SELECT 1 FROM runs WHERE id = ?", [chosen]):
            raise AutointerpError(f"no run {chosen!r} in {db}; `autointerp runs` lists them")
        print_explanations(store, chosen)
    except AutointerpError as exc:
        _fail(exc)


@app.command()
def runs(db: DbOption = DEFAULT_DB_PATH) -> None:
    """List the runs in the database, newest first."""
    try:
        rows = Store(db).runs()
    except AutointerpError as exc:
        _fail(exc)
        return
    table = Table(title=f"runs in {db}")
    for column in ("run", "created", "status", "features", "explanations", "llm calls", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            row["status"],
            str(row["features"]),
            str(row["explanations"]),
            str(row["llm_calls"]),
            row["error"] or "",
        )
    console.print(table)


@app.command("config")
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the resolved run config (defaults + file + overrides) as JSON."""
    try:
        resolved: RunConfig = load_config(config, set_ or [])
    except AutointerpError as exc:
        _fail(exc)
        return
    data: dict[str, Any] = resolved.model_dump(mode="json")
    data["run_id"] = resolved.resolved_run_id()
    console.print_json(json.dumps(data))


@app.command()
def setup(model: Annotated[str, typer.Option(help="Subject model to prepare.")] = "smollm2-135m") -> None:
    """Prepare the subject model (convert the embedded GGUF to a cached safetensors folder once)."""
    try:
        from autointerp.subject.model import prepare_model_folder

        folder, slug = prepare_model_folder(model)
        console.print(f"{slug} ready at {folder}", highlight=False)
    except AutointerpError as exc:
        _fail(exc)


def main() -> None:
    """Entry point of the `autointerp` command."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    app(prog_name="autointerp")


if __name__ == "__main__":
    main()
