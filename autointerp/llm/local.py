"""The `local` backend: a transformers causal LM in this process (the subject-model loader)."""

from __future__ import annotations

import os
import threading

import torch

from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.subject.model import SubjectModel, load_subject_model


class LocalChatBackend(ChatBackend):
    """Greedy or sampled generation with the chat template; exposes the model for token probabilities."""

    backend = "local"
    max_concurrency = 1

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


def create_local_backend(model: str) -> LocalChatBackend:
    """Entry-point factory for `local:<model>`."""
    return LocalChatBackend(model)
