"""Hook points: names, reading activations at them, stopping the forward pass early."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import torch
from torch import nn

from autointerp.errors import FeatureError
from autointerp.subject.model import SubjectModel
from autointerp.subject.sae import hook_layer


class _StopForward(Exception):
    """Raised inside a hook once the wanted activations are captured."""


_HOOK_KINDS = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_mlp_in", "ln2.hook_normalized")
"""`hook_mlp_in` is the residual stream the MLP's layer norm reads (TransformerLens's name);
`ln2.hook_normalized` is the normalised MLP input (what a transcoder of the MLP reads)."""


def check_layer(subject: SubjectModel, layer: int) -> None:
    """Raises FeatureError when `layer` is not a block of the subject model."""
    if not 0 <= layer < subject.n_layers:
        raise FeatureError(f"layer {layer} does not exist: {subject.slug} has layers 0..{subject.n_layers - 1}")


def hook_target(subject: SubjectModel, point: str) -> tuple[nn.Module, bool, int]:
    """Returns (module, read its input instead of its output, layer) for a hook point name."""
    if point.startswith("mlp."):
        layer = int(point.split(".")[1])
        check_layer(subject, layer)
        return subject.model.model.layers[layer].mlp.down_proj, True, layer  # type: ignore[union-attr,index]
    layer = hook_layer(point)
    check_layer(subject, layer)
    kind = point.split(".", 2)[2]
    if kind not in _HOOK_KINDS:
        raise FeatureError(
            f"hook point {point!r} is not supported; use one of blocks.{layer}.{{{', '.join(_HOOK_KINDS)}}}"
        )
    block = subject.model.model.layers[layer]  # type: ignore[union-attr,index]
    if kind == "hook_mlp_out":
        return block.mlp, False, layer
    if kind == "ln2.hook_normalized":
        return block.mlp, True, layer
    if kind == "hook_mlp_in":
        return block.post_attention_layernorm, True, layer
    return block, kind == "hook_resid_pre", layer


@torch.inference_mode()
def capture(subject: SubjectModel, token_ids: torch.Tensor, points: Sequence[str]) -> list[torch.Tensor]:
    """Returns the activations at each hook point, running the model body only as deep as needed."""
    targets = [hook_target(subject, p) for p in points]
    deepest = max(layer + (0 if is_input else 0.5) for _, is_input, layer in targets)
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def make_hook(slot: int, is_input: bool, depth: float) -> Any:
        def read(value: torch.Tensor) -> None:
            captured[slot] = value
            if len(captured) == len(targets) and depth == deepest:
                raise _StopForward

        if is_input:
            return lambda _m, args: read(args[0])
        return lambda _m, _args, output: read(output[0] if isinstance(output, tuple) else output)

    try:
        for slot, (module, is_input, layer) in enumerate(targets):
            hook = make_hook(slot, is_input, layer + (0 if is_input else 0.5))
            if is_input:
                handles.append(module.register_forward_pre_hook(hook))
            else:
                handles.append(module.register_forward_hook(hook))
        with suppress(_StopForward):
            subject.model.model(input_ids=token_ids.to(subject.device), use_cache=False)  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return [captured[slot] for slot in range(len(targets))]


def mlp_down_proj(subject: SubjectModel, layer: int) -> nn.Module:
    """Returns the down projection of block `layer`'s MLP (its input is the neuron activations)."""
    check_layer(subject, layer)
    block = subject.model.model.layers[layer]  # type: ignore[union-attr,index]
    return block.mlp.down_proj  # type: ignore[no-any-return]


def check_neuron_indices(subject: SubjectModel, indices: list[int]) -> None:
    """Raises FeatureError when an index is outside the MLP width."""
    bad = [i for i in indices if not 0 <= i < subject.d_mlp]
    if bad:
        raise FeatureError(f"neuron index {bad[0]} does not exist: MLP neurons are 0..{subject.d_mlp - 1}")


def mlp_neuron_activations(
    subject: SubjectModel, input_ids: torch.Tensor, layer: int, indices: list[int] | torch.Tensor
) -> torch.Tensor:
    """Returns activations [batch, tokens, len(indices)] of MLP neurons, skipping later blocks."""
    (neurons,) = capture(subject, input_ids, [f"mlp.{layer}"])
    index = torch.as_tensor(indices, device=neurons.device, dtype=torch.long)
    return neurons.index_select(-1, index).float()
