"""Fuzzing scoring (Paulo et al. 2024): does the explanation tell the right tokens from random ones?

Each activating held-out window is shown twice: with its firing tokens marked <<like this>>, and
with as many tokens marked at random (a seeded choice among the tokens that do not fire). The
scorer says whether the marking fits the explanation. Reported as balanced accuracy, and AUROC of
P("yes") where the backend gives token probabilities (local).
"""

from __future__ import annotations

import random
import zlib
from typing import ClassVar

from autointerp.errors import LLMError
from autointerp.prompts import load_prompt
from autointerp.score.judge import JudgeOptions, judge_texts, judgement_metrics
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.registry import Scorer, ScorerOptions, ScoringContext
from autointerp.score.windows import ACTIVE_LEVEL, HeldOutWindow, marked, never_fires_reason

FUZZING_SCORER = "fuzzing"
FUZZING_METRICS = ("fuzzing_balanced_accuracy", "fuzzing_auroc")


def random_marks(window: HeldOutWindow, seed: int = 0) -> list[bool] | None:
    """Returns as many marks as the window has firing tokens, placed on tokens that do not fire
    (seeded by the window's text); None when every token fires and no wrong marking exists."""
    correct = [level >= ACTIVE_LEVEL for level in window.levels]
    quiet = [i for i, c in enumerate(correct) if not c]
    if not quiet:
        return None
    rng = random.Random(zlib.crc32(window.text.encode()) ^ seed)
    chosen = set(rng.sample(quiet, min(sum(correct), len(quiet))))
    return [i in chosen for i in range(len(correct))]


def fuzzing_items(windows: list[HeldOutWindow], seed: int = 0) -> list[tuple[str, bool, HeldOutWindow]]:
    """Returns (marked text, marking is correct, window): a correct and a random marking per activating window."""
    items = []
    for window in windows:
        if not window.activating:
            continue
        wrong = random_marks(window, seed)
        if wrong is None:
            continue
        items.append((marked(window.tokens, [level >= ACTIVE_LEVEL for level in window.levels]), True, window))
        items.append((marked(window.tokens, wrong), False, window))
    return items


class FuzzingScorer(Scorer):
    """Paulo et al. fuzzing: does the explanation tell correctly marked tokens from random marks?"""

    name: ClassVar[str] = FUZZING_SCORER
    metrics: ClassVar[tuple[str, ...]] = FUZZING_METRICS
    headline: ClassVar[tuple[str, ...]] = ("fuzzing_auroc", "fuzzing_balanced_accuracy")
    verdict_metrics: ClassVar[tuple[str, ...]] = ("fuzzing_auroc", "fuzzing_balanced_accuracy")
    role = "judge"
    options_type: ClassVar[type[ScorerOptions]] = JudgeOptions
    options: JudgeOptions
    seed: int = 0

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome per candidate, all judged on the same markings."""
        backend = context.backend
        if backend is None:
            raise LLMError("fuzzing scoring needs a judge model (score.judge.model)")
        windows = context.windows
        reason = never_fires_reason(windows)
        items = fuzzing_items(windows, self.seed)
        if reason is None and not items:
            reason = "every token of every activating window fires; no wrong marking can be made"
        if reason is not None:
            return [
                undefined_outcome(FUZZING_SCORER, backend.name, FUZZING_METRICS, reason) for _ in context.explanations
            ]
        template = load_prompt("fuzz_batch" if self.options.windows_per_prompt > 1 else "fuzz")
        labels = [correct for _, correct, _ in items]
        texts = [text for text, _, _ in items]
        outcomes = []
        for explanation, explanation_id in zip(context.explanations, context.explanation_ids, strict=True):
            calls_before = len(context.recorder.rows)
            judgements = judge_texts(
                context,
                backend,
                template,
                explanation,
                texts,
                role="fuzz",
                explanation_id=explanation_id,
                per_prompt=self.options.windows_per_prompt,
            )
            values, undefined = judgement_metrics("fuzzing", labels, judgements, backend)
            outcomes.append(
                ScoreOutcome(
                    scorer=FUZZING_SCORER,
                    scorer_model=backend.name,
                    values=values,
                    undefined=undefined,
                    details={
                        "items": [
                            {
                                "kind": w.kind,
                                "rank": w.rank,
                                "correct": c,
                                "text": t,
                                "p_yes": j.p_yes,
                                "error": j.error,
                            }
                            for (t, c, w), j in zip(items, judgements, strict=True)
                        ],
                        "failed": sum(j.p_yes is None for j in judgements),
                        "windows_per_prompt": self.options.windows_per_prompt,
                    },
                    call_ids=[r.id for r in context.recorder.rows[calls_before:]],
                )
            )
        return outcomes
