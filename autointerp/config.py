"""Run configuration: pydantic models, loaded from TOML with `key.path=value` overrides.

One source of truth for a run. Unknown keys and bad values raise `ConfigError` with
the dotted key that is wrong, so a user knows what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from autointerp.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DB_PATH = Path("results/autointerp.duckdb")
TokenRanking = Literal["strongest", "recurring"]
"""How the list of a feature's top tokens ranks them (`explainer.top_tokens_rank`)."""


def _known_plugins(group: str, what: str, names: list[str]) -> list[str]:
    """Returns `names` when the registry of `group` knows each; raises ValueError naming the choices."""
    from autointerp.plugins import Registry

    known = Registry(group, what).names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)}")
    return names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    """No setting takes NaN or infinity: `steering_strengths = [nan]` is an error, not a silent NaN run."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuses true / false (or a list holding one) for a setting that takes no booleans: pydantic reads
        `layer = true` as layer 1. Returns `value` unchanged."""
        items = value if isinstance(value, list) else [value]
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and any(isinstance(v, bool) for v in items) and not _takes_booleans(field.annotation):
            raise ValueError("takes a number or text, not true / false")
        return value


def _takes_booleans(annotation: Any) -> bool:
    """Returns whether a field's annotation (a type, a union, a list of them) admits bool."""
    return annotation is bool or any(_takes_booleans(arg) for arg in get_args(annotation))


class SubjectConfig(_Section):
    model: str = Field(DEFAULT_MODEL, description="Alias, local folder, Hugging Face id or .gguf path.")
    """The subject model: `smollm2-135m` (embedded), a local folder, a Hugging Face id or a GGUF file."""
    device: str = "cpu"
    """Torch device for the subject model: `cpu`, `cuda`, `cuda:1` or `auto`."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype for the forward pass."""


