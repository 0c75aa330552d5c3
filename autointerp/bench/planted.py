"""The planted-feature benchmark: scorers and explainers measured against features whose truth is known.

Planted features are functions of the tokens, so no subject forward pass is needed: the corpus is cut
into windows, every planted feature's activations are computed on them, and each feature gets
explanation windows (top ranks) and held-out windows (top, spread across the activating windows, and
non-activating ones). Then, per scorer, the true description is scored against `distractors` other
planted features' descriptions on the same windows (how often it wins is the pairwise AUROC), and per
explainer, its explanation is scored the same way and compared with the truth by embedding similarity.
The report is a Markdown file with the date and the models.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.activations import ACTIVE_LEVEL, exact_density, normalize_activations
from autointerp.config import ExperimentConfig, LLMConfig, LLMRoleConfig
from autointerp.corpus.sources import iter_windows
from autointerp.errors import ConfigError
from autointerp.experiments.rounds import Experimenter, FeatureTarget
from autointerp.explain.best_of import BestOf, explain_best_of
from autointerp.explain.contrastive import split_for_contrast
from autointerp.explain.explainer import explain_feature
from autointerp.llm import CallRecorder, ChatBackend, LLMSession, get_backend
from autointerp.progress import progress_bar
from autointerp.score.distractors import choose_distractors
from autointerp.score.embedding import embed_texts
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.registry import SCORERS, SimulationPrompt
from autointerp.score.scorers import methods, primary_value, score_candidates
from autointerp.score.windows import HeldOutWindow
from autointerp.subject import load_subject_model
from autointerp.subject.features import PlantedSource
from autointerp.subject.planted import PlantedFeature

log = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    """What the benchmark runs on; the defaults finish in minutes on a 2-core CPU."""

    scorer: str = "local:smollm2-135m"
    """The model behind simulation, detection and fuzzing."""
    explainers: list[str] = field(default_factory=lambda: ["local:smollm2-135m"])
    """Explainers compared side by side."""
    methods: list[str] = field(default_factory=lambda: ["simulation", "detection", "fuzzing", "embedding"])
    """Scoring methods."""
    subject: str = "smollm2-135m"
    """Whose tokenizer cuts the corpus into tokens."""
    corpus: str = "builtin:python-docs"
    """Corpus source (as `corpus.source` in a run)."""
    window_tokens: int = 12
    """Tokens per window."""
    max_windows: int = 4096
    """Windows cut from the corpus."""
    explain_windows: int = 4
    """Windows shown to the explainer per feature."""
    heldout_active: int = 3
    """Held-out activating windows per feature (about half from the top, the rest spread below it)."""
    heldout_quiet: int = 3
    """Held-out non-activating windows per feature."""
    distractors: int = 2
    """Other features' descriptions scored against each truth."""
    batch_size: int = 16
    """Prompts per padded forward pass."""
    seed: int = 0
    """Seed for tie-breaking and sampling windows."""
    rounds: int = 1
    """Experiment-and-revise rounds on each explainer's explanation (0: none). Input and
    minimal-pair experiments; the explainer proposes them and revises."""
    judge_windows_per_prompt: int = 1
    """Above 1: detection and fuzzing are also judged with this many windows per prompt (a list answer),
    and the report gives their agreement with one window per prompt."""
    simulation_prompts: list[SimulationPrompt] = field(default_factory=lambda: ["zero-shot"])
    """All-at-once simulation prompts compared (`score.simulation_prompt`); the first also ranks best-of-k
    candidates. A prompt other than zero-shot is reported as method `simulation <prompt>`."""
    explainer_variants: list[str] = field(default_factory=lambda: ["default"])
    """How each explainer writes: `default`, `best-of-<k>`, `contrastive`, or both joined by `+`
    (`best-of-3+contrastive`); every explainer runs every variant."""
    best_of_temperature: float = 0.7
    """Sampling temperature of best-of-k candidates 2..k."""
    contrastive_windows: int = 3
    """Non-activating windows shown by the contrastive variant."""
    contrast_pool: int = 64
    """Non-activating corpus windows (none of them held out) the contrastive variant ranks by similarity."""


