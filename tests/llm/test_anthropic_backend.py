"""The anthropic backend against a real HTTP server on loopback."""

from __future__ import annotations

import sys
import time
import traceback

import pytest

from autointerp.errors import LLMError
from autointerp.llm import registry
from autointerp.llm.anthropic_backend import AnthropicChatBackend, create_anthropic_backend
from autointerp.llm.base import BackendCapabilities, CapabilityMissing, ChatMessage, ChatRequest
from autointerp.llm.registry import get_backend, register_backend
from autointerp.llm.retry import RetryPolicy
from tests.llm.loopback_server import LoopbackServer, Reply, anthropic_error, anthropic_message

SECRET = "sk-ant-test-SECRET-0123456789abcdef"
FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
REQUEST = ChatRequest(
    messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi?")],
    max_tokens=20,
    temperature=0.0,
)


@pytest.fixture(autouse=True)
def anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "AUTOINTERP_LLM_TIMEOUT", "AUTOINTERP_LLM_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)


def backend_for(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, timeout_s: float = 5.0
) -> AnthropicChatBackend:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    return AnthropicChatBackend("claude-test", timeout_s=timeout_s, retry=FAST)


def sent_key(headers: dict[str, str]) -> str:
    """Returns the key the client sent, in x-api-key or as a bearer token (SDK versions differ)."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def test_answer_text_tokens_and_request_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer([Reply(anthropic_message("Hello there.", 13, 7))]) as server:
        response = backend_for(server, monkeypatch).generate(REQUEST)
    assert (response.text, response.input_tokens, response.output_tokens) == ("Hello there.", 13, 7)
    [received] = server.received
    assert received.path == "/v1/messages"
    assert sent_key(received.headers) == SECRET
    assert "anthropic-version" in received.headers
    assert received.body["model"] == "claude-test"
    assert received.body["max_tokens"] == 20
    assert received.body["system"] == "Be brief."
    assert received.body["messages"] == [{"role": "user", "content": "Hi?"}]
    assert "temperature" not in received.body  # rejected by the API version SDK 2.x speaks


def test_prefill_is_a_final_assistant_message(monkeypatch: pytest.MonkeyPatch) -> None:
    request = REQUEST.model_copy(update={"prefill": "Explanation: "})
    with LoopbackServer([Reply(anthropic_message(" greetings"))]) as server:
        response = backend_for(server, monkeypatch).generate(request)
    assert response.text == "greetings"
    assert server.received[0].body["messages"][-1] == {"role": "assistant", "content": "Explanation:"}


def test_429_waits_for_retry_after_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    rate_limited = Reply(anthropic_error("slow down", "rate_limit_error"), status=429, headers={"Retry-After": "0.2"})
    script = [rate_limited, Reply(anthropic_message("ok"))]
    with LoopbackServer(script) as server:
        assert backend_for(server, monkeypatch).generate(REQUEST).text == "ok"
    assert len(server.received) == 2
    assert server.gaps_s[0] >= 0.2  # the backoff alone would wait at most 0.01 s


def test_500_and_overloaded_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    script = [
        Reply(anthropic_error("boom"), status=500),
        Reply(anthropic_error("busy", "overloaded_error"), status=529),
        Reply(anthropic_message("ok")),
    ]
    with LoopbackServer(script) as server:
        assert backend_for(server, monkeypatch).generate(REQUEST).text == "ok"
    assert len(server.received) == 3


def test_persistent_500_raises_one_line_naming_backend_and_status(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer([Reply(anthropic_error("boom"), status=500)]) as server:
        backend = backend_for(server, monkeypatch)
        with pytest.raises(LLMError) as caught:
            backend.generate(REQUEST)
    assert len(server.received) == 1 + FAST.max_retries
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("anthropic:claude-test at http://127.0.0.1:")
    assert "failed after 3 attempts: HTTP 500 (boom)" in message


def test_timeout_ends_in_llm_error_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    with LoopbackServer([Reply(anthropic_message("late"), delay_s=5)]) as server:
        backend = backend_for(server, monkeypatch, timeout_s=0.2)
        with pytest.raises(LLMError, match=r"failed after 3 attempts: no answer within 0.2s \(timeout\)"):
            backend.generate(REQUEST)
    assert len(server.received) == 3
    assert time.monotonic() - started < 3


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = Reply(anthropic_error(f"invalid x-api-key {SECRET}", "authentication_error"), status=401)
    with LoopbackServer([leaky]) as server:
        backend = backend_for(server, monkeypatch)
        with pytest.raises(LLMError) as caught:
            backend.generate(REQUEST)
    assert sent_key(server.received[0].headers) == SECRET
    assert len(server.received) == 1
    assert "HTTP 401" in str(caught.value)
    assert SECRET not in "".join(traceback.format_exception(caught.value))
    assert SECRET not in repr(backend)
    assert SECRET not in repr(vars(backend))  # the backend's own attributes do not hold it


def test_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.BACKENDS, "_registered", dict(registry.BACKENDS._registered))
    monkeypatch.setattr(registry, "_instances", {})
    register_backend("anthropic", create_anthropic_backend)
    monkeypatch.setenv("AUTOINTERP_LLM_MAX_RETRIES", "0")
    with LoopbackServer([Reply(anthropic_message("registered"))]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        backend = get_backend("anthropic:claude-registry-test")
        assert backend.generate(REQUEST).text == "registered"
    assert backend.name == "anthropic:claude-registry-test"


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(LLMError, match="set ANTHROPIC_API_KEY"):
        create_anthropic_backend("claude-test")


def test_missing_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(LLMError, match="pip install anthropic"):
        create_anthropic_backend("claude-test")


def test_no_log_probabilities_and_no_batching() -> None:
    backend = create_anthropic_backend("claude-test")
    assert backend.capabilities() == BackendCapabilities(False, False, False)
    with pytest.raises(CapabilityMissing):
        backend.read_values([(REQUEST, ["a"])])
    with pytest.raises(CapabilityMissing):
        backend.answer_probabilities([REQUEST], {"yes": ["yes"], "no": ["no"]})
