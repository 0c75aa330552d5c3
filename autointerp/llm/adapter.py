"""Low-rank adapters (LoRA, Hu et al. 2021) on a causal LM's last blocks: trained, saved, merged on load.

An adapter folder holds `adapter.json` (base model, rank, blocks, how it was trained and measured) and
`adapter.safetensors` (the A and B matrices, a few MB). Loading merges `W += (alpha / rank) * B @ A` into
a private copy of the base model, so a simulator with an adapter runs at the base model's speed and the
subject model (often the same base) is never changed.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autointerp.errors import SubjectModelError
from autointerp.llm.adapter_spec import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, read_adapter_config
from autointerp.subject.model import SubjectModel

_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update `(alpha / rank) * B @ A` (B starts at 0)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        bound = 1 / math.sqrt(base.in_features)
        a = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.lora_a = nn.Parameter(a.to(base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the base output plus the low-rank update."""
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def _adapted_names(model: nn.Module, blocks: list[int], targets: list[str]) -> list[str]:
    names = []
    for name, module in model.named_modules():
        block = _BLOCK.search(name)
        if isinstance(module, nn.Linear) and block and int(block[1]) in blocks and name.split(".")[-1] in targets:
            names.append(name)
    return names


def attach_lora(model: nn.Module, config: AdapterConfig, seed: int = 0) -> dict[str, LoRALinear]:
    """Replaces the target linear layers of `config.blocks` with LoRA layers (every other parameter frozen)
    and returns them by module name."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    adapted: dict[str, LoRALinear] = {}
    for name in _adapted_names(model, config.blocks, config.targets):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        lora = LoRALinear(getattr(parent, child), config.rank, config.alpha, generator)
        setattr(parent, child, lora)
        adapted[name] = lora
    if not adapted:
        raise SubjectModelError(f"no {'/'.join(config.targets)} layers in blocks {config.blocks} of this model")
    return adapted


def adapter_tensors(adapted: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """Returns the adapter's tensors by name (`<module>.lora_a` / `.lora_b`), on the CPU."""
    tensors = {}
    for name, lora in adapted.items():
        tensors[f"{name}.lora_a"] = lora.lora_a.detach().cpu().contiguous()
        tensors[f"{name}.lora_b"] = lora.lora_b.detach().cpu().contiguous()
    return tensors


def save_adapter(folder: Path, config: AdapterConfig, adapted: dict[str, LoRALinear]) -> Path:
    """Writes `adapter.json` and `adapter.safetensors` into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_tensors(adapted), str(folder / ADAPTER_WEIGHTS))
    return write_adapter_config(folder, config)


def write_adapter_config(folder: Path, config: AdapterConfig) -> Path:
    """Writes `adapter.json` into `folder` (e.g. again, once the evaluation is known); returns the folder."""
    (folder / ADAPTER_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")
    return folder


def merge_adapter(subject: SubjectModel, folder: Path) -> SubjectModel:
    """Returns a copy of `subject` whose weights include the adapter in `folder` (`subject` is unchanged);
    raises SubjectModelError when the adapter does not fit the model."""
    config = read_adapter_config(folder)
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    model = copy.deepcopy(subject.model)
    names = _adapted_names(model, config.blocks, config.targets)
    scale = config.alpha / config.rank
    with torch.no_grad():
        for name in names:
            a, b = tensors.get(f"{name}.lora_a"), tensors.get(f"{name}.lora_b")
            linear = model.get_submodule(name)
            if a is None or b is None or not isinstance(linear, nn.Linear):
                raise SubjectModelError(f"adapter {folder} has no weights for {name}; was it trained on this model?")
            update = (b @ a).to(linear.weight.dtype) * scale
            if update.shape != linear.weight.shape:
                raise SubjectModelError(
                    f"adapter {folder} does not fit {config.base_model}: {name} is {tuple(linear.weight.shape)}, "
                    f"the adapter gives {tuple(update.shape)}"
                )
            linear.weight += update.to(linear.weight.device)
    model.eval()
    return SubjectModel(model=model, tokenizer=subject.tokenizer, slug=subject.slug, device=subject.device)