@dataclass(frozen=True)
class ExplainerVariant:
    """One explainer model and how it writes (`explainer.best_of`, `explainer.contrastive`)."""

    spec: str
    best_of: int = 1
    contrastive: bool = False

    @property
    def label(self) -> str:
        """Returns the report's name for it: `local:smollm2-135m best-of-3 contrastive`."""
        parts = [self.spec] + ([f"best-of-{self.best_of}"] if self.best_of > 1 else [])
        return " ".join(parts + (["contrastive"] if self.contrastive else []))


def parse_variant(spec: str, variant: str) -> ExplainerVariant:
    """Returns the variant named like `default`, `best-of-3`, `contrastive` or `best-of-3+contrastive`;
    raises ConfigError for anything else."""
    best_of, contrastive = 1, False
    for part in variant.split("+"):
        if part.startswith("best-of-") and part[8:].isdigit() and 1 <= int(part[8:]) <= 16:
            best_of = int(part[8:])
        elif part == "contrastive":
            contrastive = True
        elif part != "default":
            raise ConfigError(
                f"unknown explainer variant {variant!r}; use default, best-of-<k> (k 1-16), contrastive, or a + of them"
            )
    return ExplainerVariant(spec, best_of, contrastive)


def explainer_variants(settings: BenchSettings) -> list[ExplainerVariant]:
    """Returns every (explainer, variant) the benchmark runs, explainers first."""
    return [parse_variant(spec, v) for spec in settings.explainers for v in settings.explainer_variants]


def score_columns(settings: BenchSettings) -> list[tuple[str, str, SimulationPrompt]]:
    """Returns (report label, scoring method, simulation prompt) per scorer compared: simulation once per
    prompt (`simulation`, `simulation few-shot`), every other method once."""
    columns: list[tuple[str, str, SimulationPrompt]] = []
    for method in settings.methods:
        prompts: list[SimulationPrompt] = settings.simulation_prompts if method == "simulation" else ["zero-shot"]
        for prompt in prompts:
            label = method if prompt == "zero-shot" or method != "simulation" else f"{method} {prompt}"
            columns.append((label, method, prompt))
    return columns


@dataclass
class FeatureSet:
    """One planted feature's windows and statistics on the corpus."""

    feature: PlantedFeature
    density: float
    """Share of corpus tokens that fire (>= FIRES_FRACTION x max), exact: every activation is in memory."""
    max_activation: float
    explain: list[dict[str, Any]]
    """Explanation windows: tokens, token_ids, activations, rank."""
    heldout: list[HeldOutWindow]
    skipped: str | None = None
    quiet: list[dict[str, Any]] = field(default_factory=list)
    """Non-activating windows none of which is held out: the contrastive variant's candidates."""


@dataclass
class Investigated:
    """One explainer's experiment rounds on one feature."""

    revised: str | None
    """The last revision that changed the text (None: no round changed it)."""
    verdicts: list[tuple[str, str]]
    """(experiment kind, verdict) of every experiment, in order."""


@dataclass
class JudgeAgreement:
    """One judging method run one window per prompt and several per prompt, on the same candidates."""

    windows: int = 0
    """Judged items (windows or markings, over every candidate description)."""
    compared: int = 0
    """Items both modes answered."""
    same: int = 0
    """Items where both modes said the same yes / no."""
    failed_single: int = 0
    """Items whose one-per-prompt call failed."""
    failed_batched: int = 0
    """Items whose list answer failed (the call failed or the list did not parse)."""
    calls_single: int = 0
    calls_batched: int = 0
    batched_scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Feature -> candidate label -> the batched mode's balanced accuracy."""

    @property
    def share(self) -> float | None:
        """Returns the share of items both modes answered on which they agree (None: none compared)."""
        return self.same / self.compared if self.compared else None

    def add(self, single: list[ScoreOutcome], batched: list[ScoreOutcome], calls: tuple[int, int]) -> None:
        """Counts one feature's outcomes of both modes (same candidates, same order)."""
        self.calls_single += calls[0]
        self.calls_batched += calls[1]
        for one, many in zip(single, batched, strict=True):
            key = "windows" if "windows" in one.details else "items"
            for a, b in zip(one.details.get(key, []), many.details.get(key, []), strict=True):
                self.windows += 1
                self.failed_single += a["p_yes"] is None
                self.failed_batched += b["p_yes"] is None
                if a["p_yes"] is not None and b["p_yes"] is not None:
                    self.compared += 1
                    self.same += (a["p_yes"] > 0.5) == (b["p_yes"] > 0.5)


