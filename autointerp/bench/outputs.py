"""The output-side benchmark (`autointerp bench-outputs`): explainers fed input, output or both kinds of
evidence, scored on the input side (simulation, detection) and the output side (the output scorer), over
planted input features and planted output features, in one table (as Gur-Arieh et al. 2025 report it).

Planted input features are functions of the tokens: they write nothing into the model, so they have no
output evidence (an explainer asked for it reads their input windows, and says so) and the output scorer
skips them with the reason. Planted output features are directions built from unembedding rows of known
token sets (`autointerp.outputs.planted`), read and written at a late block's residual output: their input
windows are where the subject model's residual stream points along them (each window's first
`AUTO_SKIPPED_TOKENS` tokens, the attention sink, are left out, as a run leaves them out), their output
evidence is the direct path and the steering change, and steering them makes the model say their tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from autointerp.bench.report import pair_auroc
from autointerp.bench.settings import BenchSettings
from autointerp.bench.windows import FeatureSet, feature_set
from autointerp.config import CorpusConfig, ExplainerConfig, LLMConfig, ScoreConfig
from autointerp.corpus.sources import iter_windows
from autointerp.explain.explainer import Evidence, explain_feature
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.outputs.direct import TokenText, direct_path
from autointerp.outputs.planted import PLANTED_OUTPUTS, PlantedOutput, planted_output_set
from autointerp.outputs.records import PLANTED_NO_OUTPUT, OutputEvidence
from autointerp.outputs.steering import neutral_prompts, steering_topk
from autointerp.progress import progress_bar
from autointerp.score.distractors import choose_distractors
from autointerp.score.output import OutputOptions
from autointerp.score.registry import SCORERS, SteeringTarget
from autointerp.score.scorers import primary_value, score_candidates
from autointerp.subject import SubjectModel, load_subject_model
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS
from autointerp.subject.planted import PlantedFeature
from autointerp.subject.sources import DirectionSource, FeatureSource, PlantedSource, skip_first_tokens

EVIDENCE: tuple[Evidence, ...] = ("input", "output", "both")
METHODS = ("simulation", "detection", "output")


@dataclass
class OutputBenchSettings:
    """What the output-side benchmark runs on (the windows' settings are `base`'s)."""

    base: BenchSettings = field(default_factory=lambda: BenchSettings(max_windows=256))
    explainer: str = field(default_factory=lambda: ExplainerConfig().model)
    """Explainer backend:model (default: a run's, `explainer.model`)."""
    output_prompts: int = 2
    """Held-out prompts the output scorer continues per feature."""
    output_tokens: int = 6
    """Tokens per continuation."""
    output_strength: float = 4.0
    """The output scorer steers by this x the feature's max activation."""
    steer_scale: float = 4.0
    """Steering evidence adds this x the feature's max activation."""
    steer_prompts: int = 4
    """Neutral corpus prompts the steering evidence is averaged over."""
    top_k: int = 10
    """Tokens kept per output-evidence list."""


@dataclass
class OutputBenchResult:
    """What the output-side benchmark measured."""

    settings: OutputBenchSettings
    sets: list[FeatureSet]
    evidence: dict[str, OutputEvidence]
    explanations: dict[str, dict[str, str | None]]
    """Evidence -> feature -> explanation (None: every attempt failed)."""
    scores: dict[str, dict[str, dict[str, float | None]]]
    """Method -> feature -> candidate ("truth", "distractor:<name>", "explainer:<evidence>") -> value."""
    skipped: dict[str, dict[str, str]]
    """Method -> feature -> why it gave no number (the output scorer on planted input features)."""
    seconds: dict[str, float]
    windows: int
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    """Method -> feature -> why the true description's value is undefined (not skipped)."""


def _cut(subject: SubjectModel, s: BenchSettings) -> tuple[list[list[int]], list[list[str]]]:
    cut = iter_windows(subject.tokenizer, s.corpus, window_tokens=s.window_tokens, max_windows=s.max_windows)
    ids = [w.token_ids for w in cut]
    return ids, [subject.decode_tokens(w) for w in ids]


def output_feature_sets(
    subject: SubjectModel, source: DirectionSource, outputs: list[PlantedOutput], ids: list[list[int]], s: BenchSettings
) -> list[FeatureSet]:
    """Returns each planted output feature's windows: its activations are the residual stream's projection on
    its direction (negative values set to 0; the unread first tokens, `AUTO_SKIPPED_TOKENS`, set to 0 and not
    scored by `feature_set`), from batched forward passes."""
    tables: list[dict[tuple[str, ...], list[float]]] = [{} for _ in outputs]
    for start in range(0, len(ids), s.batch_size):
        batch = ids[start : start + s.batch_size]
        acts = source.activations(torch.tensor(batch, dtype=torch.long)).clamp(min=0.0)  # [B, T, F]
        for row, token_ids in enumerate(batch):
            tokens = tuple(subject.decode_tokens(token_ids))
            for j in range(len(outputs)):
                tables[j][tokens] = acts[row, :, j].tolist()
    windows = [subject.decode_tokens(w) for w in ids]
    sets = []
    for j, planted in enumerate(outputs):
        feature = PlantedFeature(f"out:{planted.name}", planted.description, _lookup(tables[j]), kind="output")
        sets.append(feature_set(feature, windows, s, ids, unread=AUTO_SKIPPED_TOKENS))
    return sets


def _lookup(table: dict[tuple[str, ...], list[float]]) -> Callable[[Sequence[str]], list[float]]:
    """Returns an activation function that reads a window's precomputed activations."""
    return lambda tokens: table[tuple(tokens)]


def output_evidence(
    subject: SubjectModel, source: DirectionSource, sets: list[FeatureSet], settings: OutputBenchSettings
) -> dict[str, OutputEvidence]:
    """Returns the output evidence of the planted output features (direct path and steering change)."""
    writes = source.write_directions()
    assert writes is not None  # a direction at a residual hook writes its vector
    direct = direct_path(subject, writes.vectors, settings.top_k)
    corpus = CorpusConfig(source=settings.base.corpus)
    prompts = neutral_prompts(subject, corpus, settings.steer_prompts, 16)
    amounts = torch.tensor([settings.steer_scale * fs.max_activation for fs in sets])
    steered = steering_topk(subject, prompts, list(writes.hooks), writes.vectors, amounts, settings.top_k)
    text = TokenText(subject)
    found = {}
    for i, fs in enumerate(sets):
        found[fs.feature.name] = OutputEvidence(
            fs.feature.name,
            promoted=text.effects(direct.promoted_ids[i], direct.promoted_values[i]),
            suppressed=text.effects(direct.suppressed_ids[i], direct.suppressed_values[i]),
            steer_raised=text.effects(steered.raised_ids[i], steered.raised_values[i]),
            steer_lowered=text.effects(steered.lowered_ids[i], steered.lowered_values[i]),
            steer_scale=settings.steer_scale,
            steer_prompts=int(prompts.shape[0]),
        )
    return found


def run_output_bench(
    inputs: list[PlantedFeature], outputs: list[PlantedOutput], settings: OutputBenchSettings
) -> OutputBenchResult:
    """Runs the output-side benchmark and returns its numbers (no file is written)."""
    s = settings.base
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    subject = load_subject_model(s.subject, "cpu")
    ids, windows = _cut(subject, s)
    planted = planted_output_set(subject)
    indices = [planted.names.index(p.name) for p in outputs]
    source = DirectionSource(subject, planted.matrix, planted.hook, indices)
    input_sets = [feature_set(f, windows, s, ids) for f in inputs]
    output_sets = output_feature_sets(subject, source, outputs, ids, s)
    seconds["windows"] = time.perf_counter() - started
    started = time.perf_counter()
    evidence = {
        fs.feature.name: OutputEvidence(fs.feature.name, no_output_reason=PLANTED_NO_OUTPUT) for fs in input_sets
    }
    evidence.update(output_evidence(subject, source, output_sets, settings))
    seconds["output evidence"] = time.perf_counter() - started
    sets = input_sets + output_sets
    live = [fs for fs in sets if fs.skipped is None]
    steering: dict[str, FeatureSource] = {fs.feature.name: PlantedSource(subject, [fs.feature]) for fs in input_sets}
    for j, fs in enumerate(output_sets):
        direction = DirectionSource(subject, planted.matrix, planted.hook, [indices[j]])
        steering[fs.feature.name] = skip_first_tokens(direction, AUTO_SKIPPED_TOKENS)  # steered as a run steers
    recorder = CallRecorder("bench", LLMSession.from_settings(LLMConfig(cache=False)))
    explainer = get_backend(settings.explainer)
    explanations: dict[str, dict[str, str | None]] = {}
    for kind in EVIDENCE:
        started = time.perf_counter()
        texts: dict[str, str | None] = {}
        with progress_bar(f"explain from {kind} evidence", total=len(live), unit="features") as advance:
            for fs in live:
                outcome = explain_feature(
                    explainer,
                    recorder,
                    feature_id=fs.feature.name,
                    exemplars=fs.explain,
                    max_activation=fs.max_activation,
                    max_tokens=24,
                    temperature=0.0,
                    retries=1,
                    evidence=kind,
                    output=evidence[fs.feature.name],
                )
                texts[fs.feature.name] = outcome.explanation.text if outcome.explanation else None
                recorder.take()
                advance(1)
        explanations[kind] = texts
        seconds[f"explain {kind}"] = time.perf_counter() - started
    scorers = {method: get_backend(spec) for method, spec in scorer_specs(s).items()}
    scores: dict[str, dict[str, dict[str, float | None]]] = {m: {} for m in METHODS}
    skipped: dict[str, dict[str, str]] = {m: {} for m in METHODS}
    undefined: dict[str, dict[str, str]] = {}
    score_config = ScoreConfig(batch_size=s.batch_size, simulation_prior=s.simulation_prior)
    output_options = OutputOptions(settings.output_prompts, settings.output_strength, settings.output_tokens)
    for method in METHODS:
        options = output_options if method == "output" else SCORERS.get(method).options_type.from_config(score_config)
        started = time.perf_counter()
        with progress_bar(f"score {method}", total=len(live), unit="features") as advance:
            for fs in live:
                same_kind = [(f.feature.name, f.feature.description) for f in sets if f.feature.kind == fs.feature.kind]
                labels, texts_to_score = ["truth"], [fs.feature.description]
                for name, text in choose_distractors(fs.feature.name, same_kind, s.distractors):
                    labels.append(f"distractor:{name}")
                    texts_to_score.append(text)
                for kind in EVIDENCE:
                    if explanations[kind].get(fs.feature.name):
                        labels.append(f"explainer:{kind}")
                        texts_to_score.append(str(explanations[kind][fs.feature.name]))
                outcomes = score_candidates(
                    method,
                    texts_to_score,
                    fs.heldout,
                    backend=scorers[method],
                    recorder=recorder,
                    feature_id=fs.feature.name,
                    options=options,
                    steering=SteeringTarget(subject, steering[fs.feature.name], fs.max_activation),
                )
                recorder.take()
                if outcomes[0].details.get("skipped"):
                    skipped[method][fs.feature.name] = str(outcomes[0].details["skipped"])
                else:
                    scores[method][fs.feature.name] = {
                        label: primary_value(method, o) for label, o in zip(labels, outcomes, strict=True)
                    }
                    if scores[method][fs.feature.name]["truth"] is None:
                        why = next(iter(outcomes[0].undefined.values()), "undefined")
                        undefined.setdefault(method, {})[fs.feature.name] = why
                advance(1)
        seconds[f"score {method}"] = time.perf_counter() - started
    return OutputBenchResult(settings, sets, evidence, explanations, scores, skipped, seconds, len(windows), undefined)


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _cell(per: dict[str, dict[str, float | None]], label: str, names: set[str]) -> str:
    """Returns "mean (AUROC vs distractors)" of one candidate label over the features `names`."""
    mine = {n: v for n, v in per.items() if n in names}
    if not mine:
        return "—"
    mean = _mean([v.get(label) for v in mine.values()])
    if label.startswith("distractor"):
        return _fmt(_mean([x for v in mine.values() for k, x in v.items() if k.startswith("distractor:")]))
    area, pairs = pair_auroc(mine, label)
    return f"{_fmt(mean)} ({_fmt(area)})" if pairs else _fmt(mean)


def scorer_specs(settings: BenchSettings) -> dict[str, str]:
    """Returns the backend:model of each scoring method: `--scorer` for all, else a run's defaults (the
    simulator for simulation, the judge for detection and the output scorer, as `score.judge` in a run)."""
    return {method: settings.scorer_for(method) for method in METHODS}


def render_output_report(result: OutputBenchResult, command: str) -> str:
    """Returns the Markdown report: one table of evidence x (feature kind, scorer), then each feature."""
    s, b = result.settings, result.settings.base
    live = [fs for fs in result.sets if fs.skipped is None]
    inputs = {fs.feature.name for fs in live if fs.feature.kind != "output"}
    outputs = {fs.feature.name for fs in live if fs.feature.kind == "output"}
    lines = [
        "# Output-side benchmark: explainers fed input, output or both evidence",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: `{command}`",
        f"- explainer `{s.explainer}`; "
        + ", ".join(f"{method} `{spec}`" for method, spec in scorer_specs(b).items())
        + " (a local simulation all-at-once, a local detection and output judge from token probabilities)",
        f"- corpus `{b.corpus}`: {result.windows} windows of {b.window_tokens} tokens; per feature {b.explain_windows}"
        f" explanation windows, held out {b.heldout_active} activating + {b.heldout_quiet} non-activating;"
        f" {b.distractors} distractor descriptions (other planted features of the same kind)",
        f"- features: {len(inputs)} planted input, {len(outputs)} planted output (unembedding directions at"
        f" `blocks.{planted_layer()}.hook_resid_post`); output evidence: top {s.top_k} direct-path tokens,"
        f" steering x{s.steer_scale:g} max on {s.steer_prompts} corpus prompts",
        f"- output scorer: {s.output_prompts} held-out prompts, {s.output_tokens} tokens, steered by"
        f" {s.output_strength:g} x max activation; each pair judged in both orders",
        "- explainer rows: its answers as written, to compare the evidence it read; a run would also weigh the"
        " top-token list against the input and both answers (`explainer.top_tokens_candidate`, see `autointerp"
        " bench`)",
        "- time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
        "",
        "Each cell: mean score over the features (in brackets: AUROC vs distractors, the share of (candidate,",
        "distractor) pairs on the same feature that the candidate wins; 0.5 is chance). simulation = pooled",
        "correlation, detection = AUROC of P(yes), output = AUROC of P(steered continuation). The output scorer",
        "gives no number on planted input features (they cannot be steered: skipped with the reason).",
        "",
        "| description | input features: simulation | input features: detection | output features: simulation"
        " | output features: detection | output features: output |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = [("true description", "truth")] + [(f"explainer, {k} evidence", f"explainer:{k}") for k in EVIDENCE]
    rows.append(("distractors (chance)", "distractor"))
    for title, label in rows:
        cells = [
            _cell(result.scores["simulation"], label, inputs),
            _cell(result.scores["detection"], label, inputs),
            _cell(result.scores["simulation"], label, outputs),
            _cell(result.scores["detection"], label, outputs),
            _cell(result.scores["output"], label, outputs),
        ]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    reasons = sorted(set(result.skipped["output"].values()))
    if reasons:
        lines += ["", f"Output scorer skipped {len(result.skipped['output'])} features: " + "; ".join(reasons) + "."]
    for method, why in result.undefined.items():
        lines += [
            "",
            f"Undefined {method} values of true descriptions: " + "; ".join(f"{n}: {w}" for n, w in why.items()),
        ]
    lines += ["", "## Per feature", "", "| feature | kind | " + " | ".join(f"{k} evidence wrote" for k in EVIDENCE)]
    lines[-1] += " | output (truth) | top promoted tokens |"
    lines.append("| --- " * (4 + len(EVIDENCE)) + "|")
    for fs in result.sets:
        name = fs.feature.name
        if fs.skipped:
            lines.append(f"| {name}: {fs.feature.description} | {fs.feature.kind} | skipped: {fs.skipped} |")
            continue
        wrote = [(result.explanations[k].get(name) or "(failed)").replace("|", "\\|") for k in EVIDENCE]
        truth = result.scores["output"].get(name, {}).get("truth")
        promoted = ", ".join(repr(e.token) for e in result.evidence[name].promoted[:5]) or "—"
        lines.append(
            f"| {name}: {fs.feature.description} | {fs.feature.kind} | "
            + " | ".join(wrote)
            + f" | {_fmt(truth)} | {promoted.replace('|', chr(92) + '|')} |"
        )
    return "\n".join(lines) + "\n"


def planted_layer() -> int:
    """Returns the block the planted output directions are written at (SmolLM2-135M)."""
    from autointerp.outputs.planted import PLANTED_OUTPUT_LAYER

    return PLANTED_OUTPUT_LAYER


def write_output_report(result: OutputBenchResult, path: Path, command: str) -> Path:
    """Writes the Markdown report to `path` (creating folders); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_output_report(result, command), encoding="utf-8")
    return path


def planted_outputs(names: list[str] | None) -> list[PlantedOutput]:
    """Returns the planted output features named (all when None); ValueError naming the choices."""
    if not names:
        return list(PLANTED_OUTPUTS)
    known = {p.name: p for p in PLANTED_OUTPUTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no planted output feature {unknown[0]!r}; choose from {', '.join(known)}")
    return [known[n] for n in names]


__all__ = [
    "OutputBenchResult",
    "OutputBenchSettings",
    "planted_outputs",
    "render_output_report",
    "run_output_bench",
    "write_output_report",
]
