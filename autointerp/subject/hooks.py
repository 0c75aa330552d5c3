"""Hook points: names, reading activations at them, stopping the forward pass early.

Names are TransformerLens's (see `autointerp.subject.architectures` for what each means); `mlp.L` is
the MLP neurons of block L (`blocks.L.mlp.hook_post`). Each name resolves, through the model family's
adapter, to a module of the Hugging Face model whose input or output is the hook's value, or, for
`ln2.hook_normalized`, is computed from the input of the MLP's norm as TransformerLens computes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autointerp.errors import FeatureError
from autointerp.subject.model import SubjectModel


class _StopForward(Exception):
    """Raised inside a hook once the wanted activations are captured."""


_HOOK_KINDS = (
    "hook_resid_pre",
    "hook_resid_post",
    "hook_mlp_out",
    "hook_mlp_in",
    "ln2.hook_normalized",
    "mlp.hook_in",
    "mlp.hook_post",
)
"""`hook_mlp_in` is the residual stream the MLP's norm reads, `ln2.hook_normalized` that stream
normalised (before the norm's gain), `mlp.hook_in` the MLP's input (after the gain), `mlp.hook_post`
the MLP's neurons (TransformerLens's names and meanings)."""


@dataclass(frozen=True)
class HookSite:
    """Where a hook point's value is in the model: a module's input or output, maybe normalised."""

    module: nn.Module
    is_input: bool
    layer: int
    normalise: bool = False
    """ln2.hook_normalized: the value is the module's (the MLP norm's) input normalised, without its gain."""
    centre: bool = False
    """LayerNorm: subtract the mean before scaling (RMSNorm only scales)."""
    gain_offset: float = 0.0
    """The norm's gain is gain_offset + weight (Gemma: 1 + weight); edits at the site go through it."""

    def value(self, raw: torch.Tensor) -> torch.Tensor:
        """Returns the hook's value from the module's input (is_input) or output."""
        if not self.normalise:
            return raw
        h = raw.float()
        if self.centre:
            h = h - h.mean(-1, keepdim=True)
        return (h / (h.pow(2).mean(-1, keepdim=True) + _norm_eps(self.module)).sqrt()).to(raw.dtype)

    def gain(self) -> torch.Tensor | float:
        """Returns the norm's gain (what the normalised value is multiplied by), 1 without a weight."""
        weight = getattr(self.module, "weight", None)
        return 1.0 if weight is None else self.gain_offset + weight


def _norm_eps(norm: nn.Module | None) -> float:
    for attribute in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, attribute, None)
        if isinstance(value, int | float):
            return float(value)
    raise FeatureError(f"cannot find the epsilon of norm {type(norm).__name__}; the architecture adapter needs one")


def check_layer(subject: SubjectModel, layer: int) -> None:
    """Raises FeatureError when `layer` is not a block of the subject model."""
    if not 0 <= layer < subject.n_layers:
        raise FeatureError(f"layer {layer} does not exist: {subject.slug} has layers 0..{subject.n_layers - 1}")


def parse_hook(point: str) -> tuple[int, str]:
    """Returns (layer, kind) of `blocks.L.<kind>` or `mlp.L` (kind `mlp.hook_post`); FeatureError otherwise."""
    parts = point.split(".")
    if len(parts) == 2 and parts[0] == "mlp" and parts[1].isdigit():
        return int(parts[1]), "mlp.hook_post"
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise FeatureError(
            f"hook point {point!r} is not understood; use blocks.L.hook_resid_post, blocks.L.hook_resid_pre, "
            "blocks.L.hook_mlp_out, blocks.L.ln2.hook_normalized or blocks.L.mlp.hook_post"
        )
    layer, kind = int(parts[1]), ".".join(parts[2:])
    if kind not in _HOOK_KINDS:
        raise FeatureError(
            f"hook point {point!r} is not supported; use one of blocks.{layer}.{{{', '.join(_HOOK_KINDS)}}}"
        )
    return layer, kind