@dataclass
class BenchResult:
    """Everything the report shows."""

    settings: BenchSettings
    features: list[FeatureSet]
    # method -> feature name -> candidate label ("truth", "distractor:<name>", "explainer:<spec>") -> value
    scores: dict[str, dict[str, dict[str, float | None]]]
    explanations: dict[str, dict[str, str | None]]  # explainer -> feature -> text (None: failed)
    similarity: dict[str, dict[str, tuple[float, bool]]]  # explainer -> feature -> (cos to truth, nearest)
    seconds: dict[str, float]
    windows: int
    investigated: dict[str, dict[str, Investigated]] = field(default_factory=dict)  # explainer -> feature ->
    revised_similarity: dict[str, dict[str, tuple[float, bool]]] = field(default_factory=dict)
    agreement: dict[str, JudgeAgreement] = field(default_factory=dict)  # judging method -> batched vs single


def build_feature_sets(features: list[PlantedFeature], settings: BenchSettings) -> tuple[list[FeatureSet], int]:
    """Returns each feature's explanation and held-out windows, and how many corpus windows were cut."""
    subject = load_subject_model(settings.subject, "cpu")
    cut = iter_windows(
        subject.tokenizer, settings.corpus, window_tokens=settings.window_tokens, max_windows=settings.max_windows
    )
    ids = [w.token_ids for w in cut]
    windows = [subject.decode_tokens(w) for w in ids]
    sets = [feature_set(f, windows, settings, ids) for f in features]
    return sets, len(windows)


def feature_set(
    feature: PlantedFeature, windows: list[list[str]], settings: BenchSettings, token_ids: list[list[int]] | None = None
) -> FeatureSet:
    """Returns one feature's windows: explanation windows at even top ranks, held-out ones around them."""
    activations = []
    for tokens in windows:
        acts = [float(a) for a in feature.activations(tokens)]
        if len(acts) != len(tokens) or any(a < 0 for a in acts):
            raise ConfigError(f"planted feature {feature.name!r} must return one activation >= 0 per token")
        activations.append(acts)
    max_activation = max((max(a) for a in activations if a), default=0.0)
    density = exact_density(activations, max_activation)
    if max_activation <= 0:
        reason = f"never fires on the {len(windows)} corpus windows"
        return FeatureSet(feature, density, max_activation, [], [], skipped=reason)
    levels = [normalize_activations(a, max_activation) for a in activations]
    rng = random.Random(f"{settings.seed}:{feature.name}")
    keys = {i: rng.random() for i in range(len(windows))}
    active = sorted(
        (i for i, lv in enumerate(levels) if max(lv) >= ACTIVE_LEVEL),
        key=lambda i: (-max(activations[i]), -sum(activations[i]), keys[i]),
    )
    quiet = sorted((i for i, lv in enumerate(levels) if max(lv) < ACTIVE_LEVEL), key=lambda i: keys[i])
    explain = active[0 : 2 * settings.explain_windows : 2]
    top_n = (settings.heldout_active + 1) // 2
    top = active[1 : 2 * top_n : 2][:top_n]
    rest = [i for i in active if i not in set(explain) | set(top)]
    spread_n = min(settings.heldout_active - len(top), len(rest))
    spread = [rest[round(k * (len(rest) - 1) / max(spread_n - 1, 1))] for k in range(spread_n)] if spread_n else []
    negatives = quiet[: settings.heldout_quiet]
    contrast_pool = quiet[settings.heldout_quiet : settings.heldout_quiet + settings.contrast_pool]
    if not negatives:  # dense: every window fires somewhere; random windows it is, and scorers flag it
        used = set(explain) | set(top) | set(spread)
        negatives = sorted((i for i in range(len(windows)) if i not in used), key=lambda i: keys[i])
        negatives = negatives[: settings.heldout_quiet]
    heldout = (
        [HeldOutWindow(windows[i], levels[i], "top", r) for r, i in enumerate(top)]
        + [HeldOutWindow(windows[i], levels[i], "quantile", r) for r, i in enumerate(spread)]
        + [HeldOutWindow(windows[i], levels[i], "random", r) for r, i in enumerate(negatives)]
    )
    return FeatureSet(
        feature,
        density,
        max_activation,
        [
            {
                "tokens": windows[i],
                "activations": activations[i],
                "token_ids": token_ids[i] if token_ids else [],
                "rank": rank,
            }
            for rank, i in enumerate(explain)
        ],
        heldout,
        quiet=[
            {"tokens": windows[i], "activations": activations[i], "kind": "random", "rank": rank}
            for rank, i in enumerate(contrast_pool)
        ],
    )


