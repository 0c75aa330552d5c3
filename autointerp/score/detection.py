"""Detection scoring (Paulo et al. 2024): does the explanation tell which whole windows activate?

The scorer sees one held-out window at a time (activating ones, from the top and across quantiles,
and non-activating ones) with the explanation, and answers yes or no. Reported as balanced accuracy
of the answers, and AUROC of P("yes") where the backend gives token probabilities.
"""

from __future__ import annotations

from typing import ClassVar

from autointerp.activations import display_token
from autointerp.errors import LLMError
from autointerp.prompts import load_prompt
from autointerp.score.judge import JudgeOptions, judge_texts, judgement_metrics
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.registry import Scorer, ScorerOptions, ScoringContext
from autointerp.score.windows import never_fires_reason

DETECTION_SCORER = "detection"
DETECTION_METRICS = ("detection_balanced_accuracy", "detection_auroc")


class DetectionScorer(Scorer):
    """Paulo et al. detection: does the explanation tell which whole windows activate?"""

    name: ClassVar[str] = DETECTION_SCORER
    metrics: ClassVar[tuple[str, ...]] = DETECTION_METRICS
    headline: ClassVar[tuple[str, ...]] = ("detection_auroc", "detection_balanced_accuracy")
    verdict_metrics: ClassVar[tuple[str, ...]] = ("detection_auroc", "detection_balanced_accuracy")
    role = "judge"
    options_type: ClassVar[type[ScorerOptions]] = JudgeOptions
    options: JudgeOptions

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome per candidate, all judged on the same windows."""
        backend = context.backend
        if backend is None:
            raise LLMError("detection scoring needs a judge model (score.judge.model)")
        windows = context.windows
        reason = never_fires_reason(windows)
        if reason is None and all(w.activating for w in windows):
            reason = f"all {len(windows)} held-out windows activate; there is no non-activating window to tell apart"
        if reason is not None:
            return [
                undefined_outcome(DETECTION_SCORER, backend.name, DETECTION_METRICS, reason)
                for _ in context.explanations
            ]
        template = load_prompt("detect_batch" if self.options.windows_per_prompt > 1 else "detect")
        labels = [w.activating for w in windows]
        texts = ["".join(display_token(t) for t in w.tokens) for w in windows]
        outcomes = []
        for explanation, explanation_id in zip(context.explanations, context.explanation_ids, strict=True):
            calls_before = len(context.recorder.rows)
            judgements = judge_texts(
                context,
                backend,
                template,
                explanation,
                texts,
                role="detect",
                explanation_id=explanation_id,
                per_prompt=self.options.windows_per_prompt,
            )
            values, undefined = judgement_metrics("detection", labels, judgements, backend)
            outcomes.append(
                ScoreOutcome(
                    scorer=DETECTION_SCORER,
                    scorer_model=backend.name,
                    values=values,
                    undefined=undefined,
                    details={
                        "windows": [
                            {
                                "kind": w.kind,
                                "rank": w.rank,
                                "activating": w.activating,
                                "p_yes": j.p_yes,
                                "error": j.error,
                            }
                            for w, j in zip(windows, judgements, strict=True)
                        ],
                        "failed": sum(j.p_yes is None for j in judgements),
                        "windows_per_prompt": self.options.windows_per_prompt,
                    },
                    call_ids=[r.id for r in context.recorder.rows[calls_before:]],
                )
            )
        return outcomes
