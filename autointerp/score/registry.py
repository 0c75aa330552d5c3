"""Scorers as plugins: one class declares a scoring method's name, metrics, headline, needs and options.

A scorer subclasses `Scorer`, declares its class attributes, implements `score(context)` and is
listed under the `autointerp.scorers` entry-point group (the built-ins are, in autointerp's own
pyproject). A scorer with settings declares its own options (`options_type`, built from the `score`
section by `options_from`) and may check the config before a run (`check`). Nothing else in
autointerp needs an edit: config validation, the preflight, the score stage, the experiment loop's
verdicts and the review app read what the class declares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from autointerp.llm.base import ChatBackend
from autointerp.llm.calls import CallRecorder
from autointerp.llm.executor import fan_out
from autointerp.plugins import Registry
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.windows import HeldOutWindow

if TYPE_CHECKING:
    from autointerp.config import RunConfig, ScoreConfig
    from autointerp.subject.model import SubjectModel
    from autointerp.subject.sources import FeatureSource

Role = Literal["simulator", "judge"]
SimulationMode = Literal["auto", "all-at-once", "generate"]
SimulationPrompt = Literal["zero-shot", "few-shot"]
SimulationPrior = Literal["subtract", "keep"]
A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True)
class ScorerOptions:
    """A scorer's own settings (none here); a scorer with settings subclasses this."""

    @classmethod
    def from_config(cls, config: ScoreConfig) -> ScorerOptions:
        """Returns the options the `score` section sets (the defaults for a scorer without settings)."""
        return cls()


@dataclass(frozen=True)
class SteeringTarget:
    """The feature a scorer that reads the model's output steers (`Scorer.needs_subject`): the subject
    model, the feature's source (its position 0), its max activation, or why it cannot be steered."""

    subject: SubjectModel
    source: FeatureSource | None
    max_activation: float
    reason: str | None = None
    """Why the feature cannot be steered (its source could not be rebuilt); None when it may be."""


@dataclass
class ScoringContext:
    """What a scorer gets for one feature: candidate explanations, held-out windows, a model, a recorder
    (its settings are its own options, not part of the context)."""

    explanations: list[str]
    """The explanation first, then the distractors (or, in the benchmark, candidate descriptions)."""
    windows: list[HeldOutWindow]
    """Held-out windows with their true levels 0-10, the same for every candidate."""
    recorder: CallRecorder
    """Records every call; carries the run's session (budget, cache, limits)."""
    backend: ChatBackend | None = None
    """The model of the scorer's `role` (None for scorers that need none)."""
    feature_id: str | None = None
    explanation_ids: list[str | None] = field(default_factory=list)
    """The stored explanation each candidate is scored for (padded with None)."""
    steering: SteeringTarget | None = None
    """The feature to steer, for scorers with `needs_subject` (None for the others)."""

    def __post_init__(self) -> None:
        self.explanation_ids = list(self.explanation_ids) + [None] * (
            len(self.explanations) - len(self.explanation_ids)
        )

    def parallel_map(self, work: Callable[[A], B], items: Sequence[A]) -> list[B]:
        """Returns `work(item)` for every item, in order, running as many at once as the backend's
        limiter allows (its slots bound the calls in flight across every feature)."""
        width = 1 if self.backend is None else self.recorder.session.limiter(self.backend).concurrency
        return fan_out(work, items, width)  # one long-lived pool per width, not one per feature


class Scorer(ABC):
    """A scoring method; subclasses declare what they write and need, and implement `score`."""

    name: ClassVar[str]
    """The method's name in `score.methods`."""
    metrics: ClassVar[tuple[str, ...]]
    """Every metric it writes (each also as `<metric>_distractor`)."""
    headline: ClassVar[tuple[str, ...]]
    """Metrics that rank explanations, best first: the first one defined is the method's number."""
    verdict_metrics: ClassVar[tuple[str, ...]]
    """Metrics (first defined wins) whose comparison with the distractor says "better than chance"."""
    role: ClassVar[Role | None] = None
    """Which configured model it needs: `score.simulator`, `score.judge`, or none."""
    scorer_names: ClassVar[tuple[str, ...]] = ()
    """Values it may write to `scores.scorer` (default: its name)."""
    options_type: ClassVar[type[ScorerOptions]] = ScorerOptions
    """Its settings, built from the `score` section (`options_from`)."""
    explanation_free: ClassVar[bool] = False
    """True for a scorer that reads no explanation (the intruder test): the score stage runs it once per
    feature, explained or not, and stores one row per metric in `feature_scores`; `score` returns one outcome."""
    needs_subject: ClassVar[bool] = False
    """True when it steers the feature in the subject model (the context then carries `steering`)."""

    def __init__(self, options: ScorerOptions | None = None) -> None:
        self.options = options if options is not None else self.options_type()

    @classmethod
    def from_config(cls, config: ScoreConfig) -> Scorer:
        """Returns the scorer with the options the `score` section sets."""
        return cls(cls.options_type.from_config(config))

    @classmethod
    def check(cls, config: RunConfig) -> list[str]:
        """The preflight's check of what the scorer needs beyond its model (which the backend checks):
        raises a one-line AutointerpError saying what to change, returns warnings. Must be fast and load
        no model. The default checks nothing."""
        return []

    @classmethod
    def stored_names(cls) -> tuple[str, ...]:
        """Returns the `scores.scorer` values this method writes."""
        return cls.scorer_names or (cls.name,)

    @classmethod
    def headline_value(cls, outcome: ScoreOutcome) -> float | None:
        """Returns the one number that ranks an outcome (the first headline metric defined)."""
        for metric in cls.headline:
            if outcome.values.get(metric) is not None:
                return outcome.values[metric]
        return None

    @abstractmethod
    def score(self, context: ScoringContext) -> list[ScoreOutcome]:
        """Returns one outcome per candidate explanation, all on the context's windows."""


SCORERS: Registry[type[Scorer]] = Registry("autointerp.scorers", "scorer")
"""Every scoring method: `SCORERS.get("simulation")` is its class."""


def get_scorer(name: str, options: ScorerOptions | None = None) -> Scorer:
    """Returns an instance of the scorer named `name` with `options` (default: its defaults); ConfigError
    when unknown."""
    return SCORERS.get(name)(options)