def run_bench(features: list[PlantedFeature], settings: BenchSettings) -> BenchResult:
    """Runs the benchmark and returns its numbers (no file is written)."""
    for method in settings.methods:
        if method not in methods():
            raise ConfigError(f"unknown scoring method {method!r}; choose from {', '.join(methods())}")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    sets, n_windows = build_feature_sets(features, settings)
    seconds["windows"] = time.perf_counter() - started
    live = [s for s in sets if s.skipped is None]
    recorder = CallRecorder("bench", LLMSession.from_settings(LLMConfig(cache=False)))
    variants = explainer_variants(settings)
    columns = score_columns(settings)
    needs_llm = [m for m in settings.methods if m != "embedding"] or any(v.best_of > 1 for v in variants)
    scorer = get_backend(settings.scorer) if needs_llm else None
    explanations: dict[str, dict[str, str | None]] = {}
    for variant in variants:
        backend = get_backend(variant.spec)
        started = time.perf_counter()
        texts: dict[str, str | None] = {}
        with progress_bar(f"explain {variant.label}", total=len(live), unit="features") as advance:
            for fs in live:
                texts[fs.feature.name] = explain_planted(fs, variant, backend, scorer, recorder, settings)
                advance(1)
        explanations[variant.label] = texts
        seconds[f"explain {variant.label}"] = time.perf_counter() - started
    investigated: dict[str, dict[str, Investigated]] = {}
    if settings.rounds:
        for variant in variants:
            started = time.perf_counter()
            texts = explanations[variant.label]
            investigated[variant.label] = investigate_planted(live, texts, variant.spec, settings, recorder)
            seconds[f"experiments {variant.label}"] = time.perf_counter() - started
    descriptions = [(f.name, f.description) for f in features]
    scores: dict[str, dict[str, dict[str, float | None]]] = {label: {} for label, _, _ in columns}
    agreement: dict[str, JudgeAgreement] = {}
    for column, method, prompt in columns:
        compare = settings.judge_windows_per_prompt > 1 and SCORERS.get(method).role == "judge"
        started = time.perf_counter()
        with progress_bar(f"score {column}", total=len(live), unit="features") as advance:
            for fs in live:
                labels = ["truth"]
                texts_to_score = [fs.feature.description]
                for name, text in choose_distractors(fs.feature.name, descriptions, settings.distractors):
                    labels.append(f"distractor:{name}")
                    texts_to_score.append(text)
                for name, texts in explanations.items():
                    if texts.get(fs.feature.name):
                        labels.append(f"explainer:{name}")
                        texts_to_score.append(str(texts[fs.feature.name]))
                    done = investigated.get(name, {}).get(fs.feature.name)
                    if done and done.revised:
                        labels.append(f"revised:{name}")
                        texts_to_score.append(done.revised)
                before = len(recorder.rows)
                outcomes = score_candidates(
                    method,
                    texts_to_score,
                    fs.heldout,
                    backend=scorer,
                    recorder=recorder,
                    feature_id=fs.feature.name,
                    simulation_prompt=prompt,
                    batch_size=settings.batch_size,
                )
                scores[column][fs.feature.name] = {
                    label: primary_value(method, o) for label, o in zip(labels, outcomes, strict=True)
                }
                if compare:
                    single_calls, before = len(recorder.rows) - before, len(recorder.rows)
                    batched = score_candidates(
                        method,
                        texts_to_score,
                        fs.heldout,
                        backend=scorer,
                        recorder=recorder,
                        feature_id=fs.feature.name,
                        judge_windows_per_prompt=settings.judge_windows_per_prompt,
                    )
                    tally = agreement.setdefault(method, JudgeAgreement())
                    tally.add(outcomes, batched, (single_calls, len(recorder.rows) - before))
                    tally.batched_scores[fs.feature.name] = {
                        label: o.values.get(f"{method}_balanced_accuracy")
                        for label, o in zip(labels, batched, strict=True)
                    }
                recorder.take()  # the benchmark keeps numbers, not call rows
                advance(1)
        seconds[f"score {column}"] = time.perf_counter() - started
    similarity = explanation_similarity(features, explanations)
    revisions = {spec: {n: i.revised for n, i in done.items() if i.revised} for spec, done in investigated.items()}
    revised_similarity = explanation_similarity(features, revisions)  # type: ignore[arg-type]
    return BenchResult(
        settings,
        sets,
        scores,
        explanations,
        similarity,
        seconds,
        n_windows,
        investigated,
        revised_similarity,
        agreement,
    )


