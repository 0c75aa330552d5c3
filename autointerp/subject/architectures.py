"""Architecture adapters: where each model family keeps the parts autointerp hooks.

An `Architecture` names, as dotted attribute paths, a Hugging Face causal LM's base model (run
without the LM head when only activations are wanted), its list of blocks, and in each block the MLP,
the norm the MLP reads through (TransformerLens's `ln2`), the MLP's output projection (whose input
is the MLP's neurons) and, where the family has one, the norm applied to the MLP's output before it
joins the residual stream (Gemma 2 and 3). It also says which config.json keys hold the widths, so the
preflight reads a model's shape without loading it.

Adapters are found by the config's `model_type`: the built-in families below, then any registered
with `register_architecture(...)` in code or under the `autointerp.architectures` entry-point group
(the name is the model_type, the object an `Architecture`).

TransformerLens hook names mean what they mean in TransformerLens 3 (no weight processing):

- `blocks.L.hook_resid_pre` / `hook_resid_post`: the residual stream entering / leaving block L;
- `blocks.L.hook_mlp_in`: the residual stream the MLP's norm reads (resid_mid; resid_pre for
  GPT-NeoX's parallel attention and MLP), before normalisation;
- `blocks.L.ln2.hook_normalized`: that stream normalised (LayerNorm: centred and scaled; RMSNorm:
  scaled), before the norm's gain and bias;
- `blocks.L.mlp.hook_in`: the MLP's input, the norm's output with its gain (and bias);
- `blocks.L.mlp.hook_post`: the MLP's neurons, the input of its output projection (`mlp.L` too);
- `blocks.L.hook_mlp_out`: what the MLP adds to the residual stream (after Gemma's
  post_feedforward_layernorm).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from torch import nn

from autointerp.errors import SubjectModelError
from autointerp.plugins import Registry


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its blocks, MLPs and norms, and how its config names its widths."""

    name: str
    model_types: tuple[str, ...]
    """config.json `model_type` values this adapter serves."""
    body: str
    """Path from the causal LM to its base model (embeddings, blocks, final norm; no LM head)."""
    blocks: str
    """Path from the causal LM to the list of blocks."""
    mlp: str
    """Path from a block to its MLP."""
    mlp_norm: str
    """Path from a block to the norm whose output the MLP reads (TransformerLens's ln2)."""
    neurons: str
    """Path from a block to the MLP's output projection; its input is the MLP's neurons."""
    final_norm: str
    """Path from the causal LM to the norm after the last block."""
    unembed: str
    """Path from the causal LM to the unembedding."""
    mlp_out_norm: str | None = None
    """Path from a block to a norm applied to the MLP's output before the residual add, if any."""
    norm: Literal["layernorm", "rms"] = "rms"
    """What the MLP's norm computes before its gain: centre and scale (layernorm) or scale (rms)."""
    norm_gain_offset: float = 0.0
    """The norm's gain is offset + weight (Gemma stores weight - 1)."""
    n_layers_keys: tuple[str, ...] = ("num_hidden_layers",)
    d_model_keys: tuple[str, ...] = ("hidden_size",)
    d_mlp_keys: tuple[str, ...] = ("intermediate_size",)
    d_mlp_factor: int | None = None
    """When no d_mlp key holds a number: d_mlp = factor x d_model (GPT-2's n_inner = null)."""

    def shape(self, config: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
        """Returns (n_layers, d_model, d_mlp) from a config.json dict; None where it says nothing."""

        def first(keys: tuple[str, ...]) -> int | None:
            for key in keys:
                value = config.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
            return None

        n_layers, d_model, d_mlp = first(self.n_layers_keys), first(self.d_model_keys), first(self.d_mlp_keys)
        if d_mlp is None and self.d_mlp_factor is not None and d_model is not None:
            d_mlp = self.d_mlp_factor * d_model
        return n_layers, d_model, d_mlp

    # the modules of a loaded model -----------------------------------------------------------------

    def body_of(self, model: nn.Module) -> nn.Module:
        """Returns the base model (runs the blocks without the LM head)."""
        return _get(model, self.body)

    def blocks_of(self, model: nn.Module) -> nn.ModuleList:
        """Returns the list of blocks."""
        return _get(model, self.blocks)  # type: ignore[return-value]

    def block_part(self, block: nn.Module, path: str) -> nn.Module:
        """Returns the module at `path` inside one block."""
        return _get(block, path)


def _get(root: nn.Module, path: str) -> Any:
    node: Any = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _llama_like(name: str, model_types: tuple[str, ...], **changes: Any) -> Architecture:
    """Llama's layout (`model.layers[L].mlp.down_proj`, post_attention_layernorm), with `changes`."""
    return replace(
        Architecture(
            name=name,
            model_types=model_types,
            body="model",
            blocks="model.layers",
            mlp="mlp",
            mlp_norm="post_attention_layernorm",
            neurons="mlp.down_proj",
            final_norm="model.norm",
            unembed="lm_head",
        ),
        **changes,
    )


BUILTIN_ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(
        name="gpt2",
        model_types=("gpt2",),
        body="transformer",
        blocks="transformer.h",
        mlp="mlp",
        mlp_norm="ln_2",
        neurons="mlp.c_proj",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        norm="layernorm",
        n_layers_keys=("n_layer", "num_hidden_layers"),
        d_model_keys=("n_embd", "hidden_size"),
        d_mlp_keys=("n_inner",),
        d_mlp_factor=4,
    ),
    Architecture(
        name="gpt_neox",
        model_types=("gpt_neox",),
        body="gpt_neox",
        blocks="gpt_neox.layers",
        mlp="mlp",
        mlp_norm="post_attention_layernorm",  # parallel or not, its input is what the MLP's norm reads
        neurons="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        unembed="embed_out",
        norm="layernorm",
    ),
    _llama_like("llama", ("llama", "mistral", "qwen2", "qwen3")),
    _llama_like("gemma", ("gemma",), norm_gain_offset=1.0),
    _llama_like(
        "gemma2",
        ("gemma2", "gemma3_text"),
        mlp_norm="pre_feedforward_layernorm",  # post_attention_layernorm normalises the attention's output
        mlp_out_norm="post_feedforward_layernorm",
        norm_gain_offset=1.0,
    ),
)

_BUILTIN = {model_type: arch for arch in BUILTIN_ARCHITECTURES for model_type in arch.model_types}
_PLUGINS: Registry[Architecture] = Registry("autointerp.architectures", "architecture")


def register_architecture(architecture: Architecture) -> None:
    """Registers `architecture` for each of its model_types in this process (before the built-ins)."""
    for model_type in architecture.model_types:
        _PLUGINS.register(model_type, architecture)


def supported_model_types() -> list[str]:
    """Returns every model_type an adapter serves, built-in or registered."""
    return sorted(set(_BUILTIN) | set(_PLUGINS.names()))


def architecture_for(model_type: object) -> Architecture:
    """Returns the adapter for a config's model_type; SubjectModelError naming the supported ones."""
    if isinstance(model_type, str):
        if model_type in _PLUGINS.names():
            return _PLUGINS.get(model_type)
        if model_type in _BUILTIN:
            return _BUILTIN[model_type]
    shown = repr(model_type) if isinstance(model_type, str) else "missing"
    raise SubjectModelError(
        f"model_type {shown} in config.json is not a supported architecture; supported: "
        f"{', '.join(supported_model_types())} (add one with autointerp.subject.architectures.register_architecture)"
    )
