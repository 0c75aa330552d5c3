"""Sparse dictionaries in EleutherAI sparsify's folder layout: `cfg.json` + `sae.safetensors`.

One folder per hook point, named for the module it hooks (`layers.15`, `layers.15.mlp`, also with a
`model.` or `gpt_neox.` prefix). `cfg.json` holds `d_in`, `k`, `num_latents` (0: `d_in x
expansion_factor`), `activation` (`topk`), `transcode` and `skip_connection`; the weights are
`encoder.weight` [num_latents, d_in], `encoder.bias` [num_latents], `W_dec` [num_latents, d_in],
`b_dec` [d_in] and, with a skip connection, `W_skip` [d_in, d_in] (not needed to read latents). Keys
a cfg.json leaves out default as in sparsify's `SparseCoderConfig` (k = 32, activation topk).

Latents are `topk(relu(encoder(x - b_dec)), k)` for an SAE and `topk(relu(encoder(x)), k)` for a
transcoder (which reads a module's input and predicts its output, so b_dec is an output bias); with
`activation = "groupmax"` the latents are k equal groups, each keeping its largest (sparsify's
`fused_encoder`). Checked against eai-sparsify 1.3.3 on the folders in tests/fixtures/dictionaries.
Hook points: `layers.L` is the output of block L (`blocks.L.hook_resid_post`); for an SAE
`layers.L.mlp` is the MLP's output (`blocks.L.hook_mlp_out`); a transcoder of `layers.L.mlp` reads
the MLP's input (`blocks.L.ln2.hook_normalized`) and writes its output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from autointerp.errors import FeatureError
from autointerp.subject.dictionary_spec import DictionarySpec, cfg_int, check_weights, load_tensors, read_cfg_json
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
        # sparsify hooks the input of the HF module `layers.L.mlp`: after the norm's gain (mlp.hook_in), not
        # TransformerLens's ln2.hook_normalized (before the gain)
        return f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out"
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


SPARSIFY_DEFAULTS = {"activation": "topk", "expansion_factor": 32, "num_latents": 0, "k": 32, "transcode": False}
"""`SparseCoderConfig`'s defaults in sparsify 1.3, used for keys a cfg.json leaves out (as sparsify does)."""


def read_sparsify_cfg(folder: Path, hook: str | None = None) -> DictionarySpec:
    """Reads a sparsify folder's cfg.json (not its weights) the way `SparseCoder.load_from_disk` does:
    `d_in` required, every other key defaulting as in `SparseCoderConfig`; the hook point from `hook` (a
    TransformerLens name) or the folder name. FeatureError (one line) for anything else."""
    folder = _checkpoint_folder(Path(folder).expanduser())
    cfg_file = folder / CFG_FILE
    cfg = {**SPARSIFY_DEFAULTS, **read_cfg_json(cfg_file, "sparsify")}
    activation = cfg["activation"]
    if activation not in ("topk", "groupmax"):
        raise FeatureError(f'{cfg_file}: activation is {activation!r}; expected "topk" or "groupmax" (sparsify\'s two)')
    d_in = cfg_int(cfg, "d_in", cfg_file, "the width it reads")
    k = cfg_int(cfg, "k", cfg_file, "latents kept per token")
    num_latents = cfg["num_latents"] or d_in * cfg_int(cfg, "expansion_factor", cfg_file, "latents per input width")
    if isinstance(num_latents, bool) or not isinstance(num_latents, int) or num_latents < 0:
        raise FeatureError(f"{cfg_file}: num_latents is {num_latents!r}; expected a positive integer (or 0)")
    if k > num_latents or (activation == "groupmax" and num_latents % k):
        raise FeatureError(
            f"{cfg_file}: k = {k} with {num_latents} latents; expected k <= num_latents"
            + (" and num_latents a multiple of k (groupmax)" if activation == "groupmax" else "")
        )
    transcode = bool(cfg["transcode"])
    if hook is not None:
        hook_layer(hook)
        read, written = hook, (f"blocks.{hook_layer(hook)}.hook_mlp_out" if transcode else None)
    else:
        read, written = sparsify_hook_names(folder.name, transcode)
    return DictionarySpec(
        folder=folder,
        cfg_file=cfg_file,
        weights_file=folder / WEIGHTS_FILE,
        layout="sparsify",
        architecture=f"{activation} transcoder" if transcode else activation,
        activation=activation,
        hook_name=read,
        hook_name_out=written,
        d_in=d_in,
        d_sae=num_latents,
        d_out=d_in if transcode else None,
        k=k,
        apply_b_dec_to_input=not transcode,
        cfg=cfg,
    )


def load_sparsify(folder: Path, hook: str | None = None) -> SparseAutoencoder:
    """Returns the dictionary in a sparsify folder, reading at `hook` (a TransformerLens name) or at
    the hook point its folder name says; FeatureError names what is missing or wrong."""
    spec = check_weights(read_sparsify_cfg(folder, hook))
    tensors = load_tensors(spec)
    sae = SparseAutoencoder(
        W_enc=tensors["encoder.weight"].float().T.contiguous(),
        b_enc=tensors["encoder.bias"].float(),
        W_dec=tensors["W_dec"].float(),
        b_dec=tensors["b_dec"].float(),
        hook_name=spec.hook_name,
        apply_b_dec_to_input=spec.apply_b_dec_to_input,
        extra_cfg=spec.cfg,
        k=spec.k,
        hook_name_out=spec.hook_name_out,
        group_max=spec.activation == "groupmax",
    )
    return check_shapes(sae, spec.folder)


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
        "activation": "groupmax" if sae.group_max else "topk",
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
