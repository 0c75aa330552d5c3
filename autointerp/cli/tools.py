"""`autointerp bench`, `schedule` and `train-sae`: the planted benchmark, scheduled runs and training a
sparse autoencoder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli.app import (
    ConfigOption,
    CorpusOption,
    DistractorsOption,
    HeldoutOption,
    MaxWindowsOption,
    SetOption,
    app,
    console,
    load_checked_config,
    warn_each,
)
from autointerp.errors import AutointerpError
from autointerp.paths import check_output_path


@app.command()
def bench(
    list_: Annotated[bool, typer.Option("--list", help="Print the planted features and exit.")] = False,
    planted: Annotated[Path | None, typer.Option(help="Python file defining PLANTED_FEATURES.")] = None,
    explainer: Annotated[
        list[str] | None, typer.Option(help="Explainer backend:model; repeat to compare side by side.")
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="One backend:model for every LLM scorer (default: a run's, score.simulator for simulation and "
            "score.judge for the judges)."
        ),
    ] = None,
    method: Annotated[list[str] | None, typer.Option(help="Scoring method; repeat (default: all four).")] = None,
    feature: Annotated[list[str] | None, typer.Option(help="Only these planted features (by name); repeat.")] = None,
    corpus: CorpusOption = "builtin:python-docs",
    window_tokens: Annotated[int, typer.Option(help="Tokens per window.", min=4)] = 12,
    max_windows: MaxWindowsOption = 4096,
    heldout: HeldoutOption = 3,
    distractors: DistractorsOption = 2,
    rounds: Annotated[int, typer.Option(help="Experiment-and-revise rounds per explanation (0: none).", min=0)] = 1,
    judge_windows_per_prompt: Annotated[
        int, typer.Option(help="Above 1: also judge this many windows per prompt and report the agreement.", min=1)
    ] = 1,
    simulation_prompt: Annotated[
        list[str] | None,
        typer.Option(help="All-at-once simulation prompt: zero-shot or few-shot; repeat to compare."),
    ] = None,
    explainer_variant: Annotated[
        list[str] | None,
        typer.Option(
            help="How each explainer writes: default, best-of-<k>, contrastive, or best-of-<k>+contrastive; "
            "repeat to compare (default: default)."
        ),
    ] = None,
    top_tokens: Annotated[
        bool | None,
        typer.Option(
            help="Weigh the list of the strongest tokens against each explainer's answer and keep the better, as a "
            "run does (default: a run's explainer.top_tokens_candidate); --no-top-tokens: the answer alone.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Markdown report.")] = Path("results/benchmarks/planted.md"),
    hard: Annotated[
        bool,
        typer.Option(
            "--hard",
            help="Harder tests: planted families and mixed features are added; the truth, a vague description and "
            "distractors are scored on random and on hard negatives, and the intruder test runs.",
        ),
    ] = False,
    intruder_windows: Annotated[int, typer.Option(help="Intruder test: windows per prompt (k).", min=3, max=10)] = 4,
    intruder_prompts: Annotated[int, typer.Option(help="Intruder test: prompts per feature.", min=1, max=100)] = 6,
) -> None:
    """Measure scorers and explainers against planted features with known descriptions."""
    from autointerp.bench import BenchSettings, explainer_variants, render_report, run_bench, write_report
    from autointerp.subject.planted import check_planted_features, load_planted_features

    features = load_planted_features(planted)
    if hard and planted is None:
        from autointerp.subject.planted_families import hard_planted_features

        features = hard_planted_features()
    if list_:
        for f in features:
            console.print(f"{f.name}\t{f.description}", highlight=False, markup=False, soft_wrap=True)
        return
    if feature:
        unknown = sorted(set(feature) - {f.name for f in features})
        if unknown:
            raise AutointerpError(f"no planted feature named {', '.join(unknown)}; `autointerp bench --list`")
        features = [f for f in features if f.name in feature]
    settings = BenchSettings(
        scorer=scorer,
        explainers=BenchSettings().explainers if explainer is None else explainer,
        corpus=corpus,
        window_tokens=window_tokens,
        max_windows=max_windows,
        heldout_active=heldout,
        heldout_quiet=heldout,
        distractors=distractors,
        rounds=rounds,
        judge_windows_per_prompt=judge_windows_per_prompt,
        top_tokens=BenchSettings().top_tokens if top_tokens is None else top_tokens,
    )
    if method:
        settings.methods = method
    elif hard:
        settings.methods = [*settings.methods, "intruder"]
    settings.hard, settings.intruder_windows, settings.intruder_prompts = hard, intruder_windows, intruder_prompts
    if simulation_prompt:
        bad = sorted(set(simulation_prompt) - {"zero-shot", "few-shot"})
        if bad:
            raise AutointerpError(f"unknown simulation prompt {bad[0]!r}; choose zero-shot or few-shot")
        settings.simulation_prompts = simulation_prompt  # type: ignore[assignment]
    if explainer_variant:
        settings.explainer_variants = explainer_variant
        explainer_variants(settings)  # an unknown variant fails here, before any model loads
    # the bench's own preflight: its models, corpus and planted functions, before the model loads
    from autointerp.cli.preflight import check_model_specs, names_by_spec
    from autointerp.corpus.sources import check_corpus

    named = [("--scorer", settings.scorer_for(method)) for method in settings.methods if method != "embedding"]
    if settings.weighs_top_tokens:  # the simulator weighs the list against each answer
        named.append(("--scorer", settings.scorer_for("simulation")))
    named += [("--explainer", spec) for spec in settings.explainers]
    warn_each(check_model_specs(names_by_spec(named)))
    check_corpus(corpus)
    check_output_path(output, "--output", folder=False)
    check_planted_features(features)
    result = run_bench(features, settings)
    path = write_report(result, output)
    console.print(render_report(result), highlight=False, markup=False, soft_wrap=True)
    console.print(f"report written to {path}", highlight=False, markup=False)


@app.command()
def schedule(
    config: ConfigOption = None,
    set_: SetOption = None,
    cron: Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 2 * * *" (02:00 daily).')] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between runs.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
) -> None:
    """Serve a Prefect deployment of label_features on a schedule; each run is incremental."""
    run_config = load_checked_config(config, set_)
    from autointerp.pipeline.prefect_env import start_prefect

    start_prefect()
    from autointerp.flows.schedule import build_deployment, serve_schedule

    data = run_config.model_dump(mode="json")
    build_deployment(data, cron=cron, interval=interval, name=name)  # validates before serving
    console.print(
        f"serving deployment scheduled_label_features/{name} ({cron or f'every {interval:g} s'}); Ctrl-C to stop",
        highlight=False,
        markup=False,
    )
    serve_schedule(data, cron=cron, interval=interval, name=name)


@app.command("train-sae")
def train_sae_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (SAELens layout).")] = Path(
        "results/sae/smollm2-135m-blocks.15.hook_resid_post"
    ),
    model: Annotated[str, typer.Option(help="Subject model.")] = "smollm2-135m",
    layer: Annotated[int, typer.Option(help="Block whose residual output (hook_resid_post) is read.", min=0)] = 15,
    corpus: CorpusOption = "builtin:python-docs",
    tokens: Annotated[int, typer.Option(help="Training tokens (10 % held out for the metrics).", min=64)] = 4096,
    expansion: Annotated[int, typer.Option(help="Latents per residual dimension.", min=1)] = 2,
    steps: Annotated[int, typer.Option(help="Optimizer steps.", min=1)] = 300,
    l1: Annotated[float, typer.Option(help="Sparsity penalty.", min=0.0)] = 0.5,
    device: Annotated[str, typer.Option(help="Torch device.")] = "cpu",
    format_: Annotated[
        str, typer.Option("--format", help="saelens (kind sae) or sparsify (kind sparsify; needs --k).")
    ] = "saelens",
    k: Annotated[int | None, typer.Option(help="TopK SAE: latents kept per token (no L1 penalty).", min=1)] = None,
) -> None:
    """Train a small SAE on a layer's residual stream; use it with features.kind=sae (or sparsify), path=OUT."""
    from autointerp.subject import load_subject_model
    from autointerp.subject.sae_train import SaeTrainingConfig, train_and_save_sae

    if not math.isfinite(l1):
        raise AutointerpError(f"--l1 must be a finite number (got {l1})")
    check_output_path(out, "--out", folder=True)
    subject = load_subject_model(model, device)
    from autointerp.subject.hooks import check_layer

    check_layer(subject, layer)
    settings = SaeTrainingConfig(
        layer=layer, corpus=corpus, tokens=tokens, expansion=expansion, steps=steps, l1_coefficient=l1, k=k
    )
    if format_ == "sparsify" and not out.name.startswith("layers."):
        out = out / f"layers.{layer}"  # sparsify names each dictionary's folder for its hook point
    metrics = train_and_save_sae(subject, settings, out, format_)
    console.print(
        f"SAE saved to {out}: fraction of variance unexplained {metrics.fvu:.3f}, L0 {metrics.l0:.1f}, "
        f"dead latents {metrics.dead_fraction:.1%} ({metrics.eval_tokens} held-out tokens)",
        highlight=False,
        markup=False,
    )
