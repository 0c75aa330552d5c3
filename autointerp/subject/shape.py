"""What is known of a subject model without loading it (`ModelShape`: layers, widths, family), and
the checks of layers, indices and hook points against it that the preflight and every feature-source
kind share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import FeatureError


@dataclass(frozen=True)
class ModelShape:
    """What the preflight knows of a model without loading it; None where only loading would tell."""

    folder: Path | None
    """A local folder with config.json and tokenizer files (None until a GGUF file is converted)."""
    slug: str = "the subject model"
    """The model's short name, as in feature ids."""
    n_layers: int | None = None
    d_mlp: int | None = None
    hidden_size: int | None = None
    model_type: str | None = None
    """config.json's model_type (None until a GGUF file is converted)."""


def check_layer(layer: int, shape: ModelShape) -> None:
    if shape.n_layers is not None and not 0 <= layer < shape.n_layers:
        raise FeatureError(f"layer {layer} does not exist: {shape.slug} has layers 0..{shape.n_layers - 1}")


def check_indices(indices: list[int], width: int | None, what: str) -> None:
    bad = [i for i in indices if width is not None and i >= width]
    if bad:
        raise FeatureError(f"{what} index {bad[0]} does not exist: {what}s are 0..{width - 1}")  # type: ignore[operator]


HOOK_KINDS = (
    "hook_resid_pre",
    "hook_resid_post",
    "hook_mlp_out",
    "hook_mlp_in",
    "ln2.hook_normalized",
    "mlp.hook_in",
    "mlp.hook_post",
)
"""The hook points a direction or dictionary may read or write (as in autointerp.subject.hooks)."""


def hook_width(hook: str, shape: ModelShape) -> int | None:
    """Returns the width of the activations at `hook` (the MLP's neurons for `mlp.hook_post`, else the
    model's width), None when unknown."""
    return shape.d_mlp if hook.endswith("mlp.hook_post") else shape.hidden_size


def check_hook(hook: str, shape: ModelShape) -> None:
    from autointerp.subject.sae import hook_layer

    layer = hook_layer(hook)
    check_layer(layer, shape)
    if hook.split(".", 2)[2] not in HOOK_KINDS:
        raise FeatureError(
            f"hook point {hook!r} is not supported; use one of blocks.{layer}.{{{', '.join(HOOK_KINDS)}}}"
        )
