"""Sparse autoencoders in the SAELens folder layout: `cfg.json` + `sae_weights.safetensors`.

The weights are `W_enc` [d_in, d_sae], `b_enc` [d_sae], `W_dec` [d_sae, d_in], `b_dec` [d_in]
and, for a JumpReLU SAE, `threshold` [d_sae]. Latents are
`act((x - b_dec) @ W_enc + b_enc)` when `apply_b_dec_to_input` is true (SAELens's default for
standard SAEs), else `act(x @ W_enc + b_enc)`; `act` is ReLU, or JumpReLU (`z * (z > threshold)`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from autointerp.errors import FeatureError

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
        if columns is not None:
            w_enc, b_enc = w_enc[:, columns], b_enc[columns]
            threshold = None if threshold is None else threshold[columns]
        x = x.float()
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ w_enc + b_enc
        if threshold is not None:
            return pre * (pre > threshold)
        return torch.relu(pre)

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
        full_cfg = {
            **self.extra_cfg,
            **(cfg or {}),
            "architecture": "jumprelu" if self.threshold is not None else "standard",
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "hook_name": self.hook_name,
            "hook_layer": layer,
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "dtype": "float32",
            "normalize_activations": "none",
        }
        (folder / CFG_FILE).write_text(json.dumps(full_cfg, indent=2) + "\n", encoding="utf-8")


def hook_layer(hook_name: str) -> int:
    """Returns L of a TransformerLens hook name `blocks.L.hook_...`; FeatureError otherwise."""
    parts = hook_name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or not parts[2].startswith("hook_"):
        raise FeatureError(
            f"hook point {hook_name!r} is not understood; use blocks.L.hook_resid_post, "
            "blocks.L.hook_resid_pre or blocks.L.hook_mlp_out"
        )
    return int(parts[1])


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
    hook_name = cfg.get("hook_name") or cfg.get("hook_point")
    if not isinstance(hook_name, str):
        raise FeatureError(f"{cfg_path} has no 'hook_name', e.g. \"blocks.15.hook_resid_post\"")
    hook_layer(hook_name)
    sae = SparseAutoencoder(
        W_enc=tensors["W_enc"],
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        hook_name=hook_name,
        threshold=tensors.get("threshold"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        extra_cfg=cfg,
    )
    d_in, d_sae = sae.W_enc.shape
    if sae.W_dec.shape != (d_sae, d_in) or sae.b_enc.shape != (d_sae,) or sae.b_dec.shape != (d_in,):
        raise FeatureError(
            f"SAE in {folder} has inconsistent shapes: W_enc {tuple(sae.W_enc.shape)}, "
            f"W_dec {tuple(sae.W_dec.shape)} (expected W_dec [d_sae, d_in] = [{d_sae}, {d_in}])"
        )
    return sae
