"""Interventions on features: ablate (zero or mean) or steer (add to the activation), and what
they do to the model's next-token distribution.

A neuron's activation is the input of its block's MLP output projection (down_proj, c_proj,
dense_4h_to_h: see `autointerp.subject.architectures`); ablating or steering it changes the MLP's
output by (new - old) * W_down[:, index] (then through Gemma's post-MLP norm) and nothing upstream.

A feature read linearly off a hook point (an SAE latent, a user direction) is edited in the
activations at that hook point along its write direction d: h <- h + (new - old) * d, where old
is the feature's activation on h. For an SAE latent d is its decoder row (the latent's share of
the reconstruction); for a direction v it is v / |v|^2, so the projection h . v moves by exactly
new - old.

A transcoder latent is read at one hook point (the MLP input) and written at another (the MLP
output): its edit reads the latent from the activations at `read_from` in the same forward pass
and moves the MLP output along the latent's decoder row, so the MLP's output changes by exactly
(new - old) x decoder row and nothing upstream changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autointerp.subject.hooks import (
    add_hook,
    check_neuron_indices,
    first_tensor,
    hook_site,
    mlp_down_proj,
    read_hook,
)
from autointerp.subject.model import SubjectModel


class _Positions:
    """Counts the positions a hook has seen inside one edit's block (one forward pass, or one generation: the
    prompt, then a token at a time), to leave the first `skipped` of the sequence unedited."""

    def __init__(self, skipped: int) -> None:
        self.skipped, self.seen = skipped, 0

    def unedited(self, tokens: int) -> int:
        """Returns how many leading positions of the next `tokens` are left alone."""
        first, self.seen = self.seen, self.seen + tokens
        return min(tokens, max(0, self.skipped - first))


@dataclass(frozen=True)
class NeuronEdit:
    """How to change one neuron: set it to a value (ablation) and/or add to it (steering)."""

    layer: int
    index: int
    set_to: float | None = None
    add: float = 0.0
    skip_positions: int = 0
    """Leading positions of the sequence left unedited: those the feature's source does not read
    (`features.skip_first_tokens`, the attention sink)."""


@contextmanager
def edit_neuron(subject: SubjectModel, edit: NeuronEdit) -> Iterator[None]:
    """Applies `edit` to every position (but the first `skip_positions`) of the forward pass or generation inside
    the block."""
    module: nn.Module = mlp_down_proj(subject, edit.layer)
    check_neuron_indices(subject, [edit.index])
    positions = _Positions(edit.skip_positions)

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        activations = first_tensor(args, kwargs).clone()
        start = positions.unedited(activations.shape[-2])
        if edit.set_to is not None:
            activations[..., start:, edit.index] = edit.set_to
        activations[..., start:, edit.index] += edit.add
        if args:
            return (activations, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": activations}

    handle = add_hook(module, hook, pre=True, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class DirectionEdit:
    """How to change a feature read off a hook point: its activation `read(h)` [..., d] -> [...]
    and its write direction [d]; set it to a value (ablation) and/or add to it (steering)."""

    hook: str
    read: Callable[[torch.Tensor], torch.Tensor]
    direction: torch.Tensor
    set_to: float | None = None
    add: float = 0.0
    read_from: str | None = None
    """Where `read` takes its input (a transcoder: the MLP input); None: the edited hook point itself."""
    skip_positions: int = 0
    """Leading positions of the sequence left unedited: those the feature's source does not read
    (`features.skip_first_tokens`, the attention sink)."""

    def apply(self, hidden: torch.Tensor, source: torch.Tensor | None = None, unedited: int = 0) -> torch.Tensor:
        """Returns the edited activations at the hook point (`source`: those at `read_from`), leaving the first
        `unedited` positions as they are."""
        change = torch.full(hidden.shape[:-1], self.add, device=hidden.device)
        if self.set_to is not None:
            change = change + self.set_to - self.read(hidden if source is None else source)
        change[..., :unedited] = 0.0
        direction = self.direction.to(device=hidden.device)
        return (hidden.float() + change.unsqueeze(-1) * direction).to(hidden.dtype)


Edit = NeuronEdit | DirectionEdit


@contextmanager
def edit_direction(subject: SubjectModel, edit: DirectionEdit) -> Iterator[None]:
    """Applies `edit` at its hook point to every position (but the first `skip_positions`) of the forward pass
    or generation inside the block."""
    site = hook_site(subject, edit.hook)
    seen: dict[str, torch.Tensor] = {}
    handles = []
    if edit.read_from is not None:
        handles.append(read_hook(hook_site(subject, edit.read_from), lambda value: seen.update(source=value)))
    positions = _Positions(edit.skip_positions)

    def edited(hidden: torch.Tensor) -> torch.Tensor:
        return edit.apply(hidden, seen.get("source"), positions.unedited(hidden.shape[-2]))

    def pre_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (edited(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edited(kwargs["hidden_states"])}

    def post_hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (edited(output[0]), *output[1:])
        return edited(output)

    def normalised_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        # the norm's output is normalised x gain (+ bias): moving the normalised value moves it by change x gain
        normalised = site.value(first_tensor(args, kwargs))
        change = edited(normalised).float() - normalised.float()
        return (output.float() + change * site.gain()).to(output.dtype)

    if site.normalise:
        handles.append(add_hook(site.module, normalised_hook, pre=False, with_kwargs=True))
    elif site.is_input:
        handles.append(add_hook(site.module, pre_hook, pre=True, with_kwargs=True))
    else:
        handles.append(add_hook(site.module, post_hook, pre=False))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def applied(subject: SubjectModel, edit: Edit) -> Any:
    """Returns the context manager that applies a neuron or direction edit."""
    return edit_neuron(subject, edit) if isinstance(edit, NeuronEdit) else edit_direction(subject, edit)


@torch.inference_mode()
def next_token_logprobs(subject: SubjectModel, input_ids: torch.Tensor, edit: Edit | None = None) -> torch.Tensor:
    """Returns log-probabilities [batch, tokens, vocab] of the next token, optionally under an edit."""
    ids = input_ids.to(subject.device)
    if edit is None:
        logits = subject.model(input_ids=ids, use_cache=False).logits
    else:
        with applied(subject, edit):
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
def generate_with_edit(subject: SubjectModel, prompt: str, edit: Edit | None, max_new_tokens: int = 12) -> str:
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
        with applied(subject, edit):
            output = subject.model.generate(**kwargs)  # type: ignore[operator]
    return str(subject.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))
