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
import time
import uuid
from typing import Any

import numpy as np

from autointerp.bench.hard import score_hard
from autointerp.bench.results import BenchResult, Investigated, JudgeAgreement
from autointerp.bench.settings import BenchSettings, ExplainerVariant, explainer_variants, score_columns
from autointerp.bench.windows import FeatureSet, build_feature_sets
from autointerp.config import ExperimentConfig, LLMConfig, LLMRoleConfig, ScoreConfig
from autointerp.errors import ConfigError
from autointerp.experiments.rounds import Experimenter, FeatureTarget
from autointerp.explain.best_of import BestOf, explain_best_of
from autointerp.explain.contrastive import split_for_contrast
from autointerp.explain.explainer import explain_feature
from autointerp.explain.top_tokens import kept_top_tokens
from autointerp.llm import CallRecorder, ChatBackend, LLMSession, get_backend
from autointerp.progress import progress_bar
from autointerp.records import Explanation
from autointerp.score.distractors import choose_distractors
from autointerp.score.embedding import embed_texts
from autointerp.score.registry import SCORERS
from autointerp.score.scorers import methods, primary_value, score_candidates
from autointerp.score.simulation import SimulationOptions
from autointerp.subject import load_subject_model
from autointerp.subject.planted import PlantedFeature
from autointerp.subject.sources import PlantedSource

log = logging.getLogger(__name__)


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
    weighs = settings.weighs_top_tokens or any(v.best_of > 1 for v in variants)
    needs_llm = [m for m in settings.methods if m != "embedding"] or weighs

    def scorer(method: str) -> ChatBackend | None:
        """The model that scores with `method` (`settings.scorer_for`); None for methods that need none."""
        if not needs_llm or SCORERS.get(method).role is None:
            return None
        return get_backend(settings.scorer_for(method))

    simulator = scorer("simulation") if weighs else None
    explanations: dict[str, dict[str, str | None]] = {}
    kept_lists: dict[str, set[str]] = {}
    for variant in variants:
        backend = get_backend(variant.spec)
        started = time.perf_counter()
        texts: dict[str, str | None] = {}
        kept_lists[variant.label] = set()
        with progress_bar(f"explain {variant.label}", total=len(live), unit="features") as advance:
            for fs in live:
                written = explain_planted(fs, variant, backend, simulator, recorder, settings)
                texts[fs.feature.name] = written.text if written else None
                if written and kept_top_tokens(written.details):
                    kept_lists[variant.label].add(fs.feature.name)
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
        options = SCORERS.get(method).options_type.from_config(
            ScoreConfig(
                simulation_prompt=prompt, batch_size=settings.batch_size, simulation_prior=settings.simulation_prior
            )
        )
        batched_options = SCORERS.get(method).options_type.from_config(
            ScoreConfig(judge_windows_per_prompt=settings.judge_windows_per_prompt)
        )
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
                    backend=scorer(method),
                    recorder=recorder,
                    feature_id=fs.feature.name,
                    options=options,
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
                        backend=scorer(method),
                        recorder=recorder,
                        feature_id=fs.feature.name,
                        options=batched_options,
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
    hard = None
    if settings.hard or "intruder" in settings.methods:  # hard negatives and distractors, the intruder test
        started = time.perf_counter()
        hard = score_hard(live, features, settings, scorer, recorder)
        seconds["hard tests"] = time.perf_counter() - started
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
        hard,
        kept_lists,
    )


def explain_planted(
    fs: FeatureSet,
    variant: ExplainerVariant,
    backend: ChatBackend,
    simulator: ChatBackend | None,
    recorder: CallRecorder,
    settings: BenchSettings,
) -> Explanation | None:
    """Returns the explanation `variant` writes for one feature (None: every attempt failed). Contrastive:
    the non-activating windows come from `fs.quiet`, never from the held-out ones; best-of-k and the
    top-token list (`settings.top_tokens`): candidates are simulated on the windows the explainer saw."""
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
    if (variant.best_of > 1 or settings.weighs_top_tokens) and simulator is not None:
        best = BestOf(
            k=variant.best_of,
            temperature=settings.best_of_temperature,
            simulator=simulator,
            simulation=SimulationOptions(
                prompt=settings.simulation_prompts[0],
                batch_size=settings.batch_size,
                prior=settings.simulation_prior,
            ),
            top_tokens=settings.weighs_top_tokens,  # the list's length and ranking: BestOf's defaults, a run's
        )
        outcome = explain_best_of(backend, recorder, best, **asked)
    else:
        outcome = explain_feature(backend, recorder, **asked)
    recorder.take()  # the benchmark keeps texts, not call rows
    return outcome.explanation


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
