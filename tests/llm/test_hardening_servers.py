"""Servers as they are: stalled, failing, slow, and the option suffix on a model name.

Against the scripted loopback server: the preflight's 1-token chat request finds a server that lists its
models but never answers; a run whose calls make no progress stops with one line naming the server;
retries are one warning, counted in the final error; timeouts grow with the tokens asked for; only the
log-probabilities a scorer reads are probed; a prefill is continued where the server can.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.errors import ConfigError, LLMError
from autointerp.llm.base import ChatMessage, ChatRequest
from autointerp.llm.openai_backend import OpenAICompatibleChatBackend
from autointerp.llm.retry import PROGRESS, RetryPolicy, ServerStalled, request_timeout
from tests.conftest import session_of
from tests.llm.loopback_server import LoopbackServer, Received, Reply, VLLMResponder, openai_completion, openai_error

FAST = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.02, jitter=0.0)
REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="Hi?")], max_tokens=8)
LISTED = [{"id": "served", "object": "model", "owned_by": "someone"}]


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "AUTOINTERP_LLM_TIMEOUT", "AUTOINTERP_LLM_MAX_RETRIES", "AUTOINTERP_LLM_STALL_S"):
        monkeypatch.delenv(name, raising=False)
    PROGRESS.reset()


def _check(tmp_path: Path, *overrides: str) -> tuple[int, list[str]]:
    args = ["check", "-s", f"store.path='{tmp_path / 'r.duckdb'}'", "-s", "score.methods=['embedding']"]
    for override in overrides:
        args += ["-s", override]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output.splitlines()


def test_a_server_that_lists_models_but_never_answers_fails_the_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("autointerp.cli.preflight.CHAT_PROBE_TIMEOUT_S", 1.0)
    with LoopbackServer([Reply(openai_completion("late"), delay_s=30)], models=LISTED) as server:
        started = time.monotonic()
        code, lines = _check(tmp_path, f"explainer.model='openai-compatible:{server.url}/v1#served'")
        took = time.monotonic() - started
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: explainer.model 'openai-compatible:")
    assert "did not answer a 1-token chat request within 1 s" in lines[0]
    assert took < 10
    assert [r.body["max_tokens"] for r in server.received] == [1]


def test_the_option_suffix_is_not_part_of_the_listed_name(tmp_path: Path) -> None:
    with LoopbackServer([Reply(openai_completion("yes", 3, 1))], models=LISTED) as server:
        code, lines = _check(tmp_path, f"explainer.model='openai-compatible:{server.url}/v1#served?logprobs=auto'")
        assert (code, lines[-1][:3]) == (0, "ok:"), lines
        assert not any("does not list" in line for line in lines)
        code, lines = _check(tmp_path, f"explainer.model='openai-compatible:{server.url}/v1#other?logprobs=none'")
    assert code == 0 and any("does not list model 'other'" in line for line in lines), lines
    assert server.received[0].body["model"] == "served"  # the probe asks for the name without the suffix


def test_a_run_whose_server_makes_no_progress_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call times out: after AUTOINTERP_LLM_STALL_S the call raises ServerStalled (a ConfigError: the
    stage stops) naming the server, and every later call fails at once instead of waiting again."""
    monkeypatch.setenv("AUTOINTERP_LLM_STALL_S", "1")
    with LoopbackServer([Reply(openai_completion("late"), delay_s=5)]) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m", timeout_s=0.3, retry=FAST)
        started = time.monotonic()
        with pytest.raises(ServerStalled) as stalled:
            backend.generate(REQUEST)
        took = time.monotonic() - started
        assert isinstance(stalled.value, ConfigError)
        assert f"openai-compatible:m at {server.url}/v1 made no progress for" in str(stalled.value)
        assert "no answer within 0.3s (timeout)" in str(stalled.value)
        assert 1.0 <= took < 3
        sent = len(server.received)
        started = time.monotonic()
        with pytest.raises(ServerStalled):
            backend.generate(REQUEST)
        assert time.monotonic() - started < 0.2 and len(server.received) == sent


