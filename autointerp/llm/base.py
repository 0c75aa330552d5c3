"""The chat-model interface every backend implements, and the messages that cross it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
    shape: str | None = None
    """The answer's shape (`autointerp.llm.guided.ANSWER_SHAPES`, e.g. `words-3`), for backends that
    constrain decoding to it (`ChatBackend.guided_generation`); others ignore it. None: free text."""
    no_repeat_ngram: int = Field(0, ge=0)
    """Guided backends: never repeat an n-gram of this many tokens within the answer (0: off)."""
    repetition_penalty: float = Field(1.0, ge=1.0)
    """Guided backends: divide the logits of tokens the answer already wrote by this (1: off)."""

    def logged(self) -> dict[str, Any]:
        """Returns the request as JSON-ready data for call records and cache keys; the guidance fields
        appear only when set, so requests without them keep the records and keys they always had."""
        data = self.model_dump(mode="json")
        for name in GUIDANCE_FIELDS:
            if data[name] == type(self).model_fields[name].default:
                del data[name]
        return data


GUIDANCE_FIELDS = ("shape", "no_repeat_ngram", "repetition_penalty")
"""ChatRequest fields that only guided backends read."""


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


class Probabilities(dict[str, float]):
    """{choice: probability} of one `answer_probabilities` item, with the tokens the server counted for
    it (its `usage`; 0 when it sent none)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def with_usage(cls, shares: Mapping[str, float], input_tokens: int, output_tokens: int) -> Probabilities:
        """Returns `shares` carrying the server's token counts."""
        made = cls(shares)
        made.input_tokens, made.output_tokens = input_tokens, output_tokens
        return made


class LazyCapabilities(BackendCapabilities):
    """Capabilities found out only when read: `offers(kind)` is asked for `prompt_logprobs` or
    `answer_logprobs` at first access, so a run reading only `answer_logprobs` (a detection-only run) never
    probes prompt log-probabilities. Compares equal to a `BackendCapabilities` with the same values."""

    def __init__(self, offers: Callable[[str], bool], batched_generation: bool = False) -> None:
        object.__setattr__(self, "_offers", offers)
        object.__setattr__(self, "_batched", batched_generation)

    @property  # type: ignore[override]
    def prompt_logprobs(self) -> bool:
        return bool(self._offers("prompt"))  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def answer_logprobs(self) -> bool:
        return bool(self._offers("answer"))  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def batched_generation(self) -> bool:
        return bool(self._batched)  # type: ignore[attr-defined]

    def _values(self) -> tuple[bool, bool, bool]:
        return self.prompt_logprobs, self.answer_logprobs, self.batched_generation

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackendCapabilities):
            return NotImplemented
        return self._values() == (other.prompt_logprobs, other.answer_logprobs, other.batched_generation)

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "LazyCapabilities(found out when read)"


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
    guided_generation: ClassVar[bool] = False
    """Whether `generate` honours a request's guidance (`shape`, `no_repeat_ngram`, `repetition_penalty`);
    requests to other backends are sent without it."""

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
