"""Intruder scoring (Paulo et al. 2024): is the feature coherent at all, before any explanation exists?

Each prompt shows the judge k windows: k-1 of the feature's activating windows and one intruder, a window
where the feature does not fire (a random non-firing window, or a neighbour's top window where this feature
stays below the firing line: `score.negatives`). No explanation is shown; the judge names the odd one out.
The score is the share of prompts it gets right, with a 95 % Wilson interval, against chance 1/k: a
coherent feature's intruder stands out, a polysemantic one's does not.

The scorer is explanation-free: the score stage runs it once per feature of the run, explained or not,
and stores its number per feature (`feature_scores`), not per explanation.
"""

from __future__ import annotations

import json
import math
import random
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from autointerp.activations import display_token
from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatRequest
from autointerp.prompts import PromptTemplate, load_prompt
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.registry import Scorer, ScorerOptions, ScoringContext
from autointerp.score.windows import HeldOutWindow

if TYPE_CHECKING:
    from autointerp.config import ScoreConfig

INTRUDER_SCORER = "intruder"
INTRUDER_METRICS = ("intruder_accuracy",)
Negatives = Literal["random", "neighbour", "both"]
NEIGHBOUR_KIND = "neighbour"
"""The exemplar kind of a hard negative: a neighbour's top window on which this feature does not fire."""
Z_95 = 1.959964


@dataclass(frozen=True)
class IntruderOptions(ScorerOptions):
    """The intruder scorer's settings."""

    windows_per_prompt: int = 4
    """`score.intruder_windows`: k, the windows per prompt (k-1 activating, one intruder); chance is 1/k."""
    prompts: int = 6
    """`score.intruder_prompts`: prompts per feature (each a different intruder and activating windows)."""
    negatives: Negatives = "random"
    """`score.negatives`: where intruders come from: random non-firing windows, neighbours' top windows where
    this feature does not fire, or both (alternating)."""

    @classmethod
    def from_config(cls, config: ScoreConfig) -> IntruderOptions:
        """Returns the options the `score` section sets."""
        return cls(
            windows_per_prompt=config.intruder_windows, prompts=config.intruder_prompts, negatives=config.negatives
        )


@dataclass(frozen=True)
class IntruderPrompt:
    """One prompt: the windows in the order shown and which one is the intruder."""

    windows: list[HeldOutWindow]
    intruder: int
    """0-based position of the intruder among `windows`."""


def intruder_pool(windows: list[HeldOutWindow], negatives: Negatives) -> list[HeldOutWindow]:
    """Returns the non-firing windows that may be intruders under `negatives` (both: neighbour and random
    windows interleaved, so that either kind is used when only one exists)."""
    quiet = [w for w in windows if not w.activating]
    hard = [w for w in quiet if w.kind == NEIGHBOUR_KIND]
    easy = [w for w in quiet if w.kind != NEIGHBOUR_KIND]
    if negatives == "random":
        return easy
    if negatives == "neighbour":
        return hard
    mixed: list[HeldOutWindow] = []
    for i in range(max(len(hard), len(easy))):
        mixed += [w[i] for w in (hard, easy) if i < len(w)]
    return mixed


def build_prompts(windows: list[HeldOutWindow], options: IntruderOptions, key: str) -> list[IntruderPrompt] | str:
    """Returns the feature's prompts, or why none can be built. Activating windows rotate through the
    prompts (strongest first); the intruder's position is drawn per prompt, seeded by `key`."""
    k = options.windows_per_prompt
    active = sorted((w for w in windows if w.activating), key=lambda w: -max(w.levels))
    pool = intruder_pool(windows, options.negatives)
    if len(active) < k - 1:
        return f"{len(active)} activating windows; an intruder prompt needs {k - 1} (score.intruder_windows - 1)"
    if not pool:
        which = {"random": "non-firing", "neighbour": "neighbour (hard negative)", "both": "non-firing"}
        return f"no {which[options.negatives]} window to use as the intruder (score.negatives = {options.negatives!r})"
    rng = random.Random(zlib.crc32(key.encode()))
    prompts = []
    for i in range(options.prompts):
        shown = [active[(i * (k - 1) + j) % len(active)] for j in range(k - 1)]
        position = rng.randrange(k)
        shown.insert(position, pool[i % len(pool)])
        prompts.append(IntruderPrompt(shown, position))
    return prompts