def test_the_stalled_server_stops_the_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the explain stage: the stage stops (`stopped: ... made no progress`), features not started
    are left for a rerun, and no feature is failed for it."""
    from autointerp.explain.stage import run_explain
    from autointerp.store.database import Store
    from tests.llm.synthetic import explain_config, write_synthetic_run

    monkeypatch.setenv("AUTOINTERP_LLM_STALL_S", "1")
    monkeypatch.setenv("AUTOINTERP_LLM_TIMEOUT", "0.2")
    monkeypatch.setenv("AUTOINTERP_LLM_MAX_RETRIES", "10")
    with LoopbackServer([Reply(openai_completion("late"), delay_s=5)]) as server:
        config = explain_config(tmp_path, server.url, "llm.concurrency=2", "explainer.max_tokens=4")
        store = Store(config.store.path)
        write_synthetic_run(store, "stalled", 6)
        started = time.monotonic()
        result = run_explain(config, store, "stalled", session_of(config, store, "stalled"))
    assert time.monotonic() - started < 15
    assert result.done == 0 and result.stopped is not None and "made no progress" in result.stopped
    assert server.url in result.stopped


def test_retries_are_one_warning_and_a_count_in_the_error(caplog: pytest.LogCaptureFixture) -> None:
    with LoopbackServer([Reply(openai_error("boom"), status=500)]) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m", timeout_s=5, retry=FAST)
        with caplog.at_level(logging.DEBUG, logger="autointerp.llm.retry"):
            for _ in range(3):
                with pytest.raises(LLMError, match=r"failed after 4 attempts: HTTP 500 \(boom\)"):
                    backend.generate(REQUEST)
    assert len(server.received) == 12
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500; retrying (up to 3 times per call" in warnings[0], warnings


def test_timeouts_grow_with_the_tokens_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Base 1 s + 0.25 s per token: a 1-token request gives up on a 2 s answer, a 8-token one waits for it."""
    monkeypatch.setenv("AUTOINTERP_LLM_TIMEOUT", "1")
    assert request_timeout(1.0, 8) == 3.0
    with LoopbackServer([Reply(openai_completion("slow but fine"), delay_s=2)]) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m", retry=RetryPolicy(max_retries=0))
        assert backend.request_timeout(24) == 7.0
        with pytest.raises(LLMError, match=r"no answer within 1.25s"):
            backend.generate(REQUEST.model_copy(update={"max_tokens": 1}))
        assert backend.generate(REQUEST).text == "slow but fine"


def test_only_the_log_probabilities_read_are_probed() -> None:
    """A judge reads `answer_logprobs` only: no prompt-log-probability probe (`/completions`) is sent."""
    with LoopbackServer([], respond=VLLMResponder()) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m?logprobs=auto", timeout_s=5, retry=FAST)
        assert backend.capabilities().answer_logprobs is True
        assert [r.path for r in server.received] == ["/v1/chat/completions"]
        shares = backend.answer_probabilities([REQUEST], {"yes": ["yes", " Yes"], "no": ["no", " No"]})
        assert shares[0]["yes"] == pytest.approx(0.5)
        assert (shares[0].input_tokens, shares[0].output_tokens) == (17, 1)  # type: ignore[attr-defined]
        assert not any(r.path.endswith("/v1/completions") for r in server.received)


def _echo_last(request: Received) -> Reply:
    return Reply(openai_completion(" the word cat.", 9, 4))


@pytest.mark.parametrize(
    ("owner", "continued"), [("vllm", True), ("llamacpp", True), ("someone", False), (None, False)]
)
def test_a_prefill_is_continued_where_the_server_can(owner: str | None, continued: bool) -> None:
    models = None if owner is None else [{"id": "m", "owned_by": owner}]
    request = REQUEST.model_copy(update={"prefill": "Explanation:"})
    with LoopbackServer([], respond=_echo_last, models=models) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m", timeout_s=5, retry=FAST)
        assert backend.generate(request).text == " the word cat."
    body = server.received[-1].body
    if continued:
        assert body["messages"][-1] == {"role": "assistant", "content": "Explanation:"}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    else:
        assert body["messages"][-1]["content"] == "Hi?\n\nStart your answer with: Explanation:"
        assert "continue_final_message" not in body


