"""`autointerp bench-outputs`: the output-side benchmark (explainers fed input, output or both evidence,
scored on the input and the output side, over planted input and output features)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli.app import (
    CorpusOption,
    DistractorsOption,
    HeldoutOption,
    MaxWindowsOption,
    app,
    console,
    warn_each,
)
from autointerp.errors import AutointerpError
from autointerp.paths import check_output_path


@app.command("bench-outputs")
def bench_outputs(
    feature: Annotated[
        list[str] | None, typer.Option(help="Planted input features (by name, `autointerp bench --list`); repeat.")
    ] = None,
    output_feature: Annotated[
        list[str] | None, typer.Option(help="Planted output features (weekdays, months, digits, ...); repeat.")
    ] = None,
    explainer: Annotated[
        str | None, typer.Option(help="Explainer backend:model (default: a run's, explainer.model).")
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="One backend:model for simulation, detection and the output judge (default: a run's, "
            "score.simulator for simulation and score.judge for the others)."
        ),
    ] = None,
    corpus: CorpusOption = "builtin:python-docs",
    max_windows: MaxWindowsOption = 256,
    heldout: HeldoutOption = 3,
    distractors: DistractorsOption = 2,
    output_prompts: Annotated[int, typer.Option(help="Held-out prompts the output scorer continues.", min=1)] = 2,
    output_tokens: Annotated[int, typer.Option(help="Tokens per continuation.", min=1)] = 6,
    output: Annotated[Path, typer.Option(help="Markdown report.")] = Path("results/benchmarks/outputs-bench.md"),
) -> None:
    """Compare explainers fed input, output or both evidence, on input-side and output-side scores."""
    from autointerp.bench.outputs import (
        OutputBenchSettings,
        planted_outputs,
        render_output_report,
        run_output_bench,
        write_output_report,
    )
    from autointerp.bench.settings import BenchSettings
    from autointerp.corpus.sources import check_corpus
    from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES

    known = {f.name: f for f in BUILTIN_PLANTED_FEATURES}
    unknown = sorted(set(feature or []) - set(known))
    if unknown:
        raise AutointerpError(f"no planted feature named {', '.join(unknown)}; `autointerp bench --list`")
    inputs = [known[n] for n in feature] if feature else [known[n] for n in ("digits", "the") if n in known]
    try:
        outputs = planted_outputs(output_feature)
    except ValueError as exc:
        raise AutointerpError(str(exc)) from exc
    check_corpus(corpus)
    check_output_path(output, "--output", folder=False)
    base = BenchSettings(
        scorer=scorer,
        corpus=corpus,
        max_windows=max_windows,
        heldout_active=heldout,
        heldout_quiet=heldout,
        distractors=distractors,
    )
    settings = OutputBenchSettings(base=base, output_prompts=output_prompts, output_tokens=output_tokens)
    if explainer is not None:
        settings.explainer = explainer
    from autointerp.bench.outputs import scorer_specs
    from autointerp.cli.preflight import check_model_specs, names_by_spec

    named = [("--explainer", settings.explainer), *(("--scorer", spec) for spec in scorer_specs(base).values())]
    warn_each(check_model_specs(names_by_spec(named)))  # a bad model spec fails here, not after the windows are cut
    result = run_output_bench(inputs, outputs, settings)
    command = (
        "autointerp " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench-outputs"] else "autointerp bench-outputs"
    )
    path = write_output_report(result, output, command)
    console.print(render_output_report(result, command), highlight=False, markup=False, soft_wrap=True)
    console.print(f"report written to {path}", highlight=False, markup=False)
