"""The `anthropic` backend: Claude models through the official `anthropic` SDK (Messages API).

The API key is read from `ANTHROPIC_API_KEY` and handed to the SDK client; it is never kept on
the backend, logged, or written into an exception message. `ANTHROPIC_BASE_URL` points it at
another server (a proxy, a gateway, a test server).

The Messages API returns no log-probabilities, of the prompt or of the answer: `capabilities()` says so,
and scorers use parsed answers (simulation `generate`; judges' balanced accuracy, no AUROC).

`ChatRequest.temperature` is not sent: the anthropic SDK 2.x has no sampling parameters, and the
API version it speaks answers HTTP 400 to `temperature`, whatever its value.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from autointerp.errors import LLMError
from autointerp.llm.base import BackendCapabilities, ChatBackend, ChatRequest, ChatResponse
from autointerp.llm.probe import ServerProbe, probe_server
from autointerp.llm.registry import BackendKind, ProbeLimits
from autointerp.llm.retry import RetryPolicy, call_with_retries, request_timeout, sdk_failure, timeout_from_env

if TYPE_CHECKING:
    from anthropic import Anthropic

KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"


def import_anthropic() -> ModuleType:
    """Returns the `anthropic` module, or raises LLMError saying how to install it."""
    try:
        import anthropic
    except ImportError:
        raise LLMError("the anthropic backend needs the anthropic SDK: pip install anthropic") from None
    return anthropic


def messages_params(request: ChatRequest) -> dict[str, Any]:
    """Returns the `system` and `messages` arguments of a Messages API call for `request`.

    System messages are joined into `system`; the prefill becomes a final assistant message,
    without trailing whitespace, which the API rejects there.
    """
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    messages = [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"]
    if request.prefill.rstrip():
        messages.append({"role": "assistant", "content": request.prefill.rstrip()})
    params: dict[str, Any] = {"messages": messages}
    if system:
        params["system"] = system
    return params


class AnthropicChatBackend(ChatBackend):
    """A Claude model behind the Anthropic Messages API."""

    backend: ClassVar[str] = "anthropic"

    def __init__(self, model: str, *, timeout_s: float | None = None, retry: RetryPolicy | None = None) -> None:
        super().__init__(model)
        key = os.environ.get(KEY_ENV)
        if not key:
            raise LLMError(f"the anthropic backend needs an API key: set {KEY_ENV}")
        self.base_url: str | None = os.environ.get(BASE_URL_ENV) or None
        self.timeout_s = timeout_s if timeout_s is not None else timeout_from_env()
        """Per-request timeout: fixed when given, else the base to which each request adds time per token."""
        self.scaled_timeout = timeout_s is None
        self.retry = retry or RetryPolicy.from_env()
        self._sdk = import_anthropic()
        self._client: Anthropic = self._sdk.Anthropic(
            api_key=key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def label(self) -> str:
        """Returns `backend:model`, with the server when one is set, for log lines and errors."""
        return f"{self.name} at {self.base_url}" if self.base_url else self.name

    def capabilities(self) -> BackendCapabilities:
        """Returns no capabilities: the Messages API gives no log-probabilities and has no batched generation."""
        return BackendCapabilities(prompt_logprobs=False, answer_logprobs=False, batched_generation=False)

    def generate(self, request: ChatRequest) -> ChatResponse:
        """Returns the model's continuation of the prefill; raises LLMError once retries are spent."""
        params = {"model": self.model, "max_tokens": request.max_tokens, **messages_params(request)}
        timeout = request_timeout(self.timeout_s, request.max_tokens) if self.scaled_timeout else self.timeout_s
        message = call_with_retries(
            lambda: self._client.messages.create(**params, timeout=timeout),
            describe=lambda exc: sdk_failure(exc, self._sdk, timeout),
            label=self.label,
            policy=self.retry,
            secrets=[self._client.api_key or ""],
        )
        text = "".join(block.text for block in message.content if block.type == "text")
        if request.prefill != request.prefill.rstrip():
            text = text.lstrip()
        return ChatResponse(
            text=text,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        )


class AnthropicBackends(BackendKind[AnthropicChatBackend]):
    """`anthropic:<model>`: Claude models; the key is required."""

    default_base: ClassVar[str] = "https://api.anthropic.com"
    api_version: ClassVar[str] = "2023-06-01"

    def create(self, model: str) -> AnthropicChatBackend:
        """Returns the backend or raises LLMError."""
        return AnthropicChatBackend(model)

    def check(self, model: str, who: str, limits: ProbeLimits) -> list[str]:
        """Checks the key and the server: it answers `GET /v1/models` (and lists the model) and a 1-token chat."""
        key = os.environ.get(KEY_ENV)
        if not key:
            raise LLMError(f"{who}: the anthropic backend needs an API key: set {KEY_ENV}")
        base = (os.environ.get(BASE_URL_ENV) or self.default_base).rstrip("/")
        headers = {"x-api-key": key, "anthropic-version": self.api_version}
        body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Say yes."}]}
        probe = ServerProbe(base + "/v1/models", base + "/v1/messages", body, model, KEY_ENV, headers)
        return probe_server(probe, who, limits)


create_anthropic_backend = AnthropicBackends()
"""Entry point `anthropic` (a kind is also a factory: `create_anthropic_backend(model)` is the backend)."""
