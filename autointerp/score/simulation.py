"""Simulation scoring, "all at once" (Bills et al. 2023): one forward pass per window reads the
simulator's probabilities of the tokens "0".."10" after every token and takes the expected value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autointerp.activations import display_token
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import PromptTemplate


@dataclass(frozen=True)
class SimulationPrompt:
    """Token ids of one window's simulation prompt and where each value is read."""

    input_ids: list[int]
    read_positions: list[int]  # logits at these positions predict the value of each window token


def digit_token_ids(backend: LocalChatBackend) -> dict[int, int]:
    """Returns value -> token id for the values 0..10 that the tokenizer encodes as one token."""
    tokenizer = backend.subject.tokenizer
    found = {}
    for value in range(11):
        ids = tokenizer(str(value), add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            found[value] = ids[0]
    return found


def build_simulation_prompt(
    backend: LocalChatBackend, template: PromptTemplate, explanation: str, tokens: list[str]
) -> SimulationPrompt:
    """Returns the prompt "token<TAB>0<NEWLINE>..." after the instructions, with read positions."""
    tokenizer = backend.subject.tokenizer
    messages, prefill = template.render(explanation=explanation)
    ids = backend.prompt_ids(messages, prefill)
    zero_id = tokenizer("0", add_special_tokens=False)["input_ids"][-1]
    newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    positions = []
    for token in tokens:
        ids.extend(tokenizer(display_token(token) + "\t", add_special_tokens=False)["input_ids"])
        positions.append(len(ids) - 1)
        ids.append(zero_id)  # placeholder; causal attention means it never influences its own read
        ids.extend(newline_ids)
    return SimulationPrompt(input_ids=ids, read_positions=positions)


@torch.inference_mode()
def simulate_all_at_once(
    backend: LocalChatBackend,
    template: PromptTemplate,
    explanation: str,
    windows: list[list[str]],
    batch_size: int = 8,
) -> tuple[list[list[float]], int]:
    """Returns (expected activation 0-10 per token per window, prompt tokens processed)."""
    model, device = backend.subject.model, backend.subject.device
    digits = digit_token_ids(backend)
    values = torch.tensor(list(digits), dtype=torch.float32, device=device)
    digit_ids = torch.tensor(list(digits.values()), device=device)
    prompts = [build_simulation_prompt(backend, template, explanation, tokens) for tokens in windows]
    pad_id = backend.subject.tokenizer.pad_token_id or 0
    body, head = model.base_model, model.get_output_embeddings()
    predictions: list[list[float]] = []
    processed = 0
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        length = max(len(p.input_ids) for p in batch)
        ids = torch.full((len(batch), length), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(batch):
            ids[row, : len(prompt.input_ids)] = torch.tensor(prompt.input_ids, device=device)
            mask[row, : len(prompt.input_ids)] = 1
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        for row, prompt in enumerate(batch):
            logits = head(hidden[row, prompt.read_positions]).float()  # [tokens, vocab]
            probs = torch.softmax(logits[:, digit_ids], dim=-1)
            predictions.append((probs @ values).tolist())
            processed += len(prompt.input_ids)
    return predictions, processed