def hook_site(subject: SubjectModel, point: str) -> HookSite:
    """Returns where hook point `point` is in the subject model (FeatureError for a bad name or layer)."""
    layer, kind = parse_hook(point)
    check_layer(subject, layer)
    arch = subject.architecture
    block = arch.blocks_of(subject.model)[layer]
    if kind == "mlp.hook_post":
        return HookSite(arch.block_part(block, arch.neurons), True, layer)
    if kind == "hook_mlp_out":
        return HookSite(arch.block_part(block, arch.mlp_out_norm or arch.mlp), False, layer)
    if kind == "mlp.hook_in":
        return HookSite(arch.block_part(block, arch.mlp), True, layer)
    if kind == "hook_mlp_in":
        return HookSite(arch.block_part(block, arch.mlp_norm), True, layer)
    if kind == "ln2.hook_normalized":
        norm = arch.block_part(block, arch.mlp_norm)
        return HookSite(norm, True, layer, True, arch.norm == "layernorm", arch.norm_gain_offset)
    return HookSite(block, kind == "hook_resid_pre", layer)


def hook_target(subject: SubjectModel, point: str) -> tuple[nn.Module, bool, int]:
    """Returns (module hooked, whether its input is read, layer) for a hook point name (checks the name)."""
    site = hook_site(subject, point)
    return site.module, site.is_input, site.layer


def first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """Returns a module call's main input: its first positional argument or `hidden_states`."""
    return args[0] if args else kwargs["hidden_states"]  # type: ignore[no-any-return]


def output_tensor(output: Any) -> torch.Tensor:
    """Returns a module's main output (the first element of a tuple)."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[no-any-return]


def add_hook(module: nn.Module, hook: Callable[..., Any], *, pre: bool, with_kwargs: bool = False) -> Any:
    """Registers a forward (or forward pre-) hook that acts only on forward passes run by the thread
    registering it; returns its handle.

    A module's hooks are seen by every forward pass through it, whichever thread runs it: two threads
    reading or editing one shared model at once (two shards of a run in threads of one process, a
    scorer's threads beside an experiment) would otherwise read each other's activations or stop each
    other's forward pass.
    """
    owner = threading.get_ident()

    def own_thread_only(*args: Any, **kwargs: Any) -> Any:
        return hook(*args, **kwargs) if threading.get_ident() == owner else None

    if pre:
        return module.register_forward_pre_hook(own_thread_only, with_kwargs=with_kwargs)
    return module.register_forward_hook(own_thread_only, with_kwargs=with_kwargs)


def read_hook(site: HookSite, read: Callable[[torch.Tensor], None]) -> Any:
    """Registers a hook calling `read(value)` with the site's value on every forward of this thread;
    returns its handle."""
    if site.is_input:
        return add_hook(
            site.module, lambda _m, args, kwargs: read(site.value(first_tensor(args, kwargs))), pre=True,
            with_kwargs=True,
        )  # fmt: skip
    return add_hook(site.module, lambda _m, _args, output: read(site.value(output_tensor(output))), pre=False)


@torch.inference_mode()
def capture(subject: SubjectModel, token_ids: torch.Tensor, points: Sequence[str]) -> list[torch.Tensor]:
    """Returns the activations at each hook point, running the model body only as deep as needed."""
    sites = [hook_site(subject, p) for p in points]
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def make_reader(slot: int) -> Callable[[torch.Tensor], None]:
        def read(value: torch.Tensor) -> None:
            captured.setdefault(slot, value)
            if len(captured) == len(sites):
                raise _StopForward

        return read

    try:
        for slot, site in enumerate(sites):
            handles.append(read_hook(site, make_reader(slot)))
        with suppress(_StopForward):
            body = subject.architecture.body_of(subject.model)
            body(input_ids=token_ids.to(subject.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [captured[slot] for slot in range(len(sites))]


def mlp_down_proj(subject: SubjectModel, layer: int) -> nn.Module:
    """Returns the output projection of block `layer`'s MLP (its input is the neuron activations)."""
    check_layer(subject, layer)
    arch = subject.architecture
    return arch.block_part(arch.blocks_of(subject.model)[layer], arch.neurons)


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