def explain_planted(
    fs: FeatureSet,
    variant: ExplainerVariant,
    backend: ChatBackend,
    simulator: ChatBackend | None,
    recorder: CallRecorder,
    settings: BenchSettings,
) -> str | None:
    """Returns the explanation `variant` writes for one feature (None: every attempt failed). Contrastive:
    the non-activating windows come from `fs.quiet`, never from the held-out ones; best-of-k: candidates
    are simulated on the windows the explainer saw."""
    activating, contrast = fs.explain, None
    if variant.contrastive:
        pool = fs.explain + fs.quiet
        activating, contrast = split_for_contrast(pool, fs.max_activation, settings.contrastive_windows)
    asked: dict[str, Any] = {
        "feature_id": fs.feature.name,
        "exemplars": activating,
        "max_activation": fs.max_activation,
        "max_tokens": 24,
        "temperature": 0.0,
        "retries": 1,
        "contrast": contrast,
    }
    if variant.best_of > 1 and simulator is not None:
        best = BestOf(
            k=variant.best_of,
            temperature=settings.best_of_temperature,
            simulator=simulator,
            simulation_prompt=settings.simulation_prompts[0],
            batch_size=settings.batch_size,
        )
        outcome = explain_best_of(backend, recorder, best, **asked)
    else:
        outcome = explain_feature(backend, recorder, **asked)
    recorder.take()  # the benchmark keeps texts, not call rows
    return outcome.explanation.text if outcome.explanation else None


def investigate_planted(
    live: list[FeatureSet], texts: dict[str, str | None], spec: str, settings: BenchSettings, recorder: CallRecorder
) -> dict[str, Investigated]:
    """Returns, per feature with an explanation, the experiment rounds run on it: input and minimal-pair
    experiments measured on the planted feature itself, proposed and revised by explainer `spec`."""
    subject = load_subject_model(settings.subject, "cpu")
    backend = get_backend(spec)
    experiments = ExperimentConfig(
        kinds=["input", "minimal_pair"], proposer=LLMRoleConfig(model=spec, max_tokens=40, retries=1)
    )
    experimenter = Experimenter(experiments, subject, backend, "bench", proposer=backend)
    result: dict[str, Investigated] = {}
    with progress_bar(f"experiments {spec}", total=len(live), unit="features") as advance:
        for fs in live:
            first = texts.get(fs.feature.name)
            if not first:
                advance(1)
                continue
            feature = {"id": f"planted/{fs.feature.name}", "max_activation": fs.max_activation}
            target = FeatureTarget(feature, PlantedSource(subject, [fs.feature]))
            explanation: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "feature_id": feature["id"],
                "text": first,
                "iteration": 0,
            }
            done = Investigated(revised=None, verdicts=[])
            for _ in range(settings.rounds):
                step = experimenter.run_round(target, explanation, fs.explain[:3], recorder)
                done.verdicts += [(e.kind, e.verdict) for e in step.experiments]
                if step.revision is None:
                    break
                explanation, done.revised = step.revision.to_row(), step.revision.text
            recorder.take()
            result[fs.feature.name] = done
            advance(1)
    return result


