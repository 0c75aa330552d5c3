"""The chat-model interface every backend implements, and the messages that cross it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
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


class ChatBackend(ABC):
    """A chat model: `generate` is all a backend author writes; logging and retries live elsewhere."""

    backend: ClassVar[str]
    """Registry name of the backend, the part before ':' in `backend:model`."""
    max_concurrency: ClassVar[int | None] = None
    """Most calls worth running at once (a model in this process: 1); None: only the configured limit."""

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