class FeaturesConfig(_Section):
    kind: str = "mlp"
    """Feature source, a name in the `autointerp.feature_sources` registry: `mlp` neurons (the input of
    the MLP's down projection), `sae` latents, user `direction`s, or `planted` features with known
    descriptions."""
    layer: int = Field(15, ge=0)
    """Transformer block whose MLP neurons (or, for directions, whose residual output) are read."""
    layers: list[int] | Literal["all"] | None = None
    """MLP only: several blocks at once, or "all" (then `indices`/`count` apply per block)."""
    indices: list[int] = Field(default_factory=list)
    """Neuron / latent / direction / planted-feature indices; empty means `count` drawn with `seed`."""
    count: int | Literal["all"] = 16
    """How many features to draw when `indices` is empty, or "all"."""
    seed: int = 0
    """Seed for drawing features."""
    path: Path | None = None
    """SAE folder (SAELens layout), direction matrix (.safetensors / .npy [n, d]) or planted-feature
    .py file (default: the builtin planted features)."""
    hook: str | None = None
    """Directions only: hook point, e.g. `blocks.15.hook_resid_post` (default: that of `layer`); sparsify
    dictionaries: the hook point they read, when their folder name does not say."""
    sign: Literal["positive", "negative", "both"] = "positive"
    """Which pole of each feature to explain: `positive` (the activation as it is), `negative` (its negative
    part, for gated-MLP neurons and directions; ids end in `-`), or `both` (two features per index,
    `.../417+` and `.../417-`, each explained and scored on its own)."""
    skip_first_tokens: int | Literal["auto"] = "auto"
    """Leading tokens of each window whose activations are not read: they are stored as 0 and left out of the
    max, mean and density (an experiment's text is read after as many start tokens). `auto`: 2 for features
    read off the model (the first position is an attention sink whose residual norm is many times any other's,
    and after a leading newline the second is too), 0 for planted features."""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        return _known_plugins("autointerp.feature_sources", "feature source", [value])[0]

    @field_validator("indices")
    @classmethod
    def _non_negative_unique(cls, value: list[int]) -> list[int]:
        if any(i < 0 for i in value):
            raise ValueError("feature indices must be >= 0")
        if len(set(value)) != len(value):
            raise ValueError("feature indices must be unique")
        return value

    @field_validator("layers")
    @classmethod
    def _some_unique_layers(cls, value: list[int] | str | None) -> list[int] | str | None:
        if isinstance(value, list):
            if not value:
                raise ValueError('give at least one layer, "all", or leave layers out (then `layer` is read)')
            if any(layer < 0 for layer in value):
                raise ValueError("layers must be >= 0")
            if len(set(value)) != len(value):
                raise ValueError("layers must be unique (a repeated block would give its neurons twice)")
        return value

    @field_validator("skip_first_tokens")
    @classmethod
    def _non_negative_skip(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError('skip_first_tokens must be >= 0 or "auto"')
        return value

    @field_validator("count")
    @classmethod
    def _positive_count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError('count must be >= 1 or "all"')
        return value


class CorpusConfig(_Section):
    source: str = "builtin:python-docs"
    """`builtin:python-docs` (the Python documentation topics on this machine), a .txt/.jsonl path, a
    dataset `hf:NAME[:CONFIG][@SPLIT]` (hub or local cache), a `save_to_disk` folder, or a .parquet /
    .csv / .arrow file."""
    text_field: str = "text"
    """Field (column) holding the text in each JSONL record or dataset row; a column of token-id lists is
    a pre-tokenised corpus, used as is."""
    window_tokens: int = Field(32, ge=4, le=4096)
    """Tokens per window (context)."""
    max_windows: int = Field(1024, ge=1)
    """Stop after this many windows."""
    batch_size: int = Field(32, ge=1)
    """Windows per forward pass."""


class CollectConfig(_Section):
    top_k: int = Field(8, ge=2)
    """Top-activating windows kept per feature; alternate ranks go to the explainer and to scoring."""
    quantiles: int = Field(4, le=100)
    """Bins of the window max, equal-width between 0 and the feature's max (the literature uses ~10); at
    least 1 (for no quantile windows, set `per_quantile = 0`)."""
    per_quantile: int = Field(2, ge=0)
    """Windows sampled per quantile bin; alternate ones go to the explainer and to scoring. 0: no quantile
    windows."""
    random_windows: int = Field(4, ge=1)
    """Non-activating windows per feature (every token below 10 % of the feature's max), sampled at random
    among them and held out for scoring; a feature with fewer kept is flagged (with `quiet_pass`, fewer only
    where the corpus holds fewer)."""
    quiet_pass: bool = True
    """Pass over the corpus again, once collected, for the features that came back short of non-activating
    windows while the corpus may hold more (a dense feature's quiet windows can be crowded out of the
    stream's reservoir): they get the exact random sample. Costs up to one more forward pass over the
    corpus, and only when some feature is short; false: keep what the stream kept."""
    min_firing_windows: int = Field(2, ge=1)
    """A feature that fires in fewer windows than this is not explained or scored (the reason is stored
    with it and shown by `autointerp runs`); one explain and one score window need at least 2."""
    seed: int = 0
    """Seed for the reservoirs' random keys."""
    checkpoint_every: int = Field(50, ge=0)
    """Save the collection state every this many batches (0: never); an interrupted run resumes there."""

    @field_validator("quantiles")
    @classmethod
    def _some_bins(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                "quantiles must be >= 1 (the number of bins); for no quantile windows set collect.per_quantile = 0"
            )
        return value


DEFAULT_SIMULATOR = "local:smollm2-135m-sim"
"""SmolLM2-135M-Instruct plus the LoRA adapter in autointerp/simulators/smollm2-135m-sim."""
DEFAULT_EXPLAINER = "local:smollm2-135m-explainer"
"""SmolLM2-135M-Instruct plus the LoRA adapter in autointerp/explainers/smollm2-135m-explainer
(`autointerp train-explainer`); `local:smollm2-135m` is the untrained model."""


class LLMRoleConfig(_Section):
    model: str = "local:smollm2-135m"
    """`backend:model`, for example `local:smollm2-135m`."""
    max_tokens: int = Field(24, ge=1, le=4096)
    """Most tokens generated per answer."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature; 0 is greedy."""
    retries: int = Field(2, ge=0, le=10)
    """Extra attempts when an answer cannot be parsed."""


class ExplainerConfig(LLMRoleConfig):
    """The explainer's model, and how its explanation is chosen and prompted."""

    model: str = DEFAULT_EXPLAINER
    """`backend:model`; by default SmolLM2-135M with the trained explainer adapter shipped in the package
    (`autointerp train-explainer`); `local:smollm2-135m` is the untrained model."""

    best_of: int = Field(1, ge=1, le=16)
    """Explanations sampled per feature; above 1, each is simulated (the run's `score.simulator`) on the
    explanation-split windows the explainer saw, never on held-out ones, and the best is kept. 1: one."""
    best_of_temperature: float = Field(0.7, gt=0.0, le=2.0)
    """Sampling temperature of candidates 2..k (the first keeps `temperature`)."""
    top_tokens_candidate: bool = True
    """In a run that scores by simulation and explains from input windows (not `evidence = "output"`), weigh
    the explainer's explanation against one that names the
    explanation windows' strongest tokens (`the words "some", "those" and "is"`, `autointerp.explain.top_tokens`):
    the run's simulator scores both on the explanation-split windows the explainer saw, never on held-out ones,
    and the better is kept (`details.best_of` records both). False: the explainer's alone, unless `best_of` > 1."""
    top_tokens_named: int = Field(5, ge=1, le=10)
    """How many distinct tokens that list names (`top_tokens_candidate`)."""
    top_tokens_rank: TokenRanking = "strongest"
    """How that list ranks the tokens that fire: `strongest` by their highest level; `recurring` by the windows
    they fire in times their mean level wherever they appear (`autointerp.explain.top_tokens.strongest_tokens`)."""
    contrastive: bool = False
    """Also show the explainer explanation-split windows where the feature does not fire, most similar to
    the activating ones first ("these similar texts do NOT activate it"); never held-out windows."""
    contrastive_windows: int = Field(3, ge=1, le=20)
    """Most non-activating windows shown when `contrastive` is on."""
    evidence: Literal["input", "output", "both"] = "input"
    """What the explainer reads: `input` windows (what the feature fires on), `output` evidence (the tokens
    its direct path promotes / suppresses and the token changes when it is steered; `explain_output.jinja`),
    or `both` (`explain_both.jinja`). A feature without output evidence is explained from its input."""


class ModelPriceConfig(_Section):
    input_per_mtok: float = Field(ge=0.0)
    """USD per million input (prompt) tokens."""
    output_per_mtok: float = Field(ge=0.0)
    """USD per million output (generated) tokens."""


class BackendLimitsConfig(_Section):
    concurrency: int | None = Field(None, ge=1, le=1024)
    """Most calls in flight at once to this backend; unset: `llm.concurrency`."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Most calls started per minute; unset: `llm.requests_per_minute`."""


class LocalGenerationConfig(_Section):
    """How a model in this process (`local:`) writes: guidance against loops for the roles that write free
    text, and answers constrained to the shape their parser reads (the proposer's word lists, sentences and
    words). Backends behind an API get the requests unguided."""

    no_repeat_ngram: int = Field(3, ge=0, le=20)
    """Never repeat an n-gram of this many tokens within one answer (only the answer: it may quote the
    prompt); 0: off."""
    repetition_penalty: float = Field(1.15, ge=1.0, le=3.0)
    """Divide the logits of tokens the answer already wrote by this (1: off)."""
    guided_roles: list[str] = Field(default_factory=lambda: ["explain", "revise", "propose"])
    """Roles whose calls get `no_repeat_ngram` and `repetition_penalty` (not simulation or judges, whose
    answers repeat by design)."""
    structured: bool = True
    """Constrain answers to the shape their parser reads, where the caller names one (the proposer)."""


class LLMConfig(_Section):
    """Settings shared by every LLM role: cache, limits, budget and prices. They do not change results,
    so they are left out of the config hash: raising the budget and rerunning resumes the same run."""

    cache: bool = True
    """Reuse stored answers to identical requests (same backend, model, messages and parameters)."""
    cache_sampled: bool = False
    """Also cache requests with temperature > 0 (off: a sampled request is always sent)."""
    cache_path: Path | None = None
    """SQLite file of cached answers; unset: `$AUTOINTERP_CACHE/llm-cache/responses.sqlite`."""
    concurrency: int = Field(8, ge=1, le=1024)
    """Most calls in flight at once per backend (a local model serialises its own calls)."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Most calls started per minute per backend; unset: no limit."""
    limits: dict[str, BackendLimitsConfig] = Field(default_factory=dict)
    """Per-backend limits keyed by `backend` or `backend:model`, e.g. `[llm.limits.openai]`."""
    max_tokens: int | None = Field(None, ge=0)
    """Budget: stop the run before a call once the run's input + output tokens reach this."""
    max_cost_usd: float | None = Field(None, ge=0.0)
    """Budget: stop the run before a call once the run's cost reaches this many USD."""
    prices: dict[str, ModelPriceConfig] = Field(default_factory=dict)
    """Price overrides keyed by `backend:model` or `backend:*`, on top of the built-in table."""
    local: LocalGenerationConfig = Field(default_factory=LocalGenerationConfig)
    """Guided generation of local models (`[llm.local]`): no loops, answers in the asked shape. It changes
    local answers; each call's record and cache key carry the guidance it got."""

    @field_validator("limits", "prices")
    @classmethod
    def _keys_name_backends(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if value:  # a key that names no backend would be ignored without a word
            from autointerp.llm.registry import backend_names

            known = backend_names()
            for key in value:
                if key.split(":", 1)[0] not in known:
                    raise ValueError(
                        f"llm.{info.field_name} key {key!r} names no backend; write backend or backend:model"
                        f" with a backend from {', '.join(known)}"
                    )
        return value

    prompts: Path | None = None
    """A folder of your own prompt templates, e.g. for a different explainer model: `<role>.jinja` files
    (`explain.jinja`, `simulate.jinja`, ...; see the installed `prompts/`); a role with no file there uses
    the installed template. The preflight checks that each uses exactly the variables its stage provides.
    Unset: `$AUTOINTERP_PROMPTS`, else the installed templates."""


ScoreMethod = str
"""A scorer's name in the `autointerp.scorers` registry (built-ins: simulation, detection, fuzzing, embedding)."""


def _default_score_methods() -> list[ScoreMethod]:
    return ["simulation", "embedding"]


class ScoreConfig(_Section):
    methods: list[ScoreMethod] = Field(default_factory=_default_score_methods)
    """Scorers to run: `simulation` (Bills et al. 2023), `detection` and `fuzzing` (Paulo et al. 2024),
    `embedding` (all-MiniLM-L6-v2). Each is also run on a distractor explanation for its chance level."""
    simulator: LLMRoleConfig = Field(default_factory=lambda: LLMRoleConfig(model=DEFAULT_SIMULATOR))
    """The simulation scorer's model: by default SmolLM2-135M with the trained simulator adapter shipped in
    the package (`autointerp train-simulator`); `local:smollm2-135m` is the untrained model."""
    """The model that predicts activations from the explanation (simulation)."""
    simulation: Literal["auto", "all-at-once", "generate"] = "auto"
    """`all-at-once` reads token probabilities (local backends); `generate` parses written "token<TAB>value"
    lines (any backend); `auto` picks all-at-once for local backends and generate otherwise."""
    simulation_prompt: Literal["zero-shot", "few-shot"] = "zero-shot"
    """All-at-once simulation prompt: `zero-shot` (`simulate.jinja`: the description alone) or `few-shot`
    (`simulate_fewshot.jinja`: worked examples of descriptions and their "token<TAB>value" lines first,
    as Bills et al. 2023). Generated simulation always uses `simulate_generate.jinja`."""
    simulation_prior: Literal["subtract", "keep"] = "subtract"
    """All-at-once simulation: `subtract` takes the simulator's prediction under a description that says
    nothing ("nothing in particular") from each explanation's, token by token, before the correlations, so a
    score credits only what the description adds to the simulator's own guess from the tokens (one more
    prompt per held-out window, shared by an explanation and its distractor; planted benchmark AUROC 0.67 ->
    0.77 at 32 tokens); `keep` correlates the predictions as read (Bills et al. 2023), as runs stored before
    this setting did. Generated simulation always keeps them. `ev_correlation_score` is computed on the
    predictions as read either way."""
    judge: LLMRoleConfig = Field(default_factory=lambda: LLMRoleConfig(max_tokens=4))
    """The model that answers yes/no for detection and fuzzing."""
    judge_windows_per_prompt: int = Field(1, ge=1, le=50)
    """Windows the judge sees in one prompt (detection, fuzzing). 1: one prompt per window (P("yes") where
    the backend gives probabilities). Above 1, as delphi does: the judge answers with a list of 1 / 0, one
    per window; fewer calls and tokens, balanced accuracy only; a list that does not parse fails its windows."""
    distractor: bool = True
    """Also score another feature's explanation (chosen deterministically) as the chance level."""
    distractor_from: Literal["random", "neighbour"] = "random"
    """Whose explanation is the distractor: a random feature's (an easy chance level), or the nearest
    neighbour's that has one (`autointerp.neighbours`: a harder, more telling baseline; falls back to a random
    feature's when no neighbour is explained). Each score's details say which (`distractor_from`)."""
    negatives: Literal["random", "neighbour", "both"] = "random"
    """Non-firing windows of detection, fuzzing, simulation and the intruder test: `random` (easy), `neighbour`
    (hard negatives: a neighbour's top windows where this feature does not fire) or `both` (the plain metrics on
    random windows, and `<metric>_hard` on neighbour windows, side by side). Each score's details say which."""
    intruder_windows: int = Field(4, ge=3, le=10)
    """Intruder scorer: windows per prompt, k (k-1 activating, one intruder); chance is 1/k."""
    intruder_prompts: int = Field(6, ge=1, le=100)
    """Intruder scorer: prompts per feature."""
    batch_size: int = Field(8, ge=1)
    """Prompts per padded forward pass of a local scorer."""
    # the output scorer (`output`, Gur-Arieh et al. 2025): steered vs clean continuations, judged
    output_prompts: int = Field(4, ge=1, le=12)
    """Output scorer: held-out neutral prompts continued per feature, once steered and once not."""
    output_strength: float = Field(4.0, gt=0.0, le=1000.0)
    """Output scorer: steering adds this x the feature's max activation at every position."""
    output_tokens: int = Field(8, ge=1, le=64)
    """Output scorer: tokens generated per continuation."""

    @field_validator("methods")
    @classmethod
    def _known_unique_methods(cls, value: list[ScoreMethod]) -> list[ScoreMethod]:
        if not value:
            raise ValueError("choose at least one scoring method")
        if len(set(value)) != len(value):
            raise ValueError("scoring methods must be unique")
        return _known_plugins("autointerp.scorers", "scoring method", value)


ExperimentKind = str
"""A name in the `autointerp.experiment_kinds` registry (built-ins: input, minimal_pair, ablation, steering)."""
ALL_EXPERIMENT_KINDS: tuple[ExperimentKind, ...] = ("input", "minimal_pair", "ablation", "steering")


class ExperimentConfig(_Section):
    lowest_n: int = Field(2, ge=0)
    """At most this many features get experiments: those scoring below `score_threshold`, lowest first."""
    score_threshold: float = Field(0.5, ge=-1.0, le=1.0)
    """Explanations scoring below this are investigated; reaching it stops the loop."""
    on_disagreement: bool = True
    """Also investigate features whose scorers disagree: one beats its distractor, another does not."""
    max_rounds: int = Field(1, ge=1, le=20)
    """Experiment-and-revise rounds per feature (each round may write one revised explanation)."""
    kinds: list[ExperimentKind] = Field(default_factory=lambda: list(ALL_EXPERIMENT_KINDS))
    """Experiments run each round."""
    texts_per_side: int = Field(2, ge=1, le=10)
    """Sentences requested that should / should not activate the feature."""
    steering_strengths: list[float] = Field(default_factory=lambda: [4.0])
    """Steering adds strength x the feature's max activation to it at every position."""
    ablation: Literal["zero", "mean"] = "zero"
    """Ablation sets the feature to 0 or to its mean activation over the corpus."""
    proposer: LLMRoleConfig = Field(default_factory=lambda: LLMRoleConfig(max_tokens=40, retries=1))
    """The model that proposes experiments and predictions."""

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("experiment kinds must be unique (a repeated kind would run twice each round)")
        return _known_plugins("autointerp.experiment_kinds", "experiment kind", value)

    @field_validator("steering_strengths")
    @classmethod
    def _strengths_for_steering(cls, value: list[float], info: ValidationInfo) -> list[float]:
        if not value and "steering" in info.data.get("kinds", []):
            raise ValueError("give at least one strength, or drop 'steering' from experiments.kinds")
        return value


class StoreConfig(_Section):
    path: Path = DEFAULT_DB_PATH
    """DuckDB file that holds every run."""


class ScheduleConfig(_Section):
    incremental: bool = False
    """Explain only features that are new or whose latest explanation (in any earlier run) came from a
    different explainer model or prompt template; scheduled runs turn this on."""


class NeighboursConfig(_Section):
    """Each feature's nearest features (`autointerp.neighbours`): by write-direction cosine (among every
    feature of its dictionary or layer) and by co-occurrence (the run's features firing in the same windows,
    counted during collection). Hard negatives, hard distractors and the intruder test read them."""

    enabled: bool = True
    """Compute and store neighbours (cosine after collection; co-occurrence counted during it)."""
    k: int = Field(10, ge=1, le=1000)
    """Neighbours kept per feature and kind."""
    cosine_scope: Literal["hook", "source"] = "hook"
    """Search each layer's (hook point's) features separately (`hook`), or all of the source's layers
    together (`source`, e.g. all 46,080 neurons of a `layers: all` run)."""
    max_cooccurrence_entries: int = Field(20_000_000, ge=1)
    """Co-occurrence log cap (16 bytes per (window, feature) that may fire); past it the run keeps no
    co-occurrence neighbours and says so."""


class OutputsConfig(_Section):
    """Output evidence (`autointerp.outputs`), computed right after collection for every live feature that
    writes into the residual stream: the tokens its write direction promotes and suppresses on the direct
    path to the logits, and the next tokens that steering it raises and lowers."""

    enabled: bool = True
    """Compute and store output evidence (planted input features are stored with the reason they have none)."""
    top_k: int = Field(10, ge=1, le=1000)
    """Tokens kept per list (promoted, suppressed, raised, lowered)."""
    steer_prompts: int = Field(4, ge=0, le=1000)
    """Neutral prompts (the first window of each of the corpus's first documents) each feature is steered
    on; every prompt costs one forward pass per feature. 0: direct path only."""
    steer_tokens: int = Field(16, ge=2, le=4096)
    """Tokens per steering prompt."""
    steer_scale: float = Field(4.0, gt=0.0)
    """Steering adds steer_scale x the feature's max activation to it at every position."""
    steer_batch_rows: int = Field(32, ge=1)
    """(feature, prompt) rows per steered forward pass."""
    direct_block: int = Field(512, ge=1)
    """Features per direct-path matrix product (memory: block x vocab floats)."""


_NEW_SECTION_DEFAULTS: dict[str, type[_Section]] = {"neighbours": NeighboursConfig, "outputs": OutputsConfig}
"""Sections added after runs were stored: hashed only when set otherwise than their defaults."""

_NEW_KEY_DEFAULTS: dict[tuple[str, str], Any] = {
    ("features", "sign"): "positive",
    ("features", "skip_first_tokens"): 0,
    ("collect", "quiet_pass"): False,
    ("score", "simulation_prompt"): "zero-shot",
    ("score", "simulation_prior"): "keep",
    ("explainer", "best_of"): 1,
    ("explainer", "best_of_temperature"): 0.7,
    ("explainer", "top_tokens_candidate"): False,
    ("explainer", "top_tokens_named"): 3,
    ("explainer", "top_tokens_rank"): "strongest",
    ("explainer", "contrastive"): False,
    ("explainer", "contrastive_windows"): 3,
}
"""(section, key) -> default of keys added after runs were stored: hashed only when set otherwise."""


class DistributedConfig(_Section):
    """A run split into shards, each a Prefect flow run executed by a work pool's workers. Sharding
    does not change results, so this section is left out of the config hash."""

    shards: int = Field(1, ge=1, le=100_000)
    """How many shards per stage: collection splits the corpus, the LLM stages split the features."""
    work_pool: str | None = None
    """Prefect work pool whose workers run the shards; unset: the whole run in this process, as always."""
    results_dir: str | None = None
    """Where shards write their result parts: a path (or fsspec URL) that workers and this process share;
    unset: `parts/` beside the DuckDB file."""
    retries: int = Field(2, ge=0, le=100)
    """Times a crashed, failed or lost shard is started again before the run fails."""
    heartbeat_timeout_s: float = Field(120.0, gt=0)
    """A running shard whose heartbeat (a file in its part) stops changing this long is lost (its worker
    died) and is started again."""
    start_timeout_s: float = Field(600.0, gt=0)
    """A shard that a worker picked up (Pending) but that has not started running after this long is
    lost (its worker died while starting it) and is started again."""
    deployment: str = "autointerp-shard"
    """Name of the deployment of the shard flow that this run creates (or updates) on the work pool."""
    source: str | None = None
    """Where workers get the code (`flow.from_source`): a directory they can read or a git URL; unset:
    the directory this autointerp is imported from."""
    image: str | None = None
    """Docker / Kubernetes pools: an image with autointerp installed; the deployment then runs the shard
    flow from the image (`flow.deploy(image=...)`) and `source` is not used."""


RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
"""A run id names folders and files (checkpoints, a campaign's results): no separators, spaces or `..`."""


UNHASHED_SECTIONS = {"run_id", "store", "llm", "schedule", "distributed"}
"""Parts of a config that do not change a run's results: left out of its hash, free to change on a resume."""


class RunConfig(_Section):
    run_id: str | None = None
    """Run identifier; by default derived from the config hash, so rerunning a config resumes it."""

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str | None) -> str | None:
        if value and (not RUN_ID_PATTERN.fullmatch(value) or ".." in value):
            raise ValueError(
                "a run id may hold letters, digits, '_', '-' and '.' (not first, no '..'), at most 128 characters:"
                " it names folders and files"
            )
        return value

    subject: SubjectConfig = Field(default_factory=SubjectConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    collect: CollectConfig = Field(default_factory=CollectConfig)
    explainer: ExplainerConfig = Field(default_factory=ExplainerConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    experiments: ExperimentConfig = Field(default_factory=ExperimentConfig)
    neighbours: NeighboursConfig = Field(default_factory=NeighboursConfig)
    """Nearest features by write-direction cosine and by co-occurrence."""
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    """Output evidence: direct-path and steering token effects of each feature."""
    store: StoreConfig = Field(default_factory=StoreConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    """Cache, concurrency and rate limits, budget and prices for every LLM call of the run."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Scheduled (incremental) runs; left out of the config hash, like `llm`."""
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    """Shards on a Prefect work pool; left out of the config hash, like `llm`."""

    @model_validator(mode="after")
    def _reads_some_token(self) -> RunConfig:
        skip = self.features.skip_first_tokens
        if isinstance(skip, int) and skip >= self.corpus.window_tokens:
            raise ValueError(
                f"features.skip_first_tokens = {skip} leaves no token of a {self.corpus.window_tokens}-token window "
                "to read; lower it or raise corpus.window_tokens"
            )
        return self

    def config_hash(self) -> str:
        """Returns a stable hash of everything that changes results (the store path and llm limits excluded).

        Keys added after a release are left out while they hold their default (`_NEW_KEY_DEFAULTS`), so
        a config that does not use them keeps its hash, and its run id."""
        return hashlib.sha256(json.dumps(self.hashed_settings(), sort_keys=True).encode()).hexdigest()

    def hashed_settings(self) -> dict[str, Any]:
        """Returns the settings `config_hash` covers, as JSON data: every section but the run id, store, llm,
        schedule and distributed ones, less new keys and sections that hold their defaults."""
        data = self.model_dump(mode="json", exclude=UNHASHED_SECTIONS)
        for (section, key), default in _NEW_KEY_DEFAULTS.items():
            if data.get(section, {}).get(key) == default:
                del data[section][key]
        for section, settings in _NEW_SECTION_DEFAULTS.items():
            if data.get(section) == settings().model_dump(mode="json"):
                del data[section]
        return data

    def resolved_run_id(self) -> str:
        """Returns `run_id`, or `run-<first 12 hex of the config hash>` when none is set."""
        return self.run_id or f"run-{self.config_hash()[:12]}"


def _with_new_key_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """Returns a copy of a stored config whose sections hold the keys added since with their behaviour from
    before (`_NEW_KEY_DEFAULTS`), where the stored sections lack them."""
    stored = {name: dict(value) if isinstance(value, dict) else value for name, value in stored.items()}
    for (section, key), default in _NEW_KEY_DEFAULTS.items():
        if isinstance(stored.get(section), dict):
            stored[section].setdefault(key, default)
    return stored


def stored_run_config(stored: dict[str, Any] | None) -> RunConfig | None:
    """Returns the config a run was stored with (its `runs.config` JSON data), keys added since holding the
    behaviour from before (`_NEW_KEY_DEFAULTS`), not today's default; None when none was stored or it no
    longer validates (written by a version whose keys this one does not know)."""
    if not stored:
        return None
    try:
        return RunConfig.model_validate(_with_new_key_defaults(stored))
    except ValidationError:
        return None


def stored_features_config(stored: dict[str, Any] | None) -> FeaturesConfig | None:
    """Returns the `features` section a run was stored with, as `stored_run_config` reads it, even where
    another section no longer validates here (a plugin scorer or backend this install lacks); None when no
    features section was stored or it does not validate."""
    if not stored or not isinstance(stored.get("features"), dict):
        return None
    try:
        return FeaturesConfig.model_validate(_with_new_key_defaults(stored)["features"])
    except ValidationError:
        return None


def changed_settings(stored: dict[str, Any], config: RunConfig) -> list[str] | None:
    """Returns the settings (`key: old -> new`) in which `config` differs from a run's stored config, over
    what the config hash covers; [] when they agree, None when the stored config no longer validates
    (written by a version whose keys this one does not know) or was not stored."""
    old = stored_run_config(stored)
    if old is None:
        return None
    before, after = _flatten(old.hashed_settings()), _flatten(config.hashed_settings())
    # a new key left out of one side's hash holds its default there: named with its value
    old_values = _flatten(old.model_dump(mode="json", exclude=UNHASHED_SECTIONS))
    new_values = _flatten(config.model_dump(mode="json", exclude=UNHASHED_SECTIONS))
    return [
        f"{key}: {json.dumps(old_values.get(key))} -> {json.dumps(new_values.get(key))}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Returns nested dicts as one dict of dotted keys (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_UNION_MEMBER = re.compile(r"int|str|float|bool|none|[a-z_-]+\[.*\]")
"""How pydantic names the member of a union in an error's location (`int`, `list[int]`, `literal['all']`)."""


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    # a union's member is named in the location ('features.layers.list[int].0'): not a key the user wrote
    key = ".".join(str(part) for part in first["loc"] if not _UNION_MEMBER.fullmatch(str(part)))
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{key}'; check the spelling against `autointerp config`"
    message = str(first["msg"]).removeprefix("Value error, ")
    if not key:  # a check across sections (a model validator): its message names the keys
        return message
    return f"config key '{key}': {message} (got {first.get('input')!r})"


def _parse_override_value(raw: str) -> Any:
    """TOML-parses a scalar or list value; bare words stay strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _key_path(key: str) -> list[str]:
    """Returns the parts of a dotted key, read as TOML where it parses (`llm.prices."openai:gpt-4.1".input`
    has four parts), else split on dots (`llm.prices.openai-compatible:*`)."""
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        return key.split(".")
    parts = []
    while isinstance(node, dict):
        (part, node), *_ = node.items()
        parts.append(part)
    return parts


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns `data` with each `a.b.c=value` override set (creating sections as needed)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{override}' must look like section.key=value")
        parts = _key_path(key.strip())
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{override}': '{part}' is not a section")
            node = child
        node[parts[-1]] = _parse_override_value(raw.strip())
    return data


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Returns the validated run config from a TOML file (optional) plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"config file {path} is a folder; pass a .toml file") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start});"
                " save it as UTF-8"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