def explanation_similarity(
    features: list[PlantedFeature], explanations: dict[str, dict[str, str | None]]
) -> dict[str, dict[str, tuple[float, bool]]]:
    """Returns explainer -> feature -> (cosine to the true description, whether the truth is the nearest
    of all planted descriptions)."""
    if not any(any(texts.values()) for texts in explanations.values()):
        return {spec: {} for spec in explanations}  # nothing to compare: no embedding model to load
    truths = embed_texts([f.description for f in features])
    index = {f.name: i for i, f in enumerate(features)}
    result: dict[str, dict[str, tuple[float, bool]]] = {}
    for spec, texts in explanations.items():
        written = [(name, text) for name, text in texts.items() if text]
        result[spec] = {}
        if not written:
            continue
        vectors = embed_texts([text for _, text in written])
        sims = vectors @ truths.T  # [explanations, descriptions]
        for row, (name, _) in enumerate(written):
            own = float(sims[row, index[name]])
            result[spec][name] = (own, int(np.argmax(sims[row])) == index[name])
    return result


def pair_auroc(per_feature: dict[str, dict[str, float | None]], positive: str) -> tuple[float | None, int]:
    """Returns (share of (positive, distractor) pairs of the same feature that the positive wins, ties 1/2;
    pairs counted). A pair with an undefined value is left out."""
    wins, pairs = 0.0, 0
    for values in per_feature.values():
        mine = values.get(positive)
        if mine is None:
            continue
        for label, other in values.items():
            if label.startswith("distractor:") and other is not None:
                wins += 1.0 if mine > other else 0.5 if mine == other else 0.0
                pairs += 1
    return (wins / pairs if pairs else None), pairs


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _row(cells: Sequence[str]) -> str:
    """Returns one Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_report(result: BenchResult) -> str:
    """Returns the Markdown report."""
    s = result.settings
    live = [fs for fs in result.features if fs.skipped is None]
    methods = [label for label, _, _ in score_columns(s)]
    explainers = [v.label for v in explainer_variants(s)]
    lines = [
        "# Planted-feature benchmark",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- scorer model: `{s.scorer}`; embedding model: `all-MiniLM-L6-v2`",
        f"- explainers: {', '.join(f'`{e}`' for e in explainers) or 'none'}",
        f"- corpus: `{s.corpus}`, {result.windows} windows of {s.window_tokens} tokens (tokenizer `{s.subject}`)",
        f"- per feature: {s.explain_windows} explanation windows; held out {s.heldout_active} activating + "
        f"{s.heldout_quiet} non-activating; {s.distractors} distractor descriptions",
        f"- planted features: {len(result.features)} ({len(live)} fire on this corpus)",
        "- time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
        "",
        "Each scorer's number per (description, feature): simulation = pooled correlation on all held-out",
        "windows; detection and fuzzing = AUROC of P(yes) (balanced accuracy for backends without",
        "probabilities); embedding = AUROC of similarity. *AUROC vs distractors* is the share of",
        "(true description, distractor description) pairs on the same feature that the truth wins",
        "(ties 1/2; 0.5 is chance). *undefined* counts features where the scorer could not give a number",
        "(for example a dense feature with no non-activating window, for detection).",
        "*simulation few-shot* is all-at-once simulation with worked examples in the prompt",
        "(`score.simulation_prompt`). Explainer variants: *best-of-k* keeps the best of k explanations by",
        "simulation on the windows the explainer saw; *contrastive* also shows it similar non-activating windows.",
        "",
        "## Scorers: true description vs distractors",
        "",
        "| scorer | mean on truth | mean on distractors | AUROC truth vs distractors | pairs | undefined |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method in methods:
        per = result.scores[method]
        truth = [v.get("truth") for v in per.values()]
        distractor = [x for v in per.values() for k, x in v.items() if k.startswith("distractor:")]
        value, pairs = pair_auroc(per, "truth")
        undefined = sum(v.get("truth") is None for v in per.values())
        lines.append(
            f"| {method} | {_fmt(_mean(truth))} | {_fmt(_mean(distractor))} | {_fmt(value)} | {pairs} | {undefined} |"
        )
    if result.agreement:
        lines += agreement_section(result)
    if explainers:
        lines += ["", "## Explainers side by side", ""]
        header = ["metric", *[f"`{e}`" for e in explainers]]
        lines += [_row(header), _row(["---"] * len(header))]
        rows: list[list[str]] = []
        rows.append(
            ["explanations written", *[str(sum(1 for t in result.explanations[e].values() if t)) for e in explainers]]
        )
        for method in methods:
            per = result.scores[method]
            rows.append(
                [
                    f"{method}: mean score (truth {_fmt(_mean([v.get('truth') for v in per.values()]))})",
                    *[_fmt(_mean([v.get(f"explainer:{e}") for v in per.values()])) for e in explainers],
                ]
            )
            rows.append(
                [f"{method}: AUROC vs distractors", *[_fmt(pair_auroc(per, f"explainer:{e}")[0]) for e in explainers]]
            )
        rows.append(
            [
                "embedding similarity to the truth (mean cosine)",
                *[_fmt(_mean([v[0] for v in result.similarity[e].values()])) for e in explainers],
            ]
        )
        rows.append(
            [
                "truth is the nearest planted description",
                *[
                    f"{sum(v[1] for v in result.similarity[e].values())}/{len(result.similarity[e])}"
                    for e in explainers
                ],
            ]
        )
        lines += [_row(r) for r in rows]
    if result.investigated:
        lines += experiment_section(result)
    lines += ["", "## Per feature", ""]
    header = ["feature", "kind", "density", *[f"{m} (truth)" for m in methods]]
    header += [f"`{e}` wrote" for e in explainers]
    lines += [_row(header), _row(["---"] * len(header))]
    for fs in result.features:
        name = fs.feature.name
        cells = [f"{name}: {fs.feature.description}", fs.feature.kind, f"{fs.density:.3f}"]
        if fs.skipped:
            cells += [f"skipped: {fs.skipped}"] + [""] * (len(methods) - 1 + len(explainers))
        else:
            cells += [_fmt(result.scores[m].get(name, {}).get("truth")) for m in methods]
            for e in explainers:
                text = result.explanations[e].get(name)
                cells.append("(failed)" if text is None else text.replace("|", "\\|"))
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def agreement_section(result: BenchResult) -> list[str]:
    """Returns the report lines comparing batched judging (several windows per prompt) with one per prompt."""
    k = result.settings.judge_windows_per_prompt
    lines = [
        "",
        f"## Batched judging: {k} windows per prompt vs one",
        "",
        f"Detection and fuzzing judged again with `score.judge_windows_per_prompt = {k}` (one prompt lists",
        "several windows; the judge answers with a list of 1 / 0) on the same candidates and windows.",
        "*agreement* is the share of items both modes answered on which they give the same yes / no (one per",
        'prompt: P("yes") > 0.5 where the backend gives probabilities). The batched mode has no probabilities,',
        "so its number is balanced accuracy.",
        "",
        "| method | items | agreement | failed: one per prompt / batched | calls: one per prompt / batched "
        "| batched balanced accuracy: truth / distractors / AUROC truth vs distractors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, done in result.agreement.items():
        per = done.batched_scores
        truth = _mean([v.get("truth") for v in per.values()])
        distractor = _mean([x for v in per.values() for key, x in v.items() if key.startswith("distractor:")])
        area, _ = pair_auroc(per, "truth")
        lines.append(
            f"| {method} | {done.windows} | {_fmt(done.share)} ({done.same}/{done.compared}) "
            f"| {done.failed_single} / {done.failed_batched} | {done.calls_single} / {done.calls_batched} "
            f"| {_fmt(truth)} / {_fmt(distractor)} / {_fmt(area)} |"
        )
    return lines


def experiment_section(result: BenchResult) -> list[str]:
    """Returns the report lines on the experiment rounds: what they refuted, what the revisions scored."""
    s = result.settings
    methods = [label for label, _, _ in score_columns(s)]
    main = methods[0]
    lines = [
        "",
        f"## Experiments on the first explanation ({s.rounds} round{'s' if s.rounds != 1 else ''})",
        "",
        "Each explainer proposes input and minimal-pair experiments on its own first explanation; they are",
        "measured on the planted feature itself and judged by rule (supports / refutes / inconclusive); the",
        "explainer then revises. A first explanation is *wrong* when the truth is not the planted description",
        "nearest to it (embedding). *final* is what the loop keeps: the revision when it scores higher than",
        f"the first explanation on `{main}` (scored on the same held-out windows, as in a run), else the first.",
        "",
    ]
    header = ["metric", *[f"`{e}`" for e in result.investigated]]
    lines += [_row(header), _row(["---"] * len(header))]
    columns: list[list[str]] = []
    for spec, done in result.investigated.items():
        verdicts = [v for d in done.values() for _, v in d.verdicts]
        refuted = {name for name, d in done.items() if any(v == "refutes" for _, v in d.verdicts)}
        nearest = result.similarity.get(spec, {})
        wrong = {name for name in done if name in nearest and not nearest[name][1]}
        right = {name for name in done if name in nearest and nearest[name][1]}
        revised = {name for name, d in done.items() if d.revised}
        fixed = {n for n in wrong & revised if result.revised_similarity.get(spec, {}).get(n, (0.0, False))[1]}
        column = [
            str(len(done)),
            ", ".join(
                f"{k} {sum(1 for d in done.values() for kind, _ in d.verdicts if kind == k)}"
                for k in ("input", "minimal_pair")
            ),
            " / ".join(str(verdicts.count(v)) for v in ("supports", "refutes", "inconclusive")),
            f"{len(wrong & refuted)}/{len(wrong)}",
            f"{len(right & refuted)}/{len(right)}",
            f"{len(revised)}/{len(done)}",
            f"{len(fixed)}/{len(wrong)}",
        ]
        first_cos = [nearest[n][0] for n in revised if n in nearest]
        revised_cos = [
            result.revised_similarity[spec][n][0] for n in revised if n in result.revised_similarity.get(spec, {})
        ]
        column.append(f"{_fmt(_mean(first_cos))} → {_fmt(_mean(revised_cos))}")
        for method in methods:
            per = result.scores[method]
            first = [per.get(n, {}).get(f"explainer:{spec}") for n in done]
            paired = [(per.get(n, {}).get(f"explainer:{spec}"), per.get(n, {}).get(f"revised:{spec}")) for n in revised]
            final = [_final(result.scores[main].get(n, {}), spec, per.get(n, {})) for n in done]
            column.append(
                f"{_fmt(_mean(first))} → {_fmt(_mean(final))} "
                f"(revised only: {_fmt(_mean([a for a, _ in paired]))} → {_fmt(_mean([b for _, b in paired]))})"
            )
        columns.append(column)
    names = [
        "features with experiments",
        "experiments run",
        "verdicts: supports / refutes / inconclusive",
        "wrong first explanations refuted by an experiment",
        "right first explanations refuted (false alarms)",
        "rounds that changed the explanation",
        "wrong first explanations whose revision is right",
        "cosine to the truth, first → revised (revised features)",
        *[f"{m}: mean first → final" for m in methods],
    ]
    for row, name in enumerate(names):
        lines.append(_row([name, *[c[row] for c in columns]]))
    return lines


def _final(main_scores: dict[str, float | None], spec: str, scores: dict[str, float | None]) -> float | None:
    """Returns the score of what the loop keeps: the revision when it beats the first explanation on the
    main method, else the first explanation."""
    first, revised = main_scores.get(f"explainer:{spec}"), main_scores.get(f"revised:{spec}")
    if revised is not None and (first is None or revised > first):
        return scores.get(f"revised:{spec}")
    return scores.get(f"explainer:{spec}")


def write_report(result: BenchResult, path: Path) -> Path:
    """Writes the Markdown report to `path` (creating folders); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path
