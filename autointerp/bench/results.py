"""What one benchmark run measured (`BenchResult`): scores, explanations, experiment rounds, and the
agreement of batched with one-window judging."""

from __future__ import annotations

from dataclasses import dataclass, field

from autointerp.bench.hard import HardScores
from autointerp.bench.settings import BenchSettings
from autointerp.bench.windows import FeatureSet
from autointerp.score.outcome import ScoreOutcome


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
    hard: HardScores | None = None  # easy vs hard scores and intruder accuracy (settings.hard / method intruder)
    kept_lists: dict[str, set[str]] = field(default_factory=dict)
    """Explainer -> the features whose kept explanation is the top-token list, not its answer (settings.top_tokens)."""
