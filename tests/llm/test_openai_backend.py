"""The openai / openai-compatible backends against a real HTTP server on loopback."""

from __future__ import annotations

import os
import sys
import time
import traceback

import pytest

from autointerp.errors import LLMError
from autointerp.llm import registry
from autointerp.llm.base import ChatMessage, ChatRequest
from autointerp.llm.openai_backend import OpenAIChatBackend
from autointerp.llm.openai_kinds import create_openai_backend, create_openai_compatible_backend
from autointerp.llm.registry import get_backend, register_backend
from autointerp.llm.retry import RetryPolicy, parse_retry_after
from tests.llm.loopback_server import LoopbackServer, Reply, openai_completion, openai_error

SECRET = "sk-test-SECRET-0123456789abcdef"
FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
REQUEST = ChatRequest(
    messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi?")],
    max_tokens=20,
    temperature=0.0,
)


@pytest.fixture(autouse=True)
def openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for name in ("OPENAI_BASE_URL", "AUTOINTERP_LLM_TIMEOUT", "AUTOINTERP_LLM_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)


def backend_for(server: LoopbackServer, timeout_s: float = 5.0) -> OpenAIChatBackend:
    return OpenAIChatBackend(f"{server.url}/v1#test-model", timeout_s=timeout_s, retry=FAST)


def test_answer_text_tokens_and_request_shape() -> None:
    with LoopbackServer([Reply(openai_completion("Hello there.", 11, 5))]) as server:
        response = backend_for(server).generate(REQUEST)
    assert (response.text, response.input_tokens, response.output_tokens) == ("Hello there.", 11, 5)
    [received] = server.received
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert received.body["model"] == "test-model"
    assert received.body["max_completion_tokens"] == 20
    assert received.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


def test_prefill_is_asked_for_and_stripped_from_the_answer() -> None:
    request = REQUEST.model_copy(update={"prefill": "Explanation:"})
    with LoopbackServer([Reply(openai_completion("Explanation: greetings"))]) as server:
        response = backend_for(server).generate(request)
    assert response.text == " greetings"
    assert server.received[0].body["messages"][-1]["content"] == "Hi?\n\nStart your answer with: Explanation:"


def test_429_waits_for_retry_after_then_succeeds() -> None:
    script = [
        Reply(openai_error("slow down", "rate_limit"), status=429, headers={"Retry-After": "0.2"}),
        Reply(openai_completion("ok")),
    ]
    with LoopbackServer(script) as server:
        assert backend_for(server).generate(REQUEST).text == "ok"
    assert len(server.received) == 2
    assert server.gaps_s[0] >= 0.2  # the backoff alone would wait at most 0.01 s


def test_500_is_retried() -> None:
    with LoopbackServer([Reply(openai_error("boom"), status=500), Reply(openai_completion("ok"))]) as server:
        assert backend_for(server).generate(REQUEST).text == "ok"
    assert len(server.received) == 2


def test_persistent_500_raises_one_line_naming_backend_and_status() -> None:
    with LoopbackServer([Reply(openai_error("boom"), status=500)]) as server, pytest.raises(LLMError) as caught:
        backend_for(server).generate(REQUEST)
    assert len(server.received) == 1 + FAST.max_retries
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("openai:test-model at http://127.0.0.1:")
    assert "failed after 3 attempts: HTTP 500 (boom)" in message


def test_client_error_is_not_retried() -> None:
    with (
        LoopbackServer([Reply(openai_error("bad model", "invalid_request_error"), status=404)]) as server,
        pytest.raises(LLMError, match="HTTP 404"),
    ):
        backend_for(server).generate(REQUEST)
    assert len(server.received) == 1


def test_timeout_ends_in_llm_error_after_the_retries() -> None:
    started = time.monotonic()
    with (
        LoopbackServer([Reply(openai_completion("late"), delay_s=5)]) as server,
        pytest.raises(LLMError, match=r"failed after 3 attempts: no answer within 0.2s \(timeout\)"),
    ):
        backend_for(server, timeout_s=0.2).generate(REQUEST)
    assert len(server.received) == 3
    assert time.monotonic() - started < 3


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = Reply(openai_error(f"Incorrect API key provided: {SECRET}", "invalid_request_error"), status=401)
    with LoopbackServer([leaky]) as server:
        backend = backend_for(server)
        with pytest.raises(LLMError) as caught:
            backend.generate(REQUEST)
    assert server.received[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "HTTP 401" in str(caught.value)
    assert SECRET not in "".join(traceback.format_exception(caught.value))
    assert SECRET not in repr(backend)
    assert SECRET not in repr(vars(backend))  # the backend's own attributes do not hold it


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(LLMError, match="set OPENAI_API_KEY"):
        create_openai_backend("gpt-4o-mini")


def test_openai_compatible_through_the_registry_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # an OpenAI key in the environment must not travel to whatever compatible server is named
    assert os.environ["OPENAI_API_KEY"] == SECRET
    monkeypatch.setenv("AUTOINTERP_LLM_MAX_RETRIES", "0")
    monkeypatch.setattr(registry.BACKENDS, "_registered", dict(registry.BACKENDS._registered))
    monkeypatch.setattr(registry, "_instances", {})
    register_backend("openai-compatible", create_openai_compatible_backend)
    with LoopbackServer([Reply(openai_completion("local answer"))]) as server:
        backend = get_backend(f"openai-compatible:{server.url}/v1#qwen")
        assert backend.generate(REQUEST).text == "local answer"
    assert backend.name == "openai-compatible:qwen"
    assert server.received[0].headers["authorization"] == "Bearer not-needed"
    assert server.received[0].body["max_tokens"] == 20


def test_openai_compatible_without_a_server_says_how_to_name_one() -> None:
    with pytest.raises(LLMError, match="OPENAI_BASE_URL"):
        create_openai_compatible_backend("qwen")


def test_base_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer([Reply(openai_completion("via env"))]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        assert create_openai_backend("gpt-test").generate(REQUEST).text == "via env"
    assert server.received[0].body["model"] == "gpt-test"


def test_timeout_and_retries_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOINTERP_LLM_TIMEOUT", "7.5")
    monkeypatch.setenv("AUTOINTERP_LLM_MAX_RETRIES", "1")
    backend = create_openai_backend("gpt-test")
    assert (backend.timeout_s, backend.retry.max_retries) == (7.5, 1)
    monkeypatch.setenv("AUTOINTERP_LLM_TIMEOUT", "soon")
    with pytest.raises(LLMError, match="AUTOINTERP_LLM_TIMEOUT"):
        create_openai_backend("gpt-test")


def test_missing_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(LLMError, match="pip install openai"):
        create_openai_backend("gpt-4o-mini")


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"Retry-After": "whenever"}) is None
    assert parse_retry_after({}) is None
