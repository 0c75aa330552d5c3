"""The chat-model interface every backend implements, and the messages that cross it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """What is said."""


class ChatRequest(BaseModel):
    """A request to a chat model."""

    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage]
    """The conversation so far."""
    max_tokens: int = Field(64, ge=1)
    """Most tokens to generate."""
    temperature: float = Field(0.0, ge=0.0)
    """Sampling temperature; 0 means greedy."""
    prefill: str = ""
    """Text the assistant's answer starts with (its continuation is returned, without it)."""


class ChatResponse(BaseModel):
    """What a chat model answered."""

    text: str
    """The generated text, without the prefill."""
    input_tokens: int = 0
    """Prompt tokens billed or counted."""
    output_tokens: int = 0
    """Generated tokens."""


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do beyond generating text; scorers ask this instead of checking classes."""

    prompt_logprobs: bool = False
    """Reads probabilities at positions inside the prompt (all-at-once simulation: `read_values`)."""
    answer_logprobs: bool = False
    """Gives the probabilities of the answer's first token (judges' P("yes"): `answer_probabilities`)."""
    batched_generation: bool = False
    """Generates many prompts in one padded batch (`generate_many` is faster than one at a time)."""


@dataclass(frozen=True)
class ValueReadout:
    """Expected values 0-10 read at each line of an all-at-once simulation prompt."""

    values: list[float]
    """Expected value per line (sum of v * P(v) over the digits the model could emit there)."""
    digit_mass: float = 1.0
    """Mean probability mass the digits 0-10 held at the read positions, before renormalising."""
    input_tokens: int = 0
    """Prompt tokens processed."""


class CapabilityMissing(NotImplementedError):
    """The backend does not offer what was asked (its `capabilities()` says so)."""


class ChatBackend(ABC):
    """A chat model: `generate` is all a backend author writes; logging and retries live elsewhere."""

    backend: ClassVar[str]
    """Registry name of the backend, the part before ':' in `backend:model`."""
    max_concurrency: ClassVar[int | None] = None
    """Most calls worth running at once (a model in this process: 1); None: only the configured limit."""
    generation_batch_size: ClassVar[int] = 8
    """Prompts worth generating in one padded batch (used where `capabilities().batched_generation`)."""

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def name(self) -> str:
        """Returns `backend:model`."""
        return f"{self.backend}:{self.model}"

    @abstractmethod
    def generate(self, request: ChatRequest) -> ChatResponse:
        """Returns the model's answer to `request`."""

    async def agenerate(self, request: ChatRequest) -> ChatResponse:
        """Returns the answer without blocking the event loop (a thread by default)."""
        return await asyncio.to_thread(self.generate, request)

    def capabilities(self) -> BackendCapabilities:
        """Returns what this backend offers besides `generate` (none by default)."""
        return BackendCapabilities()

    def generate_many(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Returns one answer per request (one `generate` after another unless the backend batches)."""
        return [self.generate(request) for request in requests]

    def answer_probabilities(
        self, requests: Sequence[ChatRequest], choices: Mapping[str, Sequence[str]]
    ) -> list[dict[str, float]]:
        """Returns, per request, the probability of each choice (e.g. {"yes": [...], "no": [...]} as the
        spellings of its first token) renormalised over the choices. Needs `answer_logprobs`."""
        raise CapabilityMissing(f"{self.name} gives no answer probabilities")

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        """Returns, per (request, lines) item, the expected value 0-10 the model would write after each
        line: the prompt is the chat-formatted request with its prefill, then `line<TAB>0<NEWLINE>` per
        line, and the probabilities of "0".."10" are read after each tab. Needs `prompt_logprobs`."""
        raise CapabilityMissing(f"{self.name} reads no prompt probabilities")