def test_a_server_refusing_continuation_gets_the_instruction() -> None:
    """A server that says vllm but refuses the fields (HTTP 422, as `transformers serve` does) is asked again
    with the prefill as an instruction, and not asked to continue again."""

    def respond(request: Received) -> Reply:
        if "continue_final_message" in request.body:
            return Reply({"detail": "Unexpected fields in the request"}, status=422)
        return Reply(openai_completion("Explanation: the word cat.", 9, 4))

    request = REQUEST.model_copy(update={"prefill": "Explanation:"})
    with LoopbackServer([], respond=respond, models=[{"id": "m", "owned_by": "vllm"}]) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m", timeout_s=5, retry=FAST)
        assert backend.generate(request).text == " the word cat."
        assert backend.generate(request).text == " the word cat."
    posted = [r.body for r in server.received]
    assert ["continue_final_message" in b for b in posted] == [True, False, False]


@pytest.mark.parametrize(("key", "most"), [("openai-compatible:test-model", 1), ("openai-compatible:other", 4)])
def test_a_slow_server_gets_fewer_calls_at_once_by_model(tmp_path: Path, key: str, most: int) -> None:
    """`llm.limits."backend:model".concurrency` caps the calls in flight to that model alone."""
    from autointerp.explain.stage import run_explain
    from autointerp.store.database import Store
    from tests.llm.synthetic import explain_config, explaining_reply, write_synthetic_run

    with LoopbackServer([], respond=explaining_reply(delay_s=0.3)) as server:
        config = explain_config(
            tmp_path, server.url, "llm.concurrency=8", f'llm.limits."{key}".concurrency=1', "llm.cache=false"
        )
        store = Store(config.store.path)
        write_synthetic_run(store, "limited", 4)
        assert run_explain(config, store, "limited", session_of(config, store, "limited")).done == 4
    assert server.max_in_flight == 1 if most == 1 else server.max_in_flight >= 2


def test_a_stalled_server_is_tried_again_after_the_stall_window() -> None:
    """Calls fail at once for `stall_s` after the stall (the stage stops); later (a new run in the same
    process, e.g. a schedule) the server is tried again, and an answer clears its record."""
    from autointerp.llm.retry import CallFailure, ServerProgress

    now = [0.0]
    progress = ServerProgress(clock=lambda: now[0])
    timeout = CallFailure(reason="no answer within 30s (timeout)", retryable=True)
    progress.failed("s", 0.0, timeout, stall_s=100)
    now[0] = 120.0
    with pytest.raises(ServerStalled, match=r"^s made no progress for 120 s \(last failure: no answer"):
        progress.failed("s", 90.0, timeout, stall_s=100)
    now[0] = 200.0
    with pytest.raises(ServerStalled):
        progress.check("s")
    now[0] = 221.0
    progress.check("s")  # tried again
    progress.failed("s", 221.0, timeout, stall_s=100)  # a new streak: not stalled yet
    progress.succeeded("s")
    now[0] = 400.0
    progress.failed("s", 390.0, timeout, stall_s=100)


def test_judge_calls_record_the_servers_token_counts() -> None:
    """P("yes") over HTTP: the recorded tokens are the server's `usage` (17 in, 1 out per item), not the
    caller's estimate of 4 characters per token."""
    from autointerp.config import LLMConfig
    from autointerp.llm.calls import CallRecorder, LLMSession

    recorder = CallRecorder("r", LLMSession.from_settings(LLMConfig(cache=False)))
    with LoopbackServer([], respond=VLLMResponder()) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m?logprobs=answer", timeout_s=5, retry=FAST)
        shares, _ = recorder.measure(
            backend,
            lambda: backend.answer_probabilities([REQUEST, REQUEST], {"yes": ["yes"], "no": ["no"]}),
            role="detect",
            prompt_hash="h",
            request={},
            describe=lambda shares: ("estimate", 999, 0),
            feature_id=None,
        )
    assert shares is not None and len(shares) == 2
    assert (recorder.rows[0].input_tokens, recorder.rows[0].output_tokens) == (34, 2)
