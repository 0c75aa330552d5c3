"""What the planted-feature benchmark runs on (`BenchSettings`), and the explainer variants and scorer
columns it compares."""

from __future__ import annotations

from dataclasses import dataclass, field

from autointerp.config import ExplainerConfig, ScoreConfig
from autointerp.errors import ConfigError
from autointerp.score.registry import SimulationPrior, SimulationPrompt


@dataclass
class BenchSettings:
    """What the benchmark runs on; the defaults finish in minutes on a 2-core CPU."""

    scorer: str | None = None
    """One model behind every LLM scorer (simulation, detection, fuzzing, intruder); None: a run's defaults,
    `score.simulator` for simulation and `score.judge` for the judges (`scorer_for`)."""
    explainers: list[str] = field(default_factory=lambda: [ExplainerConfig().model])
    """Explainers compared side by side (default: a run's default explainer, `explainer.model`)."""
    methods: list[str] = field(default_factory=lambda: ["simulation", "detection", "fuzzing", "embedding"])
    """Scoring methods."""
    subject: str = "smollm2-135m"
    """Whose tokenizer cuts the corpus into tokens."""
    corpus: str = "builtin:python-docs"
    """Corpus source (as `corpus.source` in a run)."""
    window_tokens: int = 12
    """Tokens per window."""
    max_windows: int = 4096
    """Windows cut from the corpus."""
    explain_windows: int = 4
    """Windows shown to the explainer per feature."""
    heldout_active: int = 3
    """Held-out activating windows per feature (about half from the top, the rest spread below it)."""
    heldout_quiet: int = 3
    """Held-out non-activating windows per feature."""
    distractors: int = 2
    """Other features' descriptions scored against each truth."""
    batch_size: int = 16
    """Prompts per padded forward pass."""
    seed: int = 0
    """Seed for tie-breaking and sampling windows."""
    rounds: int = 1
    """Experiment-and-revise rounds on each explainer's explanation (0: none). Input and
    minimal-pair experiments; the explainer proposes them and revises."""
    judge_windows_per_prompt: int = 1
    """Above 1: detection and fuzzing are also judged with this many windows per prompt (a list answer),
    and the report gives their agreement with one window per prompt."""
    simulation_prompts: list[SimulationPrompt] = field(default_factory=lambda: ["zero-shot"])
    """All-at-once simulation prompts compared (`score.simulation_prompt`); the first also ranks best-of-k
    candidates. A prompt other than zero-shot is reported as method `simulation <prompt>`."""
    simulation_prior: SimulationPrior = field(default_factory=lambda: ScoreConfig().simulation_prior)
    """`score.simulation_prior`: all-at-once predictions less the simulator's prior, or as read (a run's default)."""
    explainer_variants: list[str] = field(default_factory=lambda: ["default"])
    """How each explainer writes: `default`, `best-of-<k>`, `contrastive`, or both joined by `+`
    (`best-of-3+contrastive`); every explainer runs every variant."""
    best_of_temperature: float = 0.7
    """Sampling temperature of best-of-k candidates 2..k."""
    top_tokens: bool = field(default_factory=lambda: ExplainerConfig().top_tokens_candidate)
    """Weigh the list of the strongest tokens of the explanation windows against each explainer's answer by
    simulation on those windows, and keep the better (a run's `explainer.top_tokens_candidate`)."""
    contrastive_windows: int = 3
    """Non-activating windows shown by the contrastive variant."""
    contrast_pool: int = 64
    """Non-activating corpus windows (none of them held out) the contrastive variant ranks by similarity."""
    hard: bool = False
    """Also score the truth, a vague description and distractors on hard negatives (windows where a planted
    family neighbour fires) beside random ones (`autointerp.bench.hard`)."""
    intruder_windows: int = 4
    """Intruder test (method `intruder`): windows per prompt, k; chance is 1/k."""
    intruder_prompts: int = 6
    """Intruder test: prompts per feature."""

    @property
    def weighs_top_tokens(self) -> bool:
        """Returns whether each explainer's answer is weighed against the top-token list: `top_tokens`, with an
        explainer to weigh and simulation among the methods, as a run weighs it (`weighs_top_tokens`)."""
        return self.top_tokens and bool(self.explainers) and "simulation" in self.methods

    def scorer_for(self, method: str) -> str:
        """Returns the model spec that scores with `method`: `scorer` when set, else what a run with the
        default config uses (`score.simulator` for simulation, `score.judge` for every other method)."""
        if self.scorer is not None:
            return self.scorer
        defaults = ScoreConfig()
        return defaults.simulator.model if method == "simulation" else defaults.judge.model


@dataclass(frozen=True)
class ExplainerVariant:
    """One explainer model and how it writes (`explainer.best_of`, `explainer.contrastive`)."""

    spec: str
    best_of: int = 1
    contrastive: bool = False

    @property
    def label(self) -> str:
        """Returns the report's name for it: `local:smollm2-135m best-of-3 contrastive`."""
        parts = [self.spec] + ([f"best-of-{self.best_of}"] if self.best_of > 1 else [])
        return " ".join(parts + (["contrastive"] if self.contrastive else []))


def parse_variant(spec: str, variant: str) -> ExplainerVariant:
    """Returns the variant named like `default`, `best-of-3`, `contrastive` or `best-of-3+contrastive`;
    raises ConfigError for anything else."""
    best_of, contrastive = 1, False
    for part in variant.split("+"):
        if part.startswith("best-of-") and part[8:].isdigit() and 1 <= int(part[8:]) <= 16:
            best_of = int(part[8:])
        elif part == "contrastive":
            contrastive = True
        elif part != "default":
            raise ConfigError(
                f"unknown explainer variant {variant!r}; use default, best-of-<k> (k 1-16), contrastive, or a + of them"
            )
    return ExplainerVariant(spec, best_of, contrastive)


def explainer_variants(settings: BenchSettings) -> list[ExplainerVariant]:
    """Returns every (explainer, variant) the benchmark runs, explainers first."""
    return [parse_variant(spec, v) for spec in settings.explainers for v in settings.explainer_variants]


def score_columns(settings: BenchSettings) -> list[tuple[str, str, SimulationPrompt]]:
    """Returns (report label, scoring method, simulation prompt) per scorer compared: simulation once per
    prompt (`simulation`, `simulation few-shot`), every other method once."""
    columns: list[tuple[str, str, SimulationPrompt]] = []
    for method in settings.methods:
        if method == "intruder":  # explanation-free: measured per feature (`autointerp.bench.hard`)
            continue
        prompts: list[SimulationPrompt] = settings.simulation_prompts if method == "simulation" else ["zero-shot"]
        for prompt in prompts:
            label = method if prompt == "zero-shot" or method != "simulation" else f"{method} {prompt}"
            columns.append((label, method, prompt))
    return columns
