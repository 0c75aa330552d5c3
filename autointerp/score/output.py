"""Output scoring (Gur-Arieh et al. 2025): does the explanation tell what the feature makes the model write?

For each of `score.output_prompts` held-out neutral prompts the subject model writes a greedy continuation
twice: once with the feature steered up (`score.output_strength` x its max activation added at every
position) and once without. A judge given the explanation and both continuations says whether the first
one is the one the feature shaped; each pair is shown in both orders, so a judge that always picks one
position scores 0.5. Per prompt, P(steered) is the mean of P("yes") with the steered one first and
P("no") with it second (from token probabilities where the backend gives them, else from parsed answers).

Reported as accuracy over prompts (P(steered) above 0.5; exactly 0.5 counts half) with its 95 % Wilson
interval, and AUROC of P(picked) over every continuation where the backend gives probabilities. The
distractor explanation on the same continuations is the chance level, as for every scorer.

A feature that is not a direction in the model (a planted input feature: a function of the tokens) or
whose source cannot be rebuilt has nothing to steer: every metric is undefined with the reason in
`details.skipped`, and the score stage counts the feature as skipped for it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from autointerp.errors import AutointerpError, LLMError
from autointerp.prompts import load_prompt
from autointerp.score.judge import Judgement, judge_prompts
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.ranking import auroc
from autointerp.score.registry import Scorer, ScorerOptions, ScoringContext, SteeringTarget

if TYPE_CHECKING:
    from autointerp.config import FeaturesConfig, RunConfig, ScoreConfig
    from autointerp.subject.model import SubjectModel

OUTPUT_SCORER = "output"
OUTPUT_METRICS = ("output_auroc", "output_accuracy")

HELD_OUT_PROMPTS = (
    "My favourite part of the day is",
    "When I opened the letter, it said",
    "The next item on the list is",
    "Yesterday the committee decided that",
    "Here is what you should know:",
    "After a long pause, she replied",
    "The answer to the question is",
    "We walked along the river and",
    "According to the notes,",
    "The most important thing to remember is",
    "He wrote the following on the board:",
    "In the end, the result was",
)
"""Neutral prompts the output scorer continues (none of them is a steering-evidence prompt)."""

_STEERING = threading.Lock()
"""An edit hooks the one subject model of the process: features scored in parallel steer one at a time."""


@dataclass(frozen=True)
class OutputOptions(ScorerOptions):
    """The output scorer's settings (`score.output_*`)."""

    prompts: int = 4
    """Held-out prompts continued per feature (the first of `HELD_OUT_PROMPTS`)."""
    strength: float = 4.0
    """Steering adds strength x the feature's max activation at every position."""
    tokens: int = 8
    """Tokens generated per continuation."""

    @classmethod
    def from_config(cls, config: ScoreConfig) -> OutputOptions:
        """Returns the options the `score` section sets."""
        return cls(prompts=config.output_prompts, strength=config.output_strength, tokens=config.output_tokens)


@dataclass(frozen=True)
class ContinuationPair:
    """One held-out prompt continued with the feature steered and without."""

    prompt: str
    steered: str
    clean: str


def steering_target(
    features: FeaturesConfig, subject: SubjectModel, feature: dict[str, object], max_activation: float
) -> SteeringTarget:
    """Returns what the output scorer steers for one feature (a row of the features table): its source
    rebuilt from the run's features config, or the reason it cannot be (never raises)."""
    from autointerp.subject.kinds import feature_source_for

    try:
        source = feature_source_for(features, subject, dict(feature))
    except AutointerpError as exc:
        return SteeringTarget(subject, None, max_activation, f"its source cannot be rebuilt: {exc}")
    return SteeringTarget(subject, source, max_activation)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Returns the 95 % Wilson score interval of a proportion (None when n is 0)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(nothing)"


