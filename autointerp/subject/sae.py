"""Sparse dictionaries (SAEs and transcoders) and the SAELens folder layout: `cfg.json` +
`sae_weights.safetensors`.

The weights are `W_enc` [d_in, d_sae], `b_enc` [d_sae], `W_dec` [d_sae, d_out], `b_dec` [d_out]
(d_out = d_in for an SAE) and, for a JumpReLU dictionary, `threshold` [d_sae] (or `log_threshold`).
Latents are `act((x - b_dec) @ W_enc + b_enc)` when `apply_b_dec_to_input` is true (SAELens's
default for standard SAEs), else `act(x @ W_enc + b_enc)`; `act` is ReLU, JumpReLU
(`z * (z > threshold)`) or TopK (ReLU, then all but the `k` largest latents of each token set to 0).

A transcoder reads one hook point (`hook_name`, e.g. the MLP input `blocks.L.ln2.hook_normalized`)
and writes another (`hook_name_out`, e.g. `blocks.L.hook_mlp_out`). SAELens keeps `hook_name` at
the top of cfg.json (older versions) or under `metadata` (6.x); both are read. The EleutherAI
sparsify layout is read by `autointerp.subject.sparsify` into the same class.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from autointerp.errors import FeatureError

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


@dataclass
class SparseAutoencoder:
    """An SAE's weights and the hook point it reads."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    hook_name: str
    threshold: torch.Tensor | None = None
    apply_b_dec_to_input: bool = True
    extra_cfg: dict[str, Any] = field(default_factory=dict)
    k: int | None = None
    """TopK dictionaries: latents kept per token (the rest are 0)."""
    hook_name_out: str | None = None
    """Transcoders: the hook point the decoder writes (None: an SAE, writing where it reads)."""

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary writes to another hook point than it reads."""
        return self.hook_name_out is not None

    @property
    def d_out(self) -> int:
        """Returns the width of what the decoder writes."""
        return int(self.W_dec.shape[1])

    @property
    def d_in(self) -> int:
        """Returns the width of the activations the SAE reads."""
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        """Returns the number of latents."""
        return int(self.W_enc.shape[1])

    def to(self, device: torch.device) -> SparseAutoencoder:
        """Moves the weights to `device` (float32) in place; returns self."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device=device, dtype=torch.float32))
        return self

    def encode(self, x: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Returns latent activations [..., d_sae] (or only `columns`) of activations x [..., d_in]."""
        w_enc, b_enc, threshold = self.W_enc, self.b_enc, self.threshold
        if columns is not None and self.k is None:  # TopK needs every latent to rank them
            w_enc, b_enc = w_enc[:, columns], b_enc[columns]
            threshold = None if threshold is None else threshold[columns]
        x = x.float()
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ w_enc + b_enc
        if threshold is not None:
            return pre * (pre > threshold)
        latents = torch.relu(pre)
        if self.k is not None:
            kept = latents.topk(min(self.k, latents.shape[-1]), dim=-1)
            latents = torch.zeros_like(latents).scatter_(-1, kept.indices, kept.values)
            if columns is not None:
                latents = latents.index_select(-1, columns)
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Returns the reconstruction [..., d_in] of latents [..., d_sae]."""
        return latents @ self.W_dec + self.b_dec

    def save(self, folder: Path, cfg: dict[str, Any] | None = None) -> None:
        """Writes cfg.json and sae_weights.safetensors to `folder` (SAELens layout)."""
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
        layer = hook_layer(self.hook_name)
        architecture = "jumprelu" if self.threshold is not None else "topk" if self.k is not None else "standard"
        if self.is_transcoder:
            architecture = "transcoder" if architecture == "standard" else f"{architecture}_transcoder"
        full_cfg = {
            **self.extra_cfg,
            **(cfg or {}),
            "architecture": architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "hook_name": self.hook_name,
            "hook_layer": layer,
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "dtype": "float32",
            "normalize_activations": "none",
        }
        if self.k is not None:
            full_cfg["k"] = self.k
        if self.hook_name_out is not None:
            full_cfg |= {"d_out": self.d_out, "hook_name_out": self.hook_name_out}
        (folder / CFG_FILE).write_text(json.dumps(full_cfg, indent=2) + "\n", encoding="utf-8")


def hook_layer(hook_name: str) -> int:
    """Returns L of a TransformerLens hook name `blocks.L.hook_...` (or `blocks.L.ln2.hook_normalized`,
    the MLP input); FeatureError otherwise."""
    parts = hook_name.split(".")
    if parts[2:] == ["ln2", "hook_normalized"]:
        parts = [*parts[:2], "hook_normalized"]
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or not parts[2].startswith("hook_"):
        raise FeatureError(
            f"hook point {hook_name!r} is not understood; use blocks.L.hook_resid_post, "
            "blocks.L.hook_resid_pre, blocks.L.hook_mlp_out or blocks.L.ln2.hook_normalized (the MLP input)"
        )
    return int(parts[1])


def check_shapes(sae: SparseAutoencoder, where: object) -> SparseAutoencoder:
    """Returns `sae` when its tensors fit together; FeatureError naming the shapes otherwise."""
    d_in, d_sae = sae.W_enc.shape
    d_out = sae.W_dec.shape[1] if sae.W_dec.ndim == 2 else -1
    problems = sae.W_dec.shape != (d_sae, d_out) or sae.b_enc.shape != (d_sae,) or sae.b_dec.shape != (d_out,)
    if not sae.is_transcoder and d_out != d_in:
        problems = True
    if sae.threshold is not None and sae.threshold.shape != (d_sae,):
        problems = True
    if problems:
        raise FeatureError(
            f"dictionary in {where} has inconsistent shapes: W_enc {tuple(sae.W_enc.shape)}, "
            f"W_dec {tuple(sae.W_dec.shape)}, b_dec {tuple(sae.b_dec.shape)} "
            f"(expected W_dec [d_sae, d_out] with d_sae = {d_sae}"
            + ("" if sae.is_transcoder else f" and d_out = d_in = {d_in}")
            + ")"
        )
    if sae.k is not None and not 0 < sae.k <= d_sae:
        raise FeatureError(f"dictionary in {where} keeps k = {sae.k} latents per token but has {d_sae}")
    return sae


def _cfg_value(cfg: dict[str, Any], key: str) -> Any:
    """Returns cfg[key], or cfg["metadata"][key] (SAELens 6 keeps hook names there)."""
    if key in cfg:
        return cfg[key]
    metadata = cfg.get("metadata")
    return metadata.get(key) if isinstance(metadata, dict) else None


def load_sae(folder: Path) -> SparseAutoencoder:
    """Reads an SAE from a SAELens-layout folder; FeatureError names what is missing or wrong."""
    folder = Path(folder).expanduser()
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights_path.is_file():
        raise FeatureError(
            f"SAE folder {folder} needs {CFG_FILE} and {WEIGHTS_FILE} (SAELens layout); set features.path"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        tensors = load_file(str(weights_path))
    except (OSError, ValueError) as exc:
        raise FeatureError(f"cannot read SAE in {folder}: {str(exc).splitlines()[0]}") from None
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in tensors]
    if missing:
        raise FeatureError(f"{weights_path} lacks tensor {missing[0]!r} (needs W_enc, b_enc, W_dec, b_dec)")
    hook_name = _cfg_value(cfg, "hook_name") or _cfg_value(cfg, "hook_point")
    if not isinstance(hook_name, str):
        raise FeatureError(f"{cfg_path} has no 'hook_name', e.g. \"blocks.15.hook_resid_post\"")
    hook_layer(hook_name)
    architecture = str(cfg.get("architecture", "standard"))
    hook_name_out = _cfg_value(cfg, "hook_name_out")
    if "transcoder" in architecture and not isinstance(hook_name_out, str):
        raise FeatureError(f"{cfg_path} is a transcoder without 'hook_name_out', e.g. \"blocks.15.hook_mlp_out\"")
    if isinstance(hook_name_out, str):
        hook_layer(hook_name_out)
    threshold = tensors.get("threshold")
    if threshold is None and "log_threshold" in tensors:
        threshold = tensors["log_threshold"].exp()
    if cfg.get("normalize_activations") not in (None, "none"):
        log.warning(
            "%s: normalize_activations=%r is not applied; activations are read unscaled",
            cfg_path,
            cfg["normalize_activations"],
        )
    k = cfg.get("k") if "topk" in architecture else None
    sae = SparseAutoencoder(
        W_enc=tensors["W_enc"],
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        hook_name=hook_name,
        threshold=threshold,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        extra_cfg=cfg,
        k=None if k is None else int(k),
        hook_name_out=hook_name_out if isinstance(hook_name_out, str) else None,
    )
    if sae.is_transcoder and sae.d_out != sae.d_in:
        sae.apply_b_dec_to_input = False  # b_dec lives in the output space
    return check_shapes(sae, folder)
