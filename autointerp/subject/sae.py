"""Sparse dictionaries (SAEs and transcoders) and the SAELens folder layout: `cfg.json` +
`sae_weights.safetensors`.

The weights are `W_enc` [d_in, d_sae], `b_enc` [d_sae], `W_dec` [d_sae, d_out], `b_dec` [d_out]
(d_out = d_in for an SAE) and, for a JumpReLU dictionary, `threshold` [d_sae] (or `log_threshold`).
Latents are computed as SAELens 6's own `encode` computes them (checked against SAELens 6.54 on the
folders in tests/fixtures/dictionaries):

- `pre = (x - b_dec) @ W_enc + b_enc` when `apply_b_dec_to_input` is true (the default; never for a
  transcoder, whose b_dec is an output bias), else `pre = x @ W_enc + b_enc`;
- standard and transcoder: `relu(pre)`;
- JumpReLU (`jumprelu`, `jumprelu_transcoder`): `relu(pre) * (pre > threshold)`; with a negative
  threshold the ReLU still applies;
- TopK: with `rescale_acts_by_decoder_norm` (the default of SAELens's TopK training class) `pre` is first
  multiplied by the decoder row norms `|W_dec[i]|`; then the `k` largest of each token are kept and
  passed through ReLU, the rest set to 0. Such a dictionary decodes `latent_i * W_dec[i] / |W_dec[i]|`.

A transcoder reads one hook point (`hook_name`, e.g. the MLP input `blocks.L.ln2.hook_normalized`) and
writes another (`hook_name_out`, e.g. `blocks.L.hook_mlp_out`). SAELens keeps the hook names at the
top of cfg.json (before 6.0) or under `metadata` (6.x); both are read. `normalize_activations` other
than "none" is refused (SAELens folds the scaling into the weights when training ends; a folder that
still asks for it needs a factor the folder does not hold, or a per-token scaling the edits would not
follow). The EleutherAI sparsify layout is read by `autointerp.subject.sparsify` into the same class.

`read_saelens_cfg` reads cfg.json alone (the preflight uses it, no weights loaded); `check_weights`
(`autointerp.subject.dictionary_spec`) reads the safetensors header (names, shapes; a cut-short or
corrupt file) without the tensors; `load_sae` does both, then loads the tensors. Every problem is one
FeatureError line naming the file, what was found and what was expected.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from autointerp.errors import FeatureError
from autointerp.subject.dictionary_spec import (
    DictionarySpec,
    cfg_int,
    check_weights,
    load_tensors,
    read_cfg_json,
)

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

SAELENS_ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "standard": ("relu", False),
    "jumprelu": ("jumprelu", False),
    "topk": ("topk", False),
    "transcoder": ("relu", True),
    "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", True),
    "jumprelu_skip_transcoder": ("jumprelu", True),
    "topk_transcoder": ("topk", True),  # written by autointerp's own `save`; not a SAELens class
}
"""SAELens `architecture` -> (activation, is a transcoder), for the architectures read here (a skip
transcoder's `W_skip` does not change its latents and is not read)."""

SAELENS_TRAINING_ONLY = ("batchtopk", "matryoshka_batchtopk")
"""Architectures SAELens writes only as training checkpoints (its inference save makes them jumprelu)."""

SAELENS_TOPK_DEFAULT_K = 100
"""`TopKSAEConfig.k`'s default in SAELens 6, used when a topk cfg.json has no `k`."""


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
    rescale_acts_by_decoder_norm: bool = False
    """SAELens TopK: pre-activations are multiplied by the decoder row norms before the top k are kept,
    and the decoder uses unit rows (`W_dec[i] / |W_dec[i]|`)."""
    group_max: bool = False
    """sparsify `activation = "groupmax"`: the latents are k equal groups, each keeping its largest."""

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
        ranked = self.k is not None  # TopK and group max need every latent to rank them
        if columns is not None and not ranked:
            w_enc, b_enc = w_enc[:, columns], b_enc[columns]
            threshold = None if threshold is None else threshold[columns]
        x = x.float()
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ w_enc + b_enc
        if threshold is not None:
            return torch.relu(pre) * (pre > threshold)
        if self.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        latents = torch.relu(pre)
        if self.k is not None and self.group_max:
            groups = latents.unflatten(-1, (self.k, -1))
            top = groups.max(dim=-1, keepdim=True)
            latents = torch.zeros_like(groups).scatter_(-1, top.indices, top.values).flatten(-2)
        elif self.k is not None:
            kept = latents.topk(min(self.k, latents.shape[-1]), dim=-1)
            latents = torch.zeros_like(latents).scatter_(-1, kept.indices, kept.values)
        if columns is not None and ranked:
            latents = latents.index_select(-1, columns)
        return latents

    def decoder_rows(self) -> torch.Tensor:
        """Returns what one unit of each latent adds to the output [d_sae, d_out]: W_dec, or its rows made
        unit-norm for a dictionary with `rescale_acts_by_decoder_norm`."""
        if self.rescale_acts_by_decoder_norm:
            return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        return self.W_dec

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Returns the reconstruction [..., d_out] of latents [..., d_sae]."""
        return latents @ self.decoder_rows() + self.b_dec

    def save(self, folder: Path, cfg: dict[str, Any] | None = None) -> None:
        """Writes cfg.json and sae_weights.safetensors to `folder` (SAELens layout)."""
        if self.group_max:
            raise FeatureError("a group-max dictionary has no SAELens layout; save it with save_sparsify")
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
            full_cfg["rescale_acts_by_decoder_norm"] = self.rescale_acts_by_decoder_norm
        if self.hook_name_out is not None:
            full_cfg |= {"d_out": self.d_out, "hook_name_out": self.hook_name_out}
        (folder / CFG_FILE).write_text(json.dumps(full_cfg, indent=2) + "\n", encoding="utf-8")


def hook_layer(hook_name: str) -> int:
    """Returns L of a TransformerLens hook name `blocks.L.hook_...` (also `blocks.L.ln2.hook_normalized`,
    `blocks.L.mlp.hook_post`: a sub-module's hook); FeatureError otherwise. Which hook points can be read
    is `autointerp.subject.hooks`' business."""
    parts = hook_name.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit() or not parts[-1].startswith("hook_"):
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
    if sae.group_max and sae.k is not None and d_sae % sae.k:
        raise FeatureError(
            f"dictionary in {where} splits {d_sae} latents into k = {sae.k} groups; d_sae must be a multiple of k"
        )
    return sae


def _saelens_version(cfg: dict[str, Any], metadata: dict[str, Any]) -> int | None:
    """Returns the major SAELens version that wrote the cfg, or None when it does not say."""
    written = cfg.get("sae_lens_version") or metadata.get("sae_lens_version")
    head = str(written).split(".")[0] if written else ""
    return int(head) if head.isdigit() else None


def read_saelens_cfg(folder: Path, what: str = "SAE") -> DictionarySpec:
    """Reads a SAELens folder's cfg.json (not its weights) the way SAELens 6 reads it: keys at the top or,
    for the hook names, under `metadata`; a cfg.json written before 6.0 (no `sae_lens_version`) with
    `hook_point` and `activation_fn = "topk"` is renamed as SAELens renames it. FeatureError (one line:
    the file, what was found, what was expected) for anything SAELens would not read or that is not
    read here."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FeatureError(f"{what} folder {folder} does not exist; set features.path")
    cfg_file, weights_file = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_file.is_file() or not weights_file.is_file():
        raise FeatureError(
            f"{what} folder {folder} needs {CFG_FILE} and {WEIGHTS_FILE} (SAELens layout); set features.path"
        )
    cfg = read_cfg_json(cfg_file, "SAELens")
    raw_metadata = cfg.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}

    def value(key: str) -> Any:
        return cfg[key] if key in cfg else metadata.get(key)

    major = _saelens_version(cfg, metadata)
    pre_6 = major is None or major < 6
    architecture = cfg.get("architecture")
    k_default: int | None = SAELENS_TOPK_DEFAULT_K
    normalize = cfg.get("normalize_activations", "none")
    if pre_6:  # as SAELens's handle_pre_6_0_config
        architecture = architecture or "standard"
        raw_kwargs = cfg.get("activation_fn_kwargs")
        kwargs: dict[str, Any] = raw_kwargs if isinstance(raw_kwargs, dict) else {}
        if (cfg.get("activation_fn") or cfg.get("activation_fn_str")) == "topk" and kwargs.get("k") is not None:
            architecture, k_default = "topk", kwargs["k"]
        if isinstance(normalize, bool):
            normalize = "expected_average_only_in" if normalize else "none"
    if not isinstance(architecture, str):
        raise FeatureError(f"{cfg_file} has no 'architecture' (SAELens 6 writes one, e.g. \"standard\")")
    if architecture in SAELENS_TRAINING_ONLY:
        raise FeatureError(
            f"{cfg_file}: architecture {architecture!r} is a SAELens training checkpoint, which SAELens itself "
            "does not load as an SAE; save it with save_inference_model (a jumprelu SAE) and use that folder"
        )
    if architecture not in SAELENS_ARCHITECTURES:
        raise FeatureError(
            f"{cfg_file}: architecture {architecture!r} is not read by autointerp; expected one of "
            + ", ".join(SAELENS_ARCHITECTURES)
        )
    activation, transcoder = SAELENS_ARCHITECTURES[architecture]
    if normalize not in (None, "none"):
        raise FeatureError(
            f'{cfg_file}: normalize_activations is {normalize!r}; autointerp reads only "none" (fold the scaling '
            "into the weights, as SAELens does when training ends, e.g. SAE.fold_activation_norm_scaling_factor)"
        )
    hook_name = value("hook_name") or (value("hook_point") if pre_6 else None)
    if not isinstance(hook_name, str):
        raise FeatureError(
            f"{cfg_file} has no 'hook_name' (neither at the top nor under 'metadata'); expected the hook point it "
            'reads, e.g. "blocks.15.hook_resid_post"'
        )
    hook_layer(hook_name)
    hook_name_out = value("hook_name_out") if transcoder else None
    if transcoder and not isinstance(hook_name_out, str):
        raise FeatureError(
            f"{cfg_file} is a {architecture} without 'hook_name_out' (at the top or under 'metadata'); expected the "
            'hook point it writes, e.g. "blocks.15.hook_mlp_out"'
        )
    if hook_name_out is not None:
        hook_layer(hook_name_out)
    d_in = cfg_int(cfg, "d_in", cfg_file, "the width it reads")
    d_sae = cfg_int(cfg, "d_sae", cfg_file, "the number of latents")
    d_out = cfg_int(cfg, "d_out", cfg_file, "the width it writes") if transcoder and "d_out" in cfg else None
    k = cfg_int(cfg, "k", cfg_file, "latents kept per token", k_default) if activation == "topk" else None
    if k is not None and k > d_sae:
        raise FeatureError(f"{cfg_file}: k = {k} latents kept per token, but d_sae = {d_sae}; expected k <= d_sae")
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    if transcoder and architecture != "topk_transcoder":
        apply_b_dec = False  # SAELens's Transcoder never subtracts b_dec (an output bias) from its input
    elif transcoder and d_out is not None and d_out != d_in:
        apply_b_dec = False
    return DictionarySpec(
        folder=folder,
        cfg_file=cfg_file,
        weights_file=weights_file,
        layout="SAELens",
        architecture=architecture,
        activation=activation,
        hook_name=hook_name,
        hook_name_out=hook_name_out,
        d_in=d_in,
        d_sae=d_sae,
        d_out=d_out,
        k=k,
        apply_b_dec_to_input=apply_b_dec,
        rescale_acts_by_decoder_norm=activation == "topk" and bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        cfg=cfg,
    )


def load_sae(folder: Path, what: str = "SAE") -> SparseAutoencoder:
    """Reads an SAE or transcoder from a SAELens-layout folder; FeatureError names what is missing or wrong."""
    spec = check_weights(read_saelens_cfg(folder, what))
    tensors = load_tensors(spec)
    threshold = tensors.get("threshold") if spec.activation == "jumprelu" else None
    if spec.activation == "jumprelu" and threshold is None:
        threshold = tensors["log_threshold"].exp()  # as SAELens's process_state_dict_for_loading
    scaling = tensors.get("scaling_factor")
    if scaling is not None and not torch.allclose(scaling, torch.ones_like(scaling)):
        raise FeatureError(
            f"{spec.weights_file} holds a 'scaling_factor' that is not all ones (an old SAELens finetuning scale); "
            "SAELens 6 does not read it either: fold it into W_dec"
        )
    sae = SparseAutoencoder(
        W_enc=tensors["W_enc"].float(),
        b_enc=tensors["b_enc"].float(),
        W_dec=tensors["W_dec"].float(),
        b_dec=tensors["b_dec"].float(),
        hook_name=spec.hook_name,
        threshold=None if threshold is None else threshold.float(),
        apply_b_dec_to_input=spec.apply_b_dec_to_input,
        extra_cfg=spec.cfg,
        k=spec.k,
        hook_name_out=spec.hook_name_out,
        rescale_acts_by_decoder_norm=spec.rescale_acts_by_decoder_norm,
    )
    if sae.is_transcoder and sae.d_out != sae.d_in:
        sae.apply_b_dec_to_input = False  # b_dec lives in the output space
    return check_shapes(sae, spec.folder)
