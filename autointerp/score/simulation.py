"""Simulation scoring (Bills et al. 2023): predict per-token activations 0-10 from the explanation alone.

Two paths. "All at once", for backends that read probabilities inside the prompt (a local model;
a server returning prompt log-probabilities): the probabilities of "0".."10" after every token give
the expected value. "Generated", for any other backend: the simulator writes "token<TAB>value"
lines, which are parsed and aligned with the window's tokens; an answer that cannot be aligned is a
failed call, and its window is left out of the score.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from autointerp.activations import display_token
from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatRequest, ValueReadout
from autointerp.prompts import PromptTemplate, load_prompt
from autointerp.score.metrics import pooled_correlation
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.registry import (
    Scorer,
    ScorerOptions,
    ScoringContext,
    SimulationMode,
    SimulationPrior,
    SimulationPrompt,
)
from autointerp.score.windows import (
    NON_FIRING_KINDS,
    HeldOutWindow,
    never_fires_reason,
    read_part,
    scored_prediction,
)

if TYPE_CHECKING:
    from autointerp.config import ScoreConfig

SIMULATION_ALL_AT_ONCE = "simulation-all-at-once"
SIMULATION_GENERATED = "simulation-generated"
SIMULATION_METRICS = (
    "correlation_top_and_random",
    "correlation_all",
    "correlation_top",
    "correlation_random",
    "ev_correlation_score",
)
"""Pooled correlations of predicted with true levels 0-10 per window subset, and `ev_correlation_score`:
neuron-explainer's number (expected values against the raw activations, all tokens read flattened: a
window's unread first tokens are left out, as in every correlation here), so ours compare with published ones."""

SIMULATION_TEMPLATES: dict[str, str] = {"zero-shot": "simulate", "few-shot": "simulate_fewshot"}
"""`score.simulation_prompt` -> the all-at-once template it loads (each call records the template's hash)."""

NULL_DESCRIPTION = "nothing in particular"
"""The description whose all-at-once prediction is the simulator's prior (`score.simulation_prior`): what it
predicts from the tokens alone, which a score does not credit to the explanation."""

MIN_ALIGNED_SHARE = 0.5
"""A generated answer must give values for at least this share of the window's tokens."""


@dataclass(frozen=True)
class SimulationOptions(ScorerOptions):
    """The simulation scorer's settings."""

    mode: SimulationMode = "auto"
    """`score.simulation`: read token probabilities (all-at-once), parse generated lines, or pick (auto)."""
    prompt: SimulationPrompt = "zero-shot"
    """`score.simulation_prompt`: the all-at-once prompt, the description alone or worked examples first."""
    batch_size: int = 8
    """`score.batch_size`: prompts per forward pass of a simulator in this process."""
    prior: SimulationPrior = "subtract"
    """`score.simulation_prior`: all-at-once predictions less the prior (`NULL_DESCRIPTION`'s), or as read."""

    @classmethod
    def from_config(cls, config: ScoreConfig) -> SimulationOptions:
        """Returns the options the `score` section sets."""
        return cls(
            mode=config.simulation,
            prompt=config.simulation_prompt,
            batch_size=config.batch_size,
            prior=config.simulation_prior,
        )


class SimulationParseError(LLMError):
    """A generated simulation cannot be aligned with the window's tokens."""


_LINE = re.compile(r"^(?P<token>.*?)(?:\t+|\s+)(?P<value>-?\d+(?:\.\d+)?)\s*$")


