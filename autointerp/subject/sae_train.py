"""Train a small ReLU sparse autoencoder on a layer's residual stream, on the CPU in minutes.

The activations are `blocks.L.hook_resid_post` over the corpus's windows (each window's first
`AUTO_SKIPPED_TOKENS` are dropped, as a run leaves them unread: the attention sink, with an outsized
norm). The loss is the squared error divided by the activations' variance plus `l1_coefficient` x the L1 norm of the
latents weighted by the decoder rows' norms, divided by the mean activation norm (so the
coefficient does not depend on the layer's scale). The last 10 % of tokens are held out to
report the fraction of variance unexplained (FVU) and L0 (mean active latents per token).

With `k` set, the SAE is a TopK SAE (Gao et al. 2024; EleutherAI sparsify's architecture): each
token keeps its k largest ReLU latents, the loss is the normalised squared error alone, and it can
be saved in the sparsify layout (`save_sparsify`) as well as SAELens's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from autointerp.corpus.sources import iter_windows
from autointerp.errors import FeatureError
from autointerp.subject.hooks import capture
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS
from autointerp.subject.model import SubjectModel
from autointerp.subject.sae import SparseAutoencoder
from autointerp.subject.sparsify import save_sparsify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaeTrainingConfig:
    """What to train on and how."""

    layer: int = 15
    corpus: str = "builtin:python-docs"
    tokens: int = 4096
    window_tokens: int = 64
    expansion: int = 2
    steps: int = 300
    batch_size: int = 256
    learning_rate: float = 1e-3
    l1_coefficient: float = 0.5
    seed: int = 0
    k: int | None = None
    """TopK SAE: latents kept per token (no L1 penalty); None: a ReLU SAE with the L1 penalty."""


@dataclass(frozen=True)
class SaeMetrics:
    """Reconstruction quality and sparsity on the held-out tokens."""

    fvu: float
    l0: float
    dead_fraction: float
    train_tokens: int
    eval_tokens: int


def residual_activations(subject: SubjectModel, config: SaeTrainingConfig) -> torch.Tensor:
    """Returns [tokens, d_model] activations at `blocks.L.hook_resid_post`, each window's first
    `AUTO_SKIPPED_TOKENS` left out (the attention sink, which a run does not read either)."""
    hook = f"blocks.{config.layer}.hook_resid_post"
    windows_needed = -(-config.tokens // (config.window_tokens - AUTO_SKIPPED_TOKENS))
    windows = list(
        iter_windows(subject.tokenizer, config.corpus, window_tokens=config.window_tokens, max_windows=windows_needed)
    )
    rows = []
    for start in range(0, len(windows), 16):
        ids = torch.tensor([w.token_ids for w in windows[start : start + 16]], device=subject.device)
        (hidden,) = capture(subject, ids, [hook])
        rows.append(hidden[:, AUTO_SKIPPED_TOKENS:].reshape(-1, hidden.shape[-1]).float().cpu())
    return torch.cat(rows)[: config.tokens]


def _metrics(sae: SparseAutoencoder, x: torch.Tensor, train_tokens: int) -> SaeMetrics:
    with torch.no_grad():
        latents = sae.encode(x)
        error = (sae.decode(latents) - x).pow(2).sum()
        variance = (x - x.mean(dim=0)).pow(2).sum()
        active = latents > 0
    return SaeMetrics(
        fvu=float(error / variance),
        l0=float(active.sum(dim=1).float().mean()),
        dead_fraction=float((~active.any(dim=0)).float().mean()),
        train_tokens=train_tokens,
        eval_tokens=x.shape[0],
    )


def train_sae(
    activations: torch.Tensor, hook_name: str, config: SaeTrainingConfig
) -> tuple[SparseAutoencoder, SaeMetrics]:
    """Returns a ReLU SAE trained on activations [tokens, d_in] and its held-out metrics."""
    generator = torch.Generator().manual_seed(config.seed)
    split = max(1, int(activations.shape[0] * 0.9))
    train, held_out = activations[:split], activations[split:]
    if held_out.shape[0] == 0:
        held_out = train
    d_in, d_sae = activations.shape[1], activations.shape[1] * config.expansion
    w_dec = torch.randn(d_sae, d_in, generator=generator)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * 0.1
    params = {
        "W_enc": torch.nn.Parameter(w_dec.T.clone()),
        "b_enc": torch.nn.Parameter(torch.zeros(d_sae)),
        "W_dec": torch.nn.Parameter(w_dec.clone()),
        "b_dec": torch.nn.Parameter(train.mean(dim=0).clone()),
    }
    # train on activations scaled to mean norm sqrt(d_in); the scale is folded into the weights below
    factor = float(d_in**0.5 / activations.norm(dim=1).mean())
    train = train * factor
    params["b_dec"].data *= factor
    variance = (train - train.mean(dim=0)).pow(2).sum(dim=1).mean()
    scale = train.norm(dim=1).mean()
    optimizer = torch.optim.Adam(params.values(), lr=config.learning_rate)
    for step in range(config.steps):
        batch = train[torch.randint(0, train.shape[0], (config.batch_size,), generator=generator)]
        latents = torch.relu((batch - params["b_dec"]) @ params["W_enc"] + params["b_enc"])
        if config.k is not None:
            kept = latents.topk(min(config.k, d_sae), dim=1)
            latents = torch.zeros_like(latents).scatter(1, kept.indices, kept.values)
        reconstruction = latents @ params["W_dec"] + params["b_dec"]
        mse = (reconstruction - batch).pow(2).sum(dim=1).mean() / variance
        loss = mse
        if config.k is None:
            sparsity = (latents * params["W_dec"].norm(dim=1)).sum(dim=1).mean() / scale
            loss = mse + config.l1_coefficient * sparsity
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            log.info("step %d: loss %.4f (normalised mse %.4f)", step, loss.item(), mse.item())
    sae = SparseAutoencoder(
        W_enc=params["W_enc"].detach() * factor,
        b_enc=params["b_enc"].detach().clone(),
        W_dec=params["W_dec"].detach() / factor,
        b_dec=params["b_dec"].detach() / factor,
        hook_name=hook_name,
        k=config.k,
    )
    return sae, _metrics(sae, held_out, train.shape[0])


def train_and_save_sae(
    subject: SubjectModel, config: SaeTrainingConfig, folder: Path, layout: str = "saelens"
) -> SaeMetrics:
    """Trains an SAE on the subject's residual stream and writes it to `folder` in the SAELens layout,
    or with layout="sparsify" in EleutherAI sparsify's (needs `k`; name the folder `layers.L`).

    The metrics go into `metrics.json` and (SAELens), with the training settings, into cfg.json.
    """
    if layout not in ("saelens", "sparsify"):
        raise FeatureError(f"unknown dictionary layout {layout!r}; use saelens or sparsify")
    if layout == "sparsify" and config.k is None:
        raise FeatureError("the sparsify layout holds TopK SAEs: pass --k (latents kept per token), e.g. --k 32")
    torch.manual_seed(config.seed)
    activations = residual_activations(subject, config)
    hook = f"blocks.{config.layer}.hook_resid_post"
    sae, metrics = train_sae(activations, hook, config)
    cfg = {"model_name": subject.slug, "autointerp_training": asdict(config), "autointerp_metrics": asdict(metrics)}
    if layout == "sparsify":
        save_sparsify(sae, folder)
    else:
        sae.save(folder, cfg)
    (folder / "metrics.json").write_text(json.dumps(asdict(metrics), indent=2) + "\n", encoding="utf-8")
    return metrics
