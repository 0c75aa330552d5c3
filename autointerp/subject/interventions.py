"""Interventions on MLP neurons: ablate (zero or mean) or steer (add to the activation), and
what they do to the model's next-token distribution.

A neuron's activation is the input of its block's down projection; ablating or steering
it changes the block's MLP output by (new - old) * W_down[:, index] and nothing upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from autointerp.subject.hooks import check_neuron_indices, mlp_down_proj
from autointerp.subject.model import SubjectModel


@dataclass(frozen=True)
class NeuronEdit:
    """How to change one neuron: set it to a value (ablation) and/or add to it (steering)."""

    layer: int
    index: int
    set_to: float | None = None
    add: float = 0.0


@contextmanager
def edit_neuron(subject: SubjectModel, edit: NeuronEdit) -> Iterator[None]:
    """Applies `edit` to every position of every forward pass inside the block."""
    module: nn.Module = mlp_down_proj(subject, edit.layer)
    check_neuron_indices(subject, [edit.index])

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        activations = inputs[0].clone()
        if edit.set_to is not None:
            activations[..., edit.index] = edit.set_to
        activations[..., edit.index] += edit.add
        return (activations, *inputs[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def next_token_logprobs(subject: SubjectModel, input_ids: torch.Tensor, edit: NeuronEdit | None = None) -> torch.Tensor:
    """Returns log-probabilities [batch, tokens, vocab] of the next token, optionally under an edit."""
    ids = input_ids.to(subject.device)
    if edit is None:
        logits = subject.model(input_ids=ids, use_cache=False).logits
    else:
        with edit_neuron(subject, edit):
            logits = subject.model(input_ids=ids, use_cache=False).logits
    return torch.log_softmax(logits.float(), dim=-1)


def kl_divergence(clean_logprobs: torch.Tensor, edited_logprobs: torch.Tensor) -> torch.Tensor:
    """Returns KL(clean || edited) per position, [batch, tokens]."""
    return (clean_logprobs.exp() * (clean_logprobs - edited_logprobs)).sum(dim=-1)


def top_changed_tokens(
    subject: SubjectModel, clean_logprobs: torch.Tensor, edited_logprobs: torch.Tensor, k: int = 10
) -> tuple[list[str], list[str]]:
    """Returns (tokens the edit promotes most, tokens it suppresses most), by mean log-prob change."""
    change = (edited_logprobs - clean_logprobs).reshape(-1, clean_logprobs.shape[-1]).mean(dim=0)
    promoted = change.topk(k).indices.tolist()
    suppressed = (-change).topk(k).indices.tolist()
    return subject.decode_tokens(promoted), subject.decode_tokens(suppressed)


@torch.inference_mode()
def generate_with_edit(subject: SubjectModel, prompt: str, edit: NeuronEdit | None, max_new_tokens: int = 12) -> str:
    """Returns the greedy continuation of `prompt` with the edit applied throughout."""
    ids = subject.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(subject.device)
    kwargs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "top_p": None,
        "top_k": None,
        "pad_token_id": subject.tokenizer.pad_token_id,
    }
    if edit is None:
        output = subject.model.generate(**kwargs)  # type: ignore[operator]
    else:
        with edit_neuron(subject, edit):
            output = subject.model.generate(**kwargs)  # type: ignore[operator]
    return str(subject.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))