def parse_simulation_lines(answer: str, tokens: list[str]) -> tuple[list[float], int]:
    """Returns (value 0-10 per window token, how many tokens a line was found for).

    Lines look like "token<TAB>value"; values are clipped to 0..10. When there are exactly as many
    lines as tokens they are taken in order; otherwise each token is matched to the next line (within
    a few) whose token text is the same, and a token without one is predicted 0. Raises
    SimulationParseError when fewer than MIN_ALIGNED_SHARE of the tokens got a value.
    """
    lines = []
    for raw in answer.splitlines():
        match = _LINE.match(raw.rstrip())
        if match:
            lines.append((match["token"].strip(), min(10.0, max(0.0, float(match["value"])))))
    if len(lines) == len(tokens):
        return [value for _, value in lines], len(tokens)
    values = [0.0] * len(tokens)
    matched, cursor = 0, 0
    for i, token in enumerate(tokens):
        shown = display_token(token).strip()
        for j in range(cursor, min(cursor + 3, len(lines))):
            if lines[j][0] == shown:
                values[i], cursor = lines[j][1], j + 1
                matched += 1
                break
    if matched < MIN_ALIGNED_SHARE * len(tokens):
        raise SimulationParseError(
            f"only {matched} of {len(tokens)} tokens have a 'token<TAB>value' line; "
            "write every token on its own line followed by a tab and a number"
        )
    return values, matched


def simulate_generated(
    context: ScoringContext,
    backend: ChatBackend,
    template: PromptTemplate,
    explanation: str,
    explanation_id: str | None,
    tokens_per_line: int = 6,
) -> list[list[float] | None]:
    """Returns the parsed prediction per window of the context, None where the call failed or did not
    parse; the windows' calls run in parallel. Every call is recorded; an unparseable answer is
    marked as an error on its call row."""
    recorder = context.recorder

    def simulate_window(tokens: list[str]) -> list[float] | None:
        messages, prefill = template.render(explanation=explanation, tokens=[display_token(t) for t in tokens])
        request = ChatRequest(messages=messages, max_tokens=tokens_per_line * len(tokens) + 8, prefill=prefill)
        response, call_id = recorder.call(
            backend,
            request,
            role="simulate",
            prompt_hash=template.hash,
            feature_id=context.feature_id,
            explanation_id=explanation_id,
        )
        if response is None:
            return None
        try:
            values, _ = parse_simulation_lines(prefill + response.text, tokens)
        except SimulationParseError as exc:
            recorder.mark_error(call_id, f"unparseable answer: {exc}")
            return None
        return values

    return context.parallel_map(simulate_window, [w.tokens for w in context.windows])


def simulate_all_at_once(
    context: ScoringContext, backend: ChatBackend, template: PromptTemplate, batch_size: int = 8
) -> tuple[list[list[list[float] | None]], list[list[str]], list[float | None]]:
    """Returns, per candidate explanation, (expected value per token per window or None where its call
    failed, call ids, mean digit probability mass). A model in this process reads every candidate's
    windows in one batched call per candidate; a server gets one request per window, in parallel."""
    batched = backend.max_concurrency == 1
    predictions: list[list[list[float] | None]] = []
    call_ids: list[list[str]] = []
    masses: list[float | None] = []
    for explanation, explanation_id in zip(context.explanations, context.explanation_ids, strict=True):
        messages, prefill = template.render(explanation=explanation)
        request = ChatRequest(messages=messages, prefill=prefill, max_tokens=1)
        items = [(request, list(w.tokens)) for w in context.windows]
        groups = [items] if batched else [[item] for item in items]
        logged = {"explanation": explanation, "method": "all-at-once"}

        def read(
            group: list[tuple[ChatRequest, list[str]]],
            logged: dict[str, str] = logged,
            explanation_id: str | None = explanation_id,
        ) -> tuple[list[ValueReadout] | None, str]:
            return context.recorder.measure(
                backend,
                lambda: backend.read_values(group, batch_size),
                role="simulate",
                prompt_hash=template.hash,
                request={**logged, "windows": len(group)},
                describe=lambda r: (
                    json.dumps([[round(v, 3) for v in x.values] for x in r]),
                    sum(x.input_tokens for x in r),
                    0,
                ),
                feature_id=context.feature_id,
                explanation_id=explanation_id,
            )

        answers = context.parallel_map(read, groups)
        mine: list[list[float] | None] = []
        mass: list[float] = []
        for group, (readouts, _) in zip(groups, answers, strict=True):
            if readouts is None or len(readouts) != len(group):
                mine.extend([None] * len(group))
                continue
            for (_, lines), readout in zip(group, readouts, strict=True):
                ok = len(readout.values) == len(lines)
                mine.append(readout.values if ok else None)
                mass.append(readout.digit_mass)
        predictions.append(mine)
        call_ids.append([call_id for _, call_id in answers])
        masses.append(round(sum(mass) / len(mass), 4) if mass else None)
    return predictions, call_ids, masses


