"""Hook points: reading MLP neuron activations, stopping the forward pass early."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch
from torch import nn

from autointerp.errors import FeatureError
from autointerp.subject.model import SubjectModel


class _StopForward(Exception):
    """Raised inside a hook once the wanted activations are captured."""


def mlp_down_proj(subject: SubjectModel, layer: int) -> nn.Module:
    """Returns the down projection of block `layer`'s MLP (its input is the neuron activations)."""
    if not 0 <= layer < subject.n_layers:
        raise FeatureError(f"layer {layer} does not exist: {subject.slug} has layers 0..{subject.n_layers - 1}")
    block = subject.model.model.layers[layer]  # type: ignore[union-attr,index]
    return block.mlp.down_proj  # type: ignore[no-any-return]


def check_neuron_indices(subject: SubjectModel, indices: list[int]) -> None:
    """Raises FeatureError when an index is outside the MLP width."""
    bad = [i for i in indices if not 0 <= i < subject.d_mlp]
    if bad:
        raise FeatureError(f"neuron index {bad[0]} does not exist: MLP neurons are 0..{subject.d_mlp - 1}")


@contextmanager
def _capture_input(module: nn.Module, store: dict[str, torch.Tensor], stop: bool) -> Iterator[None]:
    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        store["value"] = inputs[0]
        if stop:
            raise _StopForward

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def mlp_neuron_activations(
    subject: SubjectModel,
    input_ids: torch.Tensor,
    layer: int,
    indices: list[int] | torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Returns activations [batch, tokens, len(indices)] of MLP neurons, skipping later blocks."""
    module = mlp_down_proj(subject, layer)
    captured: dict[str, torch.Tensor] = {}
    with _capture_input(module, captured, stop=True), suppress(_StopForward):
        subject.model(
            input_ids=input_ids.to(subject.device),
            attention_mask=None if attention_mask is None else attention_mask.to(subject.device),
            use_cache=False,
        )
    index = torch.as_tensor(indices, device=captured["value"].device, dtype=torch.long)
    return captured["value"].index_select(-1, index).float()
