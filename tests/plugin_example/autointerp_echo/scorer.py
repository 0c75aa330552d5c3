"""A scoring method in a package of its own: does a window contain a word of the explanation?

`word-match` needs no model: it ranks held-out windows by how many of the explanation's quoted or
plain words they contain, and reports the AUROC of activating vs non-activating windows.
"""

from __future__ import annotations

import re
from typing import ClassVar

from autointerp.score import ScoreOutcome, Scorer, ScoringContext, auroc


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z0-9]+", text) if len(w) > 1}


class WordMatchScorer(Scorer):
    """AUROC of windows ranked by the explanation's words they contain."""

    name: ClassVar[str] = "word-match"
    metrics: ClassVar[tuple[str, ...]] = ("word_match_auroc",)
    headline: ClassVar[tuple[str, ...]] = ("word_match_auroc",)
    verdict_metrics: ClassVar[tuple[str, ...]] = ("word_match_auroc",)

    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome per candidate explanation."""
        labels = [w.activating for w in context.windows]
        outcomes = []
        for explanation in context.explanations:
            wanted = _words(explanation)
            overlap = [float(len(wanted & _words(w.text))) for w in context.windows]
            value = auroc(overlap, labels) if 0 < sum(labels) < len(labels) else None
            outcomes.append(
                ScoreOutcome(
                    scorer=self.name,
                    scorer_model="none",
                    values={"word_match_auroc": value},
                    undefined={} if value is not None else {"word_match_auroc": "needs activating and quiet windows"},
                    details={"overlap": overlap},
                )
            )
        return outcomes
