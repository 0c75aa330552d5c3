"""Sparse dictionaries in EleutherAI sparsify's folder layout: `cfg.json` + `sae.safetensors`.

One folder per hook point, named for the module it hooks (`layers.15`, `layers.15.mlp`, also with a
`model.` or `gpt_neox.` prefix). `cfg.json` holds `d_in`, `k`, `num_latents` (0: `d_in x
expansion_factor`), `activation` (`topk`), `transcode` and `skip_connection`; the weights are
`encoder.weight` [num_latents, d_in], `encoder.bias` [num_latents], `W_dec` [num_latents, d_in],
`b_dec` [d_in] and, with a skip connection, `W_skip` [d_in, d_in] (not needed to read latents).

Latents are `topk(relu(encoder(x - b_dec)), k)` for an SAE and `topk(relu(encoder(x)), k)` for a
transcoder (which reads a module's input and predicts its output, so b_dec is an output bias).
Hook points: `layers.L` is the output of block L (`blocks.L.hook_resid_post`); for an SAE
`layers.L.mlp` is the MLP's output (`blocks.L.hook_mlp_out`); a transcoder of `layers.L.mlp` reads
the MLP's input (`blocks.L.ln2.hook_normalized`) and writes its output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from autointerp.errors import FeatureError
from autointerp.subject.sae import SparseAutoencoder, check_shapes, hook_layer

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"

_HOOKPOINT = re.compile(r"^(?:model\.|gpt_neox\.|transformer\.)?(?:layers|h)\.(\d+)(\.mlp)?$")


def sparsify_hook_names(hookpoint: str, transcode: bool) -> tuple[str, str | None]:
    """Returns (hook read, hook written or None for an SAE) in TransformerLens names for a sparsify
    hookpoint such as `layers.15` or `layers.15.mlp`; FeatureError when it is not understood."""
    match = _HOOKPOINT.match(hookpoint)
    if match is None:
        raise FeatureError(
            f"cannot tell the hook point from the sparsify folder name {hookpoint!r} (expected layers.L or "
            "layers.L.mlp); rename the folder or set features.hook"
        )
    layer, mlp = int(match.group(1)), match.group(2) is not None
    if transcode:
        if not mlp:
            return f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"
        return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    return (f"blocks.{layer}.hook_mlp_out" if mlp else f"blocks.{layer}.hook_resid_post"), None


def is_sparsify_folder(folder: Path) -> bool:
    """True when `folder` holds a sparsify checkpoint (`sae.safetensors`)."""
    return (Path(folder).expanduser() / WEIGHTS_FILE).is_file()


def _checkpoint_folder(folder: Path) -> Path:
    """Returns `folder`, or raises FeatureError listing the hook-point folders inside a multi-hook checkpoint."""
    if (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return folder
    inner = sorted(p.parent for p in folder.glob(f"*/{WEIGHTS_FILE}")) if folder.is_dir() else []
    if inner:
        choices = ", ".join(str(path) for path in inner[:5])
        raise FeatureError(
            f"{folder} holds one sparsify dictionary per hook point; set features.path to one: {choices}"
        )
    raise FeatureError(f"sparsify folder {folder} needs {CFG_FILE} and {WEIGHTS_FILE}; set features.path")


def load_sparsify(folder: Path, hook: str | None = None) -> SparseAutoencoder:
    """Returns the dictionary in a sparsify folder, reading at `hook` (a TransformerLens name) or at
    the hook point its folder name says; FeatureError names what is missing or wrong."""
    folder = _checkpoint_folder(Path(folder).expanduser())
    try:
        cfg: dict[str, Any] = json.loads((folder / CFG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, ValueError) as exc:
        raise FeatureError(f"cannot read sparsify dictionary in {folder}: {str(exc).splitlines()[0]}") from None
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in tensors]
    if missing:
        raise FeatureError(
            f"{folder / WEIGHTS_FILE} lacks tensor {missing[0]!r} (needs encoder.weight, encoder.bias, W_dec, b_dec)"
        )
    if cfg.get("activation", "topk") != "topk":
        raise FeatureError(f"{folder / CFG_FILE}: activation {cfg['activation']!r} is not supported (only topk)")
    if "k" not in cfg:
        raise FeatureError(f"{folder / CFG_FILE} has no 'k' (latents kept per token)")
    transcode = bool(cfg.get("transcode", False))
    if hook is not None:
        hook_layer(hook)
        read, written = hook, None
        if transcode:
            written = f"blocks.{hook_layer(hook)}.hook_mlp_out"
    else:
        read, written = sparsify_hook_names(folder.name, transcode)
    sae = SparseAutoencoder(
        W_enc=tensors["encoder.weight"].float().T.contiguous(),
        b_enc=tensors["encoder.bias"].float(),
        W_dec=tensors["W_dec"].float(),
        b_dec=tensors["b_dec"].float(),
        hook_name=read,
        apply_b_dec_to_input=not transcode,
        extra_cfg=cfg,
        k=int(cfg["k"]),
        hook_name_out=written,
    )
    check_shapes(sae, folder)
    if "d_in" in cfg and int(cfg["d_in"]) != sae.d_in:
        raise FeatureError(f"{folder / CFG_FILE} says d_in = {cfg['d_in']} but encoder.weight is {sae.d_in} wide")
    return sae


def save_sparsify(sae: SparseAutoencoder, folder: Path) -> None:
    """Writes `sae` (a TopK dictionary) as a sparsify checkpoint: cfg.json and sae.safetensors in `folder`
    (name the folder for its hook point, e.g. `layers.15`)."""
    if sae.k is None:
        raise FeatureError("only a TopK dictionary (k set) can be saved in the sparsify layout")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "encoder.weight": sae.W_enc.T,
        "encoder.bias": sae.b_enc,
        "W_dec": sae.W_dec,
        "b_dec": sae.b_dec,
    }
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, sae.d_sae // sae.d_in),
        "normalize_decoder": False,  # our decoder rows are not unit-norm; sparsify only uses this at init
        "num_latents": sae.d_sae,
        "k": sae.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": sae.is_transcoder,
        "d_in": sae.d_in,
    }
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def sparsify_hookpoint(hook_name: str) -> str:
    """Returns the sparsify folder name (`layers.L` or `layers.L.mlp`) of a TransformerLens hook point."""
    layer = hook_layer(hook_name)
    if hook_name.endswith("hook_resid_post"):
        return f"layers.{layer}"
    if hook_name.endswith(("hook_mlp_out", "ln2.hook_normalized")):
        return f"layers.{layer}.mlp"
    raise FeatureError(f"hook point {hook_name!r} has no sparsify folder name; use blocks.L.hook_resid_post")


def dense_latents(top_acts: torch.Tensor, top_indices: torch.Tensor, width: int) -> torch.Tensor:
    """Returns [..., width] latents from sparsify's (top_acts, top_indices) encoder output."""
    dense = torch.zeros((*top_acts.shape[:-1], width), dtype=top_acts.dtype, device=top_acts.device)
    return dense.scatter_(-1, top_indices, top_acts)
