"""Where a LoRA adapter (a trained simulator or explainer) lives and what it records: read without loading
torch (the preflight uses it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from autointerp.errors import SubjectModelError

ADAPTER_CONFIG = "adapter.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
SimulationLines = Literal["token", "previous-and-token"]
"""How a simulation prompt writes each token's line: the token alone, or the token before it, ` ->` and the
token (so a description of the previous token is read within the line)."""
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of a Llama-style block that get an adapter."""


@dataclass
class AdapterConfig:
    """What `adapter.json` records: enough to rebuild the simulator and to say where it came from."""

    base_model: str
    rank: int
    alpha: float
    blocks: list[int]
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    prompt: str = "simulate"
    """The prompt template the adapter was trained on: `simulate` or `explain` (its hash is in `training`)."""
    lines: SimulationLines = "token"
    """How the simulator's prompt writes each token's line (a simulator reads them as it was trained)."""
    training: dict[str, Any] = field(default_factory=dict)
    """Command, data, steps, seed, held-out loss and benchmark numbers."""


def is_adapter_folder(path: Path) -> bool:
    """Returns whether `path` is a folder holding an adapter."""
    return (path / ADAPTER_CONFIG).is_file()


def read_adapter_config(folder: Path) -> AdapterConfig:
    """Returns the folder's adapter config; raises SubjectModelError (one line) when it is missing or bad."""
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise SubjectModelError(f"{folder} is not an adapter folder: it has no {ADAPTER_CONFIG}")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise SubjectModelError(f"adapter {folder} has no {ADAPTER_WEIGHTS}; train it again")
    try:
        config = AdapterConfig(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise SubjectModelError(f"{path} is not a valid adapter config: {exc}") from None
    if config.lines not in get_args(SimulationLines):
        raise SubjectModelError(f"{path}: lines must be one of {', '.join(get_args(SimulationLines))}")
    return config


ADAPTER_SEPARATOR = "+adapter="
PACKAGED_SIMULATORS = {"smollm2-135m-sim": "smollm2-135m-sim"}
"""Aliases of simulator adapters shipped inside the package (folder under `autointerp/simulators/`)."""
PACKAGED_EXPLAINERS = {"smollm2-135m-explainer": "smollm2-135m-explainer"}
"""Aliases of explainer adapters shipped inside the package (folder under `autointerp/explainers/`)."""


def packaged_adapter(alias: str) -> Path:
    """Returns the folder of an adapter shipped with autointerp (a simulator or an explainer)."""
    package = Path(__file__).resolve().parent.parent
    if alias in PACKAGED_EXPLAINERS:
        return package / "explainers" / PACKAGED_EXPLAINERS[alias]
    return package / "simulators" / PACKAGED_SIMULATORS[alias]


def resolve_local_model(model: str) -> tuple[str, Path | None]:
    """Returns (base model name, adapter folder or None) for a `local:` model: `<base>+adapter=<folder>`,
    an adapter folder (its base comes from adapter.json), a packaged alias such as `smollm2-135m-sim` or
    `smollm2-135m-explainer`, or a plain model name (no adapter). Raises SubjectModelError for an adapter
    that cannot be read."""
    if ADAPTER_SEPARATOR in model:
        base, _, folder = model.partition(ADAPTER_SEPARATOR)
        path = Path(folder).expanduser()
        read_adapter_config(path)
        return base, path
    if model.lower() in PACKAGED_SIMULATORS or model.lower() in PACKAGED_EXPLAINERS:
        path = packaged_adapter(model.lower())
        return read_adapter_config(path).base_model, path
    path = Path(model).expanduser()
    if path.is_dir() and is_adapter_folder(path):
        return read_adapter_config(path).base_model, path
    return model, None