def simulate_prior(
    context: ScoringContext, backend: ChatBackend, template: PromptTemplate, batch_size: int = 8
) -> tuple[list[list[float] | None], list[str]]:
    """Returns the all-at-once prediction per window under `NULL_DESCRIPTION` (None where its call failed)
    and its call ids: the simulator's prior, shared by an explanation and its distractor."""
    empty = replace(context, explanations=[NULL_DESCRIPTION], explanation_ids=[None])
    predictions, call_ids, _ = simulate_all_at_once(empty, backend, template, batch_size)
    return predictions[0], call_ids[0]


def correlations(
    windows: list[HeldOutWindow],
    predicted: list[list[float] | None],
    as_read: list[list[float] | None] | None = None,
) -> tuple[dict, dict]:
    """Returns (values, reasons for undefined ones) of the pooled correlations of `predicted` on each window
    subset, and `ev_correlation_score` of the predictions `as_read` (default: `predicted`; with the prior
    subtracted from `predicted`, neuron-explainer's number stays theirs); a window's unread tokens are left out."""
    as_read = predicted if as_read is None else as_read
    values: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    subsets = {
        "correlation_top_and_random": lambda w: w.kind in ("top", *NON_FIRING_KINDS),
        "correlation_all": lambda w: True,
        "correlation_top": lambda w: w.kind == "top",
        "correlation_random": lambda w: w.kind in NON_FIRING_KINDS,
    }
    for metric, keep in subsets.items():
        chosen = [i for i, w in enumerate(windows) if keep(w)]
        scored = [i for i in chosen if predicted[i] is not None]
        value = pooled_correlation(
            [read_part(windows[i].levels, windows[i].unread) for i in scored],
            [read_part(predicted[i] or [], windows[i].unread) for i in scored],
        )
        values[metric] = value
        if value is None:
            if not chosen:
                undefined[metric] = "no held-out windows of this kind"
            elif not scored:
                undefined[metric] = f"every simulation call for the {len(chosen)} windows failed"
            else:
                undefined[metric] = "true activations are constant on these windows"
    scored = [i for i, p in enumerate(as_read) if p is not None]  # a failed prior call does not matter here
    if scored and all(windows[i].raw is not None for i in scored):
        raw = pooled_correlation(
            [read_part(windows[i].raw or [], windows[i].unread) for i in scored],
            [read_part(as_read[i] or [], windows[i].unread) for i in scored],
        )
        values["ev_correlation_score"] = raw
        if raw is None:
            undefined["ev_correlation_score"] = "raw activations are constant on these windows"
    else:
        values["ev_correlation_score"] = None
        undefined["ev_correlation_score"] = (
            "every simulation call failed" if not scored else "raw activations are not known for these windows"
        )
    return values, undefined


def _rounded(values: list[float] | None) -> list[float] | None:
    """Returns predictions as `details` stores them (3 decimals)."""
    return None if values is None else [round(v, 3) for v in values]