def parse_choice(answer: str, k: int) -> int | None:
    """Returns the 0-based text an answer names (its first number, 1..k), else None."""
    found = re.search(r"\d+", answer)
    if found is None:
        return None
    number = int(found.group())
    return number - 1 if 1 <= number <= k else None


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """Returns the 95 % Wilson score interval of a share `correct / total` (0..1 each)."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + Z_95**2 / total
    centre = (p + Z_95**2 / (2 * total)) / denominator
    half = Z_95 * math.sqrt(p * (1 - p) / total + Z_95**2 / (4 * total**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def p_above_chance(correct: int, total: int, chance: float) -> float:
    """Returns the one-sided binomial p-value of getting `correct` or more of `total` right at `chance`."""
    return sum(math.comb(total, i) * chance**i * (1 - chance) ** (total - i) for i in range(correct, total + 1))


class IntruderScorer(Scorer):
    """Which of k windows does not belong? Explanation-free: one number per feature."""

    name: ClassVar[str] = INTRUDER_SCORER
    metrics: ClassVar[tuple[str, ...]] = INTRUDER_METRICS
    headline: ClassVar[tuple[str, ...]] = INTRUDER_METRICS
    verdict_metrics: ClassVar[tuple[str, ...]] = ()
    role = "judge"
    explanation_free: ClassVar[bool] = True
    options_type: ClassVar[type[ScorerOptions]] = IntruderOptions
    options: IntruderOptions

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome for the feature (explanations, if any, are not shown to the judge)."""
        backend = context.backend
        if backend is None:
            raise LLMError("intruder scoring needs a judge model (score.judge.model)")
        k = self.options.windows_per_prompt
        built = build_prompts(context.windows, self.options, context.feature_id or "")
        if isinstance(built, str):
            outcome = undefined_outcome(INTRUDER_SCORER, backend.name, INTRUDER_METRICS, built)
            outcome.details = {"negatives": self.options.negatives, "k": k, "chance": 1 / k}
            return [outcome]
        template = load_prompt("intruder")
        calls_before = len(context.recorder.rows)
        choices = ask_intruders(context, backend, template, built)
        answered = [(p, c) for p, c in zip(built, choices, strict=True) if c is not None]
        correct = sum(c == p.intruder for p, c in answered)
        low, high = wilson_interval(correct, len(answered))
        p_value = p_above_chance(correct, len(answered), 1 / k) if answered else None
        values: dict[str, float | None] = {"intruder_accuracy": correct / len(answered) if answered else None}
        undefined = {} if answered else {"intruder_accuracy": f"all {len(built)} intruder calls failed"}
        details = {
            "negatives": self.options.negatives,
            "k": k,
            "chance": round(1 / k, 4),
            "correct": correct,
            "answered": len(answered),
            "failed": len(built) - len(answered),
            "interval": [round(low, 4), round(high, 4)],
            "p_vs_chance": None if p_value is None else round(p_value, 4),
            "prompts": [
                {
                    "windows": [{"kind": w.kind, "rank": w.rank} for w in p.windows],
                    "intruder": p.intruder,
                    "chosen": c,
                }
                for p, c in zip(built, choices, strict=True)
            ],
        }
        return [
            ScoreOutcome(
                scorer=INTRUDER_SCORER,
                scorer_model=backend.name,
                values=values,
                undefined=undefined,
                details=details,
                call_ids=[r.id for r in context.recorder.rows[calls_before:]],
            )
        ]


def ask_intruders(
    context: ScoringContext, backend: ChatBackend, template: PromptTemplate, prompts: list[IntruderPrompt]
) -> list[int | None]:
    """Returns the judge's 0-based choice per prompt (None where the call failed or did not name a text).

    A backend with answer probabilities gives the most probable of the numbers 1..k (one batched call for a
    model in this process); any other writes its answer, which is parsed. Every call is recorded."""
    recorder = context.recorder
    requests = []
    for prompt in prompts:
        texts = ["".join(display_token(t) for t in w.tokens) for w in prompt.windows]
        messages, prefill = template.render(texts=texts)
        requests.append(ChatRequest(messages=messages, max_tokens=4, temperature=0.0, prefill=prefill))
    if backend.capabilities().answer_logprobs:
        k = len(prompts[0].windows)
        numbers = {str(i + 1): (str(i + 1), f" {i + 1}") for i in range(k)}
        groups = [requests] if backend.max_concurrency == 1 else [[r] for r in requests]

        def ask(group: list[ChatRequest]) -> list[int | None]:
            shares, _ = recorder.measure(
                backend,
                lambda: backend.answer_probabilities(group, numbers),
                role="intruder",
                prompt_hash=template.hash,
                request={
                    "prompts": len(group),
                    "method": "p-number",
                    "last_user_message": group[-1].messages[-1].content,
                },
                describe=lambda s: (json.dumps([max(x, key=x.__getitem__) for x in s]), 0, 0),
                feature_id=context.feature_id,
            )
            if shares is None or len(shares) != len(group):
                return [None for _ in group]
            return [int(max(s, key=s.__getitem__)) - 1 for s in shares]

        return [c for group in context.parallel_map(ask, groups) for c in group]

    def answer(request: ChatRequest) -> int | None:
        response, call_id = recorder.call(
            backend, request, role="intruder", prompt_hash=template.hash, feature_id=context.feature_id
        )
        if response is None:
            return None
        choice = parse_choice(response.text, len(prompts[0].windows))
        if choice is None:
            recorder.mark_error(call_id, f"unparseable answer: {response.text[:40]!r} names no text")
        return choice

    return context.parallel_map(answer, requests)
