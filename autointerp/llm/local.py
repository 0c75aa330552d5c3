"""The `local` backend: a transformers causal LM in this process (the subject-model loader)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import ClassVar

import torch

from autointerp.llm.base import BackendCapabilities, ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.subject.model import SubjectModel, load_subject_model


class LocalChatBackend(ChatBackend):
    """Greedy or sampled generation with the chat template; exposes the model for token probabilities."""

    backend = "local"
    max_concurrency = 1
    generation_batch_size: ClassVar[int] = 8
    """Prompts per padded `model.generate` call in `generate_many`."""

    def __init__(self, model: str, device: str | None = None) -> None:
        super().__init__(model)
        self._lock = threading.Lock()
        """One generation at a time: the model is shared, and parallel CPU forwards only contend."""
        self.subject: SubjectModel = load_subject_model(
            model, device=device or os.environ.get("AUTOINTERP_LOCAL_DEVICE", "auto")
        )

    def prompt_ids(self, messages: list[ChatMessage], prefill: str = "") -> list[int]:
        """Returns the token ids of the chat-formatted conversation followed by `prefill`."""
        tokenizer = self.subject.tokenizer
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(str(text) + prefill, add_special_tokens=False)["input_ids"])

    def capabilities(self) -> BackendCapabilities:
        """Returns what this backend offers besides `generate`: batched generation (`generate_many`)."""
        return BackendCapabilities(batched_generation=True)

    def generate(self, request: ChatRequest) -> ChatResponse:
        """Returns the model's continuation of the chat-formatted request (one caller at a time)."""
        with self._lock:
            return self._generate(request)

    @torch.inference_mode()
    def _generate(self, request: ChatRequest) -> ChatResponse:
        tokenizer, model = self.subject.tokenizer, self.subject.model
        ids = torch.tensor([self.prompt_ids(request.messages, request.prefill)], device=self.subject.device)
        sampling = (
            {"do_sample": True, "temperature": request.temperature} if request.temperature > 0 else {"do_sample": False}
        )
        output = model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=request.max_tokens,
            pad_token_id=tokenizer.pad_token_id,
            top_p=None,
            top_k=None,
            **sampling,
        )
        new_tokens = output[0, ids.shape[1] :]
        return ChatResponse(
            text=str(tokenizer.decode(new_tokens, skip_special_tokens=True)),
            input_tokens=int(ids.shape[1]),
            output_tokens=int(new_tokens.shape[0]),
        )

    def generate_many(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Returns one answer per request, in order: requests with the same temperature and max_tokens are
        sorted by prompt length and generated `generation_batch_size` at a time in one left-padded
        `model.generate` call each; a greedy answer is the one `generate` gives for the same request."""
        prompts = [self.prompt_ids(request.messages, request.prefill) for request in requests]
        groups: dict[tuple[float, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.temperature, request.max_tokens), []).append(index)
        answers: dict[int, ChatResponse] = {}
        with self._lock:
            for (temperature, max_tokens), indices in groups.items():
                indices.sort(key=lambda i: len(prompts[i]))
                for start in range(0, len(indices), self.generation_batch_size):
                    batch = indices[start : start + self.generation_batch_size]
                    responses = self._generate_batch([prompts[i] for i in batch], temperature, max_tokens)
                    answers.update(zip(batch, responses, strict=True))
        return [answers[index] for index in range(len(requests))]

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], temperature: float, max_tokens: int) -> list[ChatResponse]:
        """Returns the answers to `prompts` (token ids) from one `model.generate` over a left-padded batch;
        each row's answer ends at its first end-of-sequence token, as a single `generate` stops there."""
        tokenizer, model, device = self.subject.tokenizer, self.subject.model, self.subject.device
        stop = model.generation_config.eos_token_id
        stop_ids = set(stop if isinstance(stop, list) else [stop] if stop is not None else [])
        stop_ids.add(tokenizer.eos_token_id)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        width = max(len(prompt) for prompt in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, device=device)
            mask[row, width - len(prompt) :] = 1
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        output = model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            pad_token_id=pad_id,
            top_p=None,
            top_k=None,
            **sampling,
        )
        answers = []
        for row, prompt in enumerate(prompts):
            tokens = output[row, width:].tolist()
            end = next((i + 1 for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
            answers.append(
                ChatResponse(
                    text=str(tokenizer.decode(tokens[:end], skip_special_tokens=True)),
                    input_tokens=len(prompt),
                    output_tokens=end,
                )
            )
        return answers


def create_local_backend(model: str) -> LocalChatBackend:
    """Entry-point factory for `local:<model>`."""
    return LocalChatBackend(model)