def uses_all_at_once(backend: ChatBackend, mode: str) -> bool:
    """Returns whether simulation reads probabilities (True) or parses generated numbers; raises
    LLMError when all-at-once was asked of a backend that cannot read prompt probabilities."""
    if mode == "generate":
        return False
    capable = backend.capabilities().prompt_logprobs
    if mode == "all-at-once" and not capable:
        raise LLMError(
            f"all-at-once simulation reads prompt probabilities, which {backend.name} does not give; "
            "use a local:<model> simulator, a server with prompt log-probabilities, or score.simulation = 'generate'"
        )
    return capable


class SimulationScorer(Scorer):
    """Bills et al. simulation: the correlation of predicted with true activation levels."""

    name: ClassVar[str] = "simulation"
    metrics: ClassVar[tuple[str, ...]] = SIMULATION_METRICS
    headline: ClassVar[tuple[str, ...]] = ("correlation_all",)
    verdict_metrics: ClassVar[tuple[str, ...]] = ("correlation_top_and_random",)
    role = "simulator"
    scorer_names: ClassVar[tuple[str, ...]] = (SIMULATION_ALL_AT_ONCE, SIMULATION_GENERATED)
    options_type: ClassVar[type[ScorerOptions]] = SimulationOptions
    options: SimulationOptions

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns pooled correlations on all, top-and-random, top and random windows per candidate."""
        options, backend = self.options, context.backend
        if backend is None:
            raise LLMError("simulation scoring needs a simulator model (score.simulator.model)")
        all_at_once = uses_all_at_once(backend, options.mode)
        scorer = SIMULATION_ALL_AT_ONCE if all_at_once else SIMULATION_GENERATED
        never = never_fires_reason(context.windows)
        if never is not None:  # nothing to predict: flagged without spending a call
            return [undefined_outcome(scorer, backend.name, SIMULATION_METRICS, never) for _ in context.explanations]
        masses: list[float | None] = [None] * len(context.explanations)
        prior: list[list[float] | None] | None = None  # the simulator's prediction from the tokens alone
        prior_calls: list[str] = []
        if all_at_once:
            template = load_prompt(SIMULATION_TEMPLATES[options.prompt])
            predictions, call_ids, masses = simulate_all_at_once(context, backend, template, options.batch_size)
            if options.prior == "subtract":
                prior, prior_calls = simulate_prior(context, backend, template, options.batch_size)
        else:
            template = load_prompt("simulate_generate")
            predictions, call_ids = [], []
            for explanation, explanation_id in zip(context.explanations, context.explanation_ids, strict=True):
                calls_before = len(context.recorder.rows)
                predictions.append(simulate_generated(context, backend, template, explanation, explanation_id))
                call_ids.append([r.id for r in context.recorder.rows[calls_before:]])
        outcomes = []
        for predicted, ids, mass in zip(predictions, call_ids, masses, strict=True):
            windows: list[dict[str, object]] = []
            for w, p, q in zip(context.windows, predicted, prior or [None] * len(predicted), strict=True):
                window: dict[str, object] = {"kind": w.kind, "rank": w.rank, "true": w.levels}
                if w.unread:
                    window["unread"] = w.unread
                window["predicted"] = _rounded(p)
                if prior is not None:
                    window["prior"] = _rounded(q)
                windows.append(window)
            # as read; else what the stored window reads back as (3 decimals, a failed prior call a failed
            # window), so the bootstrap test rebuilds the same numbers from `details`
            scored = predicted if prior is None else [scored_prediction(w) for w in windows]
            values, undefined = correlations(context.windows, scored, predicted)
            details: dict[str, object] = {"windows": windows, "failed": sum(p is None for p in scored)}
            if prior is not None:
                details["prior"] = {"description": NULL_DESCRIPTION, "subtracted": True}
                ids = [*ids, *prior_calls]
            if mass is not None:
                details["digit_probability_mass"] = mass
            outcomes.append(
                ScoreOutcome(
                    scorer=scorer,
                    scorer_model=backend.name,
                    values=values,
                    undefined=undefined,
                    details=details,
                    call_ids=ids,
                )
            )
        return outcomes