class OutputScorer(Scorer):
    """Gur-Arieh et al. output test: which of two continuations did the steered feature shape?"""

    name: ClassVar[str] = OUTPUT_SCORER
    metrics: ClassVar[tuple[str, ...]] = OUTPUT_METRICS
    headline: ClassVar[tuple[str, ...]] = ("output_auroc", "output_accuracy")
    verdict_metrics: ClassVar[tuple[str, ...]] = ("output_auroc", "output_accuracy")
    role = "judge"
    needs_subject: ClassVar[bool] = True
    options_type: ClassVar[type[ScorerOptions]] = OutputOptions
    options: OutputOptions

    @classmethod
    def check(cls, config: RunConfig) -> list[str]:
        """Returns a warning when the run's features cannot be steered (planted input features)."""
        if config.features.kind == "planted":
            return ["score.methods has output, but planted features cannot be steered: it will skip every feature"]
        return []

    def __init__(self, options: ScorerOptions | None = None) -> None:
        super().__init__(options)
        self._clean: dict[tuple[int, str, int], str] = {}
        """(subject, prompt, tokens) -> the unsteered continuation (the same for every feature)."""

    def unsteerable(self, target: SteeringTarget | None) -> str | None:
        """Returns why the feature cannot be steered (None when it can)."""
        if target is None:
            return "no subject model to steer (the output scorer needs a run's or the benchmark's model)"
        if target.reason is not None:
            return target.reason
        if target.source is None or target.source.edit(0, add=1.0) is None:
            kind = getattr(target.source, "kind", "this")
            return f"a {kind} feature is not a direction in the model: there is nothing to steer"
        if not target.max_activation > 0:
            return "the feature never fired: a multiple of its max activation (0) steers nothing"
        return None

    def continuations(self, target: SteeringTarget) -> list[ContinuationPair]:
        """Returns one (steered, clean) continuation pair per held-out prompt."""
        from autointerp.subject.interventions import generate_with_edit

        assert target.source is not None
        edit = target.source.edit(0, add=self.options.strength * target.max_activation)
        pairs = []
        with _STEERING:
            for prompt in HELD_OUT_PROMPTS[: self.options.prompts]:
                key = (id(target.subject), prompt, self.options.tokens)
                if key not in self._clean:
                    self._clean[key] = generate_with_edit(target.subject, prompt, None, self.options.tokens)
                steered = generate_with_edit(target.subject, prompt, edit, self.options.tokens)
                pairs.append(ContinuationPair(prompt, steered, self._clean[key]))
        return pairs

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome per candidate, all judged on the same continuation pairs."""
        backend = context.backend
        if backend is None:
            raise LLMError("output scoring needs a judge model (score.judge.model)")
        reason = self.unsteerable(context.steering)
        if reason is not None:
            skipped = []
            for _ in context.explanations:
                outcome = undefined_outcome(OUTPUT_SCORER, backend.name, OUTPUT_METRICS, reason)
                outcome.details["skipped"] = reason
                skipped.append(outcome)
            return skipped
        assert context.steering is not None
        pairs = self.continuations(context.steering)
        changed = sum(p.steered != p.clean for p in pairs)
        template = load_prompt("output_judge")
        outcomes = []
        for explanation, explanation_id in zip(context.explanations, context.explanation_ids, strict=True):
            calls_before = len(context.recorder.rows)
            prompts = []
            for p in pairs:
                steered, clean = _one_line(p.steered), _one_line(p.clean)
                for first, second in ((steered, clean), (clean, steered)):
                    prompts.append(
                        template.render(explanation=explanation, prompt=p.prompt, first=first, second=second)
                    )
            judgements = judge_prompts(
                context, backend, prompts, role="output", prompt_hash=template.hash, explanation_id=explanation_id
            )
            values, undefined, items = self.metrics_of(pairs, judgements, backend.name)
            if changed == 0:
                why = f"steering changed none of the {len(pairs)} continuations; raise score.output_strength"
                values, undefined = dict.fromkeys(OUTPUT_METRICS), dict.fromkeys(OUTPUT_METRICS, why)
            outcomes.append(
                ScoreOutcome(
                    scorer=OUTPUT_SCORER,
                    scorer_model=backend.name,
                    values=values,
                    undefined=undefined,
                    details={
                        "items": items,
                        "failed": sum(item["p_steered"] is None for item in items),
                        "changed": changed,
                        "strength": self.options.strength,
                        "added": self.options.strength * context.steering.max_activation,
                        "accuracy_interval": _interval(items),
                    },
                    call_ids=[r.id for r in context.recorder.rows[calls_before:]],
                )
            )
        return outcomes

    @staticmethod
    def metrics_of(
        pairs: list[ContinuationPair], judgements: list[Judgement], backend_name: str
    ) -> tuple[dict[str, float | None], dict[str, str], list[dict[str, object]]]:
        """Returns (values, reasons for the undefined ones, one detail item per pair) from two judgements
        per pair (steered first, then steered second)."""
        items: list[dict[str, object]] = []
        chosen: list[float] = []
        probabilities = True
        for index, pair in enumerate(pairs):
            first, second = judgements[2 * index], judgements[2 * index + 1]
            votes = [j.p_yes for j in (first,) if j.p_yes is not None]
            votes += [1.0 - j.p_yes for j in (second,) if j.p_yes is not None]
            p_steered = sum(votes) / len(votes) if votes else None
            probabilities &= all(j.from_probability for j in (first, second) if j.p_yes is not None)
            items.append(
                {
                    "prompt": pair.prompt,
                    "steered": pair.steered,
                    "clean": pair.clean,
                    "p_steered": p_steered,
                    "error": first.error or second.error,
                }
            )
            if p_steered is not None:
                chosen.append(p_steered)
        values: dict[str, float | None] = dict.fromkeys(OUTPUT_METRICS)
        if not chosen:
            return values, dict.fromkeys(OUTPUT_METRICS, f"all {len(judgements)} output calls failed"), items
        values["output_accuracy"] = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in chosen) / len(chosen)
        if not probabilities:
            return values, {"output_auroc": f"{backend_name} gives no token probabilities; see accuracy"}, items
        values["output_auroc"] = auroc(chosen + [1.0 - p for p in chosen], [True] * len(chosen) + [False] * len(chosen))
        return values, {}, items


def _interval(items: list[dict[str, object]]) -> list[float] | None:
    """Returns the accuracy's 95 % Wilson interval over the answered pairs, as [low, high]."""
    answered = [float(str(i["p_steered"])) for i in items if i["p_steered"] is not None]
    wins = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in answered)
    interval = wilson_interval(wins, len(answered))
    return None if interval is None else [round(interval[0], 4), round(interval[1], 4)]
