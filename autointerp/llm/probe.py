"""The preflight's requests to a model server: one `GET .../models` and one 1-token chat request.

A server backend's `check` (see `autointerp.llm.registry.BackendKind`) says where its server is and
how to ask it (`ServerProbe`); `probe_server` asks, so a server that is down, refuses the key, lists
its models but never answers, or does not list the model, is found before the run starts. Neither a
key nor a header ever appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autointerp.errors import LLMError
from autointerp.llm.registry import ProbeLimits


@dataclass(frozen=True)
class ServerProbe:
    """Where a backend's server is and how the preflight asks it."""

    models_url: str
    """The URL that lists the server's models."""
    chat_url: str
    """The URL of a chat request."""
    chat_body: dict[str, Any]
    """A minimal chat request asking for a 1-token answer."""
    model: str
    """The model name the server should list (a `?option=...` suffix, ours, is ignored)."""
    key_env: str
    """The environment variable of the key, named when the server refuses it."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Request headers (the key among them): never shown."""


def probe_server(probe: ServerProbe, who: str, limits: ProbeLimits) -> list[str]:
    """Asks the server for its models, then (when `limits.chat_timeout_s` is set) for a 1-token answer.
    Returns a warning when it does not list the model; raises a one-line LLMError when it is unreachable,
    refuses the key or does not answer the chat request in time."""
    answer = probe_models(probe.models_url, probe.headers, who, probe.key_env, limits.timeout_s)
    warnings = unlisted_model_warning(answer, probe.model, who)
    if limits.chat_timeout_s:
        probe_chat(probe.chat_url, probe.headers, probe.chat_body, who, probe.key_env, limits.chat_timeout_s)
    return warnings


def probe_models(url: str, headers: dict[str, str], who: str, key_env: str | None, timeout_s: float) -> Any:
    """GETs `url` once; returns its JSON (or None); raises LLMError when the server is unreachable or
    refuses the key. Neither the key nor the headers appear in any message."""
    import httpx

    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise LLMError(f"{who}: no answer from {url} within {timeout_s:g} s; is the server up?") from None
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LLMError(f"{who}: cannot reach {url} ({reason}); start the server or fix the URL") from None
    if response.status_code in (401, 403):
        hint = f"; check {key_env}" if key_env else ""
        raise LLMError(f"{who}: {url} refused the request (HTTP {response.status_code}){hint}")
    if response.status_code >= 400:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def probe_chat(
    url: str, headers: dict[str, str], body: dict[str, Any], who: str, key_env: str, timeout_s: float
) -> None:
    """POSTs one minimal chat request (a 1-token answer) and returns once the server answers anything
    within `timeout_s`: a server that lists its models but never answers a chat request is found here,
    not after minutes of retries in the run. Raises LLMError when it does not answer or refuses the key;
    any other answer (even an error status) shows the server is alive, and the run reports it per call."""
    import httpx

    try:
        response = httpx.post(url, headers=headers, json=body, timeout=timeout_s)
    except httpx.TimeoutException:
        raise LLMError(
            f"{who}: {url} did not answer a 1-token chat request within {timeout_s:g} s; the server lists its "
            "models but does not generate (overloaded, or still loading the model?)"
        ) from None
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LLMError(f"{who}: cannot reach {url} ({reason}); start the server or fix the URL") from None
    if response.status_code in (401, 403):
        raise LLMError(f"{who}: {url} refused the request (HTTP {response.status_code}); check {key_env}")


def unlisted_model_warning(answer: Any, model: str, who: str) -> list[str]:
    """Returns a warning when a /models answer lists models and `model` (without a `?option=...` suffix
    such as `?logprobs=auto`, which is ours, not the server's) is not among them."""
    model = model.partition("?")[0]
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        return []
    ids = [str(m.get("id")) for m in answer["data"] if isinstance(m, dict)]
    if ids and model not in ids:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        return [f"{who}: the server does not list model {model!r} (it lists {shown})"]
    return []
