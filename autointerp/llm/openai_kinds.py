"""The `openai` and `openai-compatible` backend kinds: the entry points that build the backends
(`autointerp.llm.openai_backend`) and check a model for the preflight (key, server, model listed, a 1-token
chat)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from autointerp.errors import LLMError
from autointerp.llm.openai_backend import BASE_URL_ENV, OpenAIChatBackend, OpenAICompatibleChatBackend
from autointerp.llm.openai_requests import split_model_spec
from autointerp.llm.probe import ServerProbe, probe_server
from autointerp.llm.registry import BackendKind, ProbeLimits


class OpenAIBackends(BackendKind[OpenAIChatBackend]):
    """`openai:<model>`: OpenAI's API (or `OPENAI_BASE_URL`); the key is required."""

    chat_backend: ClassVar[type[OpenAIChatBackend]] = OpenAIChatBackend
    default_base: ClassVar[str | None] = "https://api.openai.com/v1"
    """The server when neither the spec nor `OPENAI_BASE_URL` names one (None: one must be named)."""

    def create(self, model: str) -> OpenAIChatBackend:
        """Returns the backend or raises LLMError."""
        return self.chat_backend(model)

    def check(self, model: str, who: str, limits: ProbeLimits) -> list[str]:
        """Checks the key and the server: it answers `GET /models` (and lists the model) and a 1-token chat."""
        spec_url, name = split_model_spec(model)
        kind, key_env = self.chat_backend.backend, self.chat_backend.key_env
        key = os.environ.get(key_env)
        if self.chat_backend.key_required and not key:
            raise LLMError(f"{who}: the {kind} backend needs an API key: set {key_env}")
        base = spec_url or os.environ.get(BASE_URL_ENV) or self.default_base
        if base is None:
            raise LLMError(
                f"{who}: the {kind} backend needs a server: use {kind}:http://HOST:PORT/v1#{name} or set {BASE_URL_ENV}"
            )
        body: dict[str, Any] = {"model": name.partition("?")[0], "messages": [{"role": "user", "content": "Say yes."}]}
        body[self.chat_backend.max_tokens_param] = 1
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        base = base.rstrip("/")
        probe = ServerProbe(base + "/models", base + "/chat/completions", body, name, key_env, headers)
        return probe_server(probe, who, limits)


class OpenAICompatibleBackends(OpenAIBackends):
    """`openai-compatible:<url>#<model>`: any OpenAI-compatible server; a key is optional."""

    chat_backend: ClassVar[type[OpenAIChatBackend]] = OpenAICompatibleChatBackend
    default_base: ClassVar[str | None] = None


create_openai_backend = OpenAIBackends()
"""Entry point `openai` (a kind is also a factory: `create_openai_backend(model)` is the backend)."""
create_openai_compatible_backend = OpenAICompatibleBackends()
"""Entry point `openai-compatible`."""
