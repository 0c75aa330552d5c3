"""Run configuration: pydantic models, loaded from TOML with `key.path=value` overrides.

One source of truth for a run. Unknown keys and bad values raise `ConfigError` with
the dotted key that is wrong, so a user knows what to fix.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autointerp.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DB_PATH = Path("results/autointerp.duckdb")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubjectConfig(_Section):
    model: str = Field(DEFAULT_MODEL, description="Alias, local folder, Hugging Face id or .gguf path.")
    """The subject model: `smollm2-135m` (embedded), a local folder, a Hugging Face id or a GGUF file."""
    device: str = "cpu"
    """Torch device for the subject model: `cpu`, `cuda`, `cuda:1` or `auto`."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype for the forward pass."""


class FeaturesConfig(_Section):
    kind: Literal["mlp"] = "mlp"
    """Feature source: `mlp` neurons (the activation entering the MLP's down projection)."""
    layer: int = Field(15, ge=0)
    """Transformer block whose MLP neurons are features."""
    indices: list[int] = Field(default_factory=list)
    """Neuron indices; empty means `count` neurons drawn with `seed`."""
    count: int = Field(24, ge=1)
    """How many neurons to draw when `indices` is empty."""
    seed: int = 0
    """Seed for drawing neurons."""

    @field_validator("indices")
    @classmethod
    def _non_negative_unique(cls, value: list[int]) -> list[int]:
        if any(i < 0 for i in value):
            raise ValueError("neuron indices must be >= 0")
        if len(set(value)) != len(value):
            raise ValueError("neuron indices must be unique")
        return value


class CorpusConfig(_Section):
    source: str = "builtin:python-docs"
    """`builtin:python-docs` (the Python documentation topics on this machine) or a .txt/.jsonl path."""
    text_field: str = "text"
    """Field holding the text in each JSONL record."""
    window_tokens: int = Field(32, ge=4, le=4096)
    """Tokens per window (context)."""
    max_windows: int = Field(1024, ge=1)
    """Stop after this many windows."""
    batch_size: int = Field(32, ge=1)
    """Windows per forward pass."""


class CollectConfig(_Section):
    top_k: int = Field(10, ge=2)
    """Top-activating windows kept per feature; alternate ranks go to the explainer and to scoring."""
    random_windows: int = Field(6, ge=1)
    """Random windows kept (shared by all features) and held out for scoring."""
    seed: int = 0
    """Seed for the random-window reservoir."""


class LLMRoleConfig(_Section):
    model: str = "local:smollm2-135m"
    """`backend:model`, for example `local:smollm2-135m`."""
    max_tokens: int = Field(24, ge=1, le=4096)
    """Most tokens generated per answer."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature; 0 is greedy."""
    retries: int = Field(2, ge=0, le=10)
    """Extra attempts when an answer cannot be parsed."""


class ScoreConfig(_Section):
    method: Literal["simulation"] = "simulation"
    """Scoring method: all-at-once simulation (Bills et al. 2023)."""
    simulator: LLMRoleConfig = Field(default_factory=LLMRoleConfig)
    """The model that predicts activations from the explanation."""


class ExperimentConfig(_Section):
    lowest_n: int = Field(3, ge=0)
    """Features with the lowest scores that get follow-up experiments."""
    texts_per_side: int = Field(2, ge=1, le=10)
    """Sentences requested that should / should not activate the feature."""
    proposer: LLMRoleConfig = Field(default_factory=lambda: LLMRoleConfig(max_tokens=40, retries=1))
    """The model that proposes experiments."""


class StoreConfig(_Section):
    path: Path = DEFAULT_DB_PATH
    """DuckDB file that holds every run."""


class RunConfig(_Section):
    run_id: str | None = None
    """Run identifier; by default derived from the config hash, so rerunning a config resumes it."""
    subject: SubjectConfig = Field(default_factory=SubjectConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    collect: CollectConfig = Field(default_factory=CollectConfig)
    explainer: LLMRoleConfig = Field(default_factory=LLMRoleConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    experiments: ExperimentConfig = Field(default_factory=ExperimentConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    def config_hash(self) -> str:
        """Returns a stable hash of everything that changes results (the store path excluded)."""
        data = self.model_dump(mode="json", exclude={"run_id", "store"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def resolved_run_id(self) -> str:
        """Returns `run_id`, or `run-<first 12 hex of the config hash>` when none is set."""
        return self.run_id or f"run-{self.config_hash()[:12]}"


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{key}'; check the spelling against `autointerp config`"
    return f"config key '{key}': {first['msg']} (got {first.get('input')!r})"


def _parse_override_value(raw: str) -> Any:
    """TOML-parses a scalar or list value; bare words stay strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns `data` with each `a.b.c=value` override set (creating sections as needed)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{override}' must look like section.key=value")
        parts = key.strip().split(".")
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
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
