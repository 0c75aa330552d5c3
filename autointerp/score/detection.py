"""Detection scoring (Paulo et al. 2024): does the explanation tell which whole windows activate?

The scorer sees one held-out window at a time (activating ones, from the top and across quantiles,
and non-activating ones) with the explanation, and answers yes or no. Reported as balanced accuracy
of the answers, and AUROC of P("yes") where the backend gives token probabilities (local).
"""

from __future__ import annotations

from autointerp.activations import display_token
from autointerp.llm.base import ChatBackend
from autointerp.llm.calls import CallRecorder
from autointerp.prompts import PromptTemplate
from autointerp.score.judge import judge_prompts, judgement_metrics
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.windows import HeldOutWindow, never_fires_reason

DETECTION_SCORER = "detection"
DETECTION_METRICS = ("detection_balanced_accuracy", "detection_auroc")


def detection_scores(
    backend: ChatBackend,
    template: PromptTemplate,
    explanations: list[str],
    windows: list[HeldOutWindow],
    *,
    recorder: CallRecorder,
    feature_id: str | None,
    explanation_ids: list[str | None] | None = None,
    batch_size: int = 16,
) -> list[ScoreOutcome]:
    """Returns one outcome per explanation, all judged on the same windows."""
    reason = never_fires_reason(windows)
    if reason is None and all(w.activating for w in windows):
        reason = f"all {len(windows)} held-out windows activate; there is no non-activating window to tell apart"
    if reason is not None:
        return [undefined_outcome(DETECTION_SCORER, backend.name, DETECTION_METRICS, reason) for _ in explanations]
    ids = explanation_ids or [None] * len(explanations)
    labels = [w.activating for w in windows]
    texts = ["".join(display_token(t) for t in w.tokens) for w in windows]
    outcomes = []
    for explanation, explanation_id in zip(explanations, ids, strict=True):
        prompts = [template.render(explanation=explanation, text=text) for text in texts]
        calls_before = len(recorder.rows)
        judgements = judge_prompts(
            backend,
            prompts,
            recorder=recorder,
            role="detect",
            prompt_hash=template.hash,
            feature_id=feature_id,
            explanation_id=explanation_id,
            batch_size=batch_size,
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
                        {"kind": w.kind, "rank": w.rank, "activating": w.activating, "p_yes": j.p_yes, "error": j.error}
                        for w, j in zip(windows, judgements, strict=True)
                    ],
                    "failed": sum(j.p_yes is None for j in judgements),
                },
                call_ids=[r["id"] for r in recorder.rows[calls_before:]],
            )
        )
    return outcomes
