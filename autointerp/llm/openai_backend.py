"""The `openai` and `openai-compatible` backends: chat completions through the official `openai` SDK.

`openai:gpt-4o-mini` calls OpenAI (or `OPENAI_BASE_URL`); `openai-compatible:http://127.0.0.1:8000/v1#name`
calls any server speaking the chat-completions API (vLLM, llama.cpp, Ollama, ...), where a key is optional.
The API key is read from `OPENAI_API_KEY` (`AUTOINTERP_COMPATIBLE_API_KEY` for compatible servers)
and handed to the SDK client; it is never kept on the backend, logged, or written into an exception message.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.llm.retry import RetryPolicy, call_with_retries, sdk_failure, timeout_from_env

if TYPE_CHECKING:
    from openai import OpenAI

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
COMPATIBLE_KEY_ENV = "AUTOINTERP_COMPATIBLE_API_KEY"
NO_KEY = "not-needed"
"""Key sent to compatible servers that want none (the SDK insists on some key)."""


def import_openai() -> ModuleType:
    """Returns the `openai` module, or raises LLMError saying how to install it."""
    try:
        import openai
    except ImportError:
        raise LLMError("the openai backend needs the openai SDK: pip install openai") from None
    return openai


def split_model_spec(spec: str) -> tuple[str | None, str]:
    """Returns (base_url or None, model) from `model` or `http(s)://host:port/v1#model`."""
    if spec.startswith(("http://", "https://")):
        base_url, sep, model = spec.partition("#")
        if not sep or not model:
            raise LLMError(f"model {spec!r} needs the model name after '#', e.g. http://127.0.0.1:8000/v1#qwen")
        return base_url, model
    return None, spec


def prefill_as_instruction(messages: list[ChatMessage], prefill: str) -> list[ChatMessage]:
    """Returns `messages` with the last user turn asking the answer to start with `prefill`."""
    if not prefill:
        return messages
    instruction = f"Start your answer with: {prefill}"
    last = messages[-1] if messages else None
    if last is not None and last.role == "user":
        return [*messages[:-1], ChatMessage(role="user", content=f"{last.content}\n\n{instruction}")]
    return [*messages, ChatMessage(role="user", content=instruction)]


def strip_prefill(text: str, prefill: str) -> str:
    """Returns `text` without a leading copy of `prefill` (the model was asked to repeat it)."""
    body = text.lstrip()
    for start in (prefill, prefill.strip()):
        if start and body.startswith(start):
            return body[len(start) :]
    return text


class OpenAIChatBackend(ChatBackend):
    """A model behind the OpenAI chat-completions API."""

    backend: ClassVar[str] = "openai"
    key_env: ClassVar[str] = KEY_ENV
    """Environment variable holding the API key."""
    key_required: ClassVar[bool] = True
    """Whether a missing key is an error (else a dummy key is sent)."""
    max_tokens_param: ClassVar[str] = "max_completion_tokens"
    """Request field for the token limit: OpenAI's current name; compatible servers know `max_tokens`."""

    def __init__(self, model: str, *, timeout_s: float | None = None, retry: RetryPolicy | None = None) -> None:
        spec_url, model_name = split_model_spec(model)
        super().__init__(model_name)
        self.base_url: str | None = spec_url or os.environ.get(BASE_URL_ENV) or None
        self.timeout_s = timeout_s if timeout_s is not None else timeout_from_env()
        self.retry = retry or RetryPolicy.from_env()
        self._sdk = import_openai()
        self._client: OpenAI = self._sdk.OpenAI(
            api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout_s, max_retries=0
        )

    def _api_key(self) -> str:
        key = os.environ.get(self.key_env)
        if key:
            return key
        if self.key_required:
            raise LLMError(f"the {self.backend} backend needs an API key: set {self.key_env}")
        return NO_KEY

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def label(self) -> str:
        """Returns `backend:model`, with the server when one is set, for log lines and errors."""
        return f"{self.name} at {self.base_url}" if self.base_url else self.name

    def generate(self, request: ChatRequest) -> ChatResponse:
        """Returns the model's answer, without the prefill; raises LLMError once retries are spent."""
        messages = prefill_as_instruction(request.messages, request.prefill)
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [message.model_dump() for message in messages],
            "temperature": request.temperature,
            self.max_tokens_param: request.max_tokens,
        }
        completion = call_with_retries(
            lambda: self._client.chat.completions.create(**params),
            describe=lambda exc: sdk_failure(exc, self._sdk, self.timeout_s),
            label=self.label,
            policy=self.retry,
            secrets=[self._client.api_key],
        )
        if not completion.choices:
            raise LLMError(f"{self.label} answered with no choices")
        text = completion.choices[0].message.content or ""
        usage = completion.usage
        return ChatResponse(
            text=strip_prefill(text, request.prefill) if request.prefill else text,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )


class OpenAICompatibleChatBackend(OpenAIChatBackend):
    """The same client for any OpenAI-compatible server; an API key is optional."""

    backend: ClassVar[str] = "openai-compatible"
    key_env: ClassVar[str] = COMPATIBLE_KEY_ENV
    """A key of its own, so an OpenAI key is never sent to whatever server is named."""
    key_required: ClassVar[bool] = False
    max_tokens_param: ClassVar[str] = "max_tokens"

    def __init__(self, model: str, *, timeout_s: float | None = None, retry: RetryPolicy | None = None) -> None:
        if split_model_spec(model)[0] is None and not os.environ.get(BASE_URL_ENV):
            raise LLMError(
                f"the openai-compatible backend needs a server: use openai-compatible:http://HOST:PORT/v1#{model}"
                f" or set {BASE_URL_ENV}"
            )
        super().__init__(model, timeout_s=timeout_s, retry=retry)


def create_openai_backend(model: str) -> OpenAIChatBackend:
    """Entry-point factory for `openai:<model>`; returns the backend or raises LLMError."""
    return OpenAIChatBackend(model)


def create_openai_compatible_backend(model: str) -> OpenAICompatibleChatBackend:
    """Entry-point factory for `openai-compatible:<url>#<model>`; returns the backend or raises LLMError."""
    return OpenAICompatibleChatBackend(model)
