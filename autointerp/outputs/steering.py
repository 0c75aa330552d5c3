"""Steering evidence: which next tokens become more and less likely when a feature is steered.

Each feature's write direction w (`WriteDirections`) is added, times `amount` (the stage uses
`outputs.steer_scale` x the feature's max activation), at every position of a few neutral prompts (the
first window of the first documents of the run's corpus); the change in next-token log-probability,
averaged over every position of every prompt, ranks the tokens the feature raises and lowers. Prompts
AND features are batched: one forward pass runs `batch_rows` rows, each a (feature, prompt) pair with
that feature's vector added at its hook point, so n features over P prompts cost n x P rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autointerp.config import CorpusConfig
from autointerp.corpus.sources import iter_windows
from autointerp.errors import FeatureError
from autointerp.subject.hooks import add_hook, first_tensor, hook_site
from autointerp.subject.model import SubjectModel
from autointerp.subject.sources import writes_residual

DEFAULT_BATCH_ROWS = 32
"""(feature, prompt) rows per forward pass: 32 x 16 tokens x 49,152 float32 log-probs is 100 MB."""


def neutral_prompts(subject: SubjectModel, corpus: CorpusConfig, count: int, tokens: int) -> torch.Tensor:
    """Returns [count, tokens] token ids: the first window of each of the corpus's first documents (later
    windows of the same documents when there are fewer documents than `count`)."""
    firsts: list[list[int]] = []
    others: list[list[int]] = []
    seen: set[int] = set()
    scan = max(count * 64, count)
    for window in iter_windows(
        subject.tokenizer, corpus.source, window_tokens=tokens, max_windows=scan, text_field=corpus.text_field
    ):
        (others if window.doc_id in seen else firsts).append(window.token_ids)
        seen.add(window.doc_id)
        if len(firsts) >= count:
            break
    chosen = (firsts + others)[:count]
    return torch.tensor(chosen, dtype=torch.long)


@contextmanager
def added_per_row(subject: SubjectModel, hook: str, deltas: torch.Tensor) -> Iterator[None]:
    """Adds row b of `deltas` [batch, d_model] to every position of batch row b at residual-stream hook
    point `hook` in every forward pass inside the block."""
    if not writes_residual(hook):
        raise FeatureError(f"cannot steer at {hook}: output evidence needs a residual-stream hook point")
    site = hook_site(subject, hook)

    def shifted(hidden: torch.Tensor) -> torch.Tensor:
        return (hidden.float() + deltas.to(hidden.device)[:, None, :]).to(hidden.dtype)

    def pre_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (shifted(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": shifted(first_tensor(args, kwargs))}

    def post_hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (shifted(output[0]), *output[1:])
        return shifted(output)

    if site.is_input:
        handle = add_hook(site.module, pre_hook, pre=True, with_kwargs=True)
    else:
        handle = add_hook(site.module, post_hook, pre=False)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class SteeringChange:
    """Top tokens of the mean log-prob change of n steered features, [n, k] each, and what it cost."""

    raised_values: torch.Tensor
    raised_ids: torch.Tensor
    lowered_values: torch.Tensor
    """Most negative first."""
    lowered_ids: torch.Tensor
    seconds: float
    """Wall time of the forward passes (clean and steered)."""
    rows: int
    """(feature, prompt) rows run, clean prompts included."""


def _logprobs(subject: SubjectModel, ids: torch.Tensor) -> torch.Tensor:
    logits = subject.model(input_ids=ids.to(subject.device), use_cache=False).logits
    return torch.log_softmax(logits.float(), dim=-1)


@torch.inference_mode()
def steering_topk(
    subject: SubjectModel,
    prompts: torch.Tensor,
    hooks: Sequence[str],
    vectors: torch.Tensor,
    amounts: torch.Tensor,
    top_k: int,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> SteeringChange:
    """Returns, per feature i, the tokens whose next-token log-prob rises and falls most on average when
    amounts[i] x vectors[i] is added at hooks[i] on every position of `prompts` [P, T]."""
    started = time.perf_counter()
    n, count = vectors.shape[0], prompts.shape[0]
    clean = _logprobs(subject, prompts)  # [P, T, vocab]
    vocab = clean.shape[-1]
    k = min(top_k, vocab)
    change = torch.zeros(n, vocab)
    per_pass = max(1, batch_rows // count)
    by_hook: dict[str, list[int]] = {}
    for i, hook in enumerate(hooks):
        by_hook.setdefault(hook, []).append(i)
    for hook, members in by_hook.items():
        for start in range(0, len(members), per_pass):
            chunk = members[start : start + per_pass]
            index = torch.tensor(chunk, dtype=torch.long)
            deltas = (vectors[index].float() * amounts[index].float()[:, None]).repeat_interleave(count, dim=0)
            with added_per_row(subject, hook, deltas):
                steered = _logprobs(subject, prompts.repeat(len(chunk), 1))  # [F*P, T, vocab]
            diff = steered.view(len(chunk), count, *clean.shape[1:]) - clean[None]
            change[index] = diff.mean(dim=(1, 2)).cpu()
    raised = change.topk(k, dim=-1)
    lowered = change.topk(k, dim=-1, largest=False)
    return SteeringChange(
        raised.values,
        raised.indices,
        lowered.values,
        lowered.indices,
        seconds=time.perf_counter() - started,
        rows=count * (n + 1),
    )
