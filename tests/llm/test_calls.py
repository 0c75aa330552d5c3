"""The call path of a run: response cache, budget, prices, limits, concurrent explanation, `costs`.

Everything goes through the real openai-compatible backend to a real HTTP server on loopback
and a real DuckDB store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import LLMConfig
from autointerp.errors import ConfigError
from autointerp.explain.stage import run_explain
from autointerp.llm.accounting import Budget, BudgetExceeded, Price, PriceTable
from autointerp.llm.base import ChatMessage, ChatRequest
from autointerp.llm.cache import ResponseCache, cache_key
from autointerp.llm.calls import CallRecorder, LLMSession
from autointerp.llm.limits import TokenBucket
from autointerp.llm.openai_backend import OpenAICompatibleChatBackend
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.loopback_server import LoopbackServer, Reply, openai_completion
from tests.llm.synthetic import explain_config, explaining_reply, write_synthetic_run

REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="Hi?")], max_tokens=8)


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "AUTOINTERP_LLM_TIMEOUT", "AUTOINTERP_LLM_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)


def calls_of(store: Store, run_id: str) -> list[dict]:  # type: ignore[type-arg]
    return store.query("SELECT * FROM llm_calls WHERE run_id = ? ORDER BY feature_id", [run_id])


def test_a_second_run_with_the_same_prompts_makes_no_calls_and_costs_nothing(tmp_path: Path) -> None:
    with LoopbackServer([], respond=explaining_reply()) as server:
        config = explain_config(
            tmp_path, server.url, "llm.prices.openai-compatible:*={input_per_mtok=1e4, output_per_mtok=2e4}"
        )
        store = Store(config.store.path)
        write_synthetic_run(store, "first", 4)
        write_synthetic_run(store, "second", 4)
        assert run_explain(config, store, "first", session_of(config, store, "first")).done == 4
        sent = len(server.received)
        assert run_explain(config, store, "second", session_of(config, store, "second")).done == 4
    assert sent == 4 and len(server.received) == 4  # the second run sent nothing
    first, second = calls_of(store, "first"), calls_of(store, "second")
    assert [c["response"] for c in first] == [c["response"] for c in second]
    assert all(c["cost"] == pytest.approx((11 * 1e4 + 5 * 2e4) / 1e6) for c in first)
    for call in second:
        assert json.loads(call["request"])["cached"] is True
        assert (call["cost"], call["error"]) == (0.0, None) and call["latency_s"] < 0.5  # a lookup, no call
    texts = lambda run: sorted(e["text"] for e in store.explanations(run))  # noqa: E731
    assert texts("first") == texts("second") == [f"the word word{i}" for i in range(4)]


def test_the_cache_file_serves_another_process_and_skips_sampled_requests(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    session = LLMSession.from_settings(LLMConfig(cache_path=path))
    session.cache = ResponseCache(path)  # not the process-wide instance: a fresh connection to the file
    with LoopbackServer([Reply(openai_completion("Hello."))]) as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}/v1#m")
        recorder = CallRecorder("r", session=session)
        recorder.call(backend, REQUEST, role="explain", prompt_hash="h", feature_id=None)
        later = LLMSession.from_settings(LLMConfig(cache_path=path))
        later.cache = ResponseCache(path)
        response, _ = CallRecorder("r2", session=later).call(
            backend, REQUEST, role="explain", prompt_hash="h", feature_id=None
        )
        assert response is not None and response.text == "Hello." and len(server.received) == 1
        sampled = REQUEST.model_copy(update={"temperature": 0.7})
        for _ in range(2):
            CallRecorder("r3", session=later).call(backend, sampled, role="explain", prompt_hash="h", feature_id=None)
        assert len(server.received) == 3
        other_model = OpenAICompatibleChatBackend(f"{server.url}/v1#other")
        assert cache_key(other_model, REQUEST) != cache_key(backend, REQUEST)
        assert cache_key(backend, REQUEST.model_copy(update={"max_tokens": 9})) != cache_key(backend, REQUEST)


def test_the_budget_stops_the_run_between_features_and_a_rerun_resumes(tmp_path: Path) -> None:
    with LoopbackServer([], respond=explaining_reply()) as server:
        config = explain_config(tmp_path, server.url, "llm.max_tokens=40", "llm.concurrency=1", "llm.cache=false")
        store = Store(config.store.path)
        write_synthetic_run(store, "run", 6)
        stopped = run_explain(config, store, "run", session_of(config, store, "run"))
        assert isinstance(stopped.stop_error, BudgetExceeded) and (stopped.done, stopped.not_reached) == (3, 3)
        message = str(stopped.stopped)
        assert "\n" not in message and "llm.max_tokens=40" in message and "48" in message
        calls = calls_of(store, "run")
        explained = store.explanations("run")
        assert len(server.received) == 3 and len(calls) == 3 and len(explained) == 3  # 16 tokens per call
        assert {e["llm_call_id"] for e in explained} == {c["id"] for c in calls}  # nothing half-written
        bigger = config.model_copy(update={"llm": LLMConfig(max_tokens=1000, cache=False)})
        assert bigger.resolved_run_id() == config.resolved_run_id()  # raising the budget resumes the run
        assert run_explain(bigger, store, "run", session_of(bigger, store, "run")).done == 3
        assert len(server.received) == 6 and len(store.explanations("run")) == 6


def test_a_cost_budget_needs_a_price_and_counts_what_the_run_spent(tmp_path: Path) -> None:
    prices = PriceTable({"openai-compatible:*": Price(1e5, 0.0)})
    assert prices.cost("openai-compatible", "x", 10, 99) == pytest.approx(1.0)
    assert PriceTable().cost("local", "smollm2-135m", 10**6, 10**6) == 0.0
    assert PriceTable().cost("openai", "gpt-4o-mini", 10**6, 10**6) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match=r"has no price; add it under llm.prices"):
        Budget(max_cost_usd=1.0).check("run", "openai", "unheard-of", PriceTable())
    with pytest.raises(BudgetExceeded, match=r"cost budget \(\$2.5000 of llm.max_cost_usd=2\)"):
        Budget(max_cost_usd=2.0, spent_usd=2.5).check("run", "openai-compatible", "x", prices)


def test_concurrency_is_bounded_and_the_content_does_not_depend_on_it(tmp_path: Path) -> None:
    texts, elapsed = {}, {}
    for concurrency in (1, 4):
        with LoopbackServer([], respond=explaining_reply(delay_s=0.15)) as server:
            config = explain_config(tmp_path, server.url, f"llm.concurrency={concurrency}", "llm.cache=false")
            store = Store(config.store.path)
            run_id = f"c{concurrency}"
            write_synthetic_run(store, run_id, 12)
            started = time.perf_counter()
            assert run_explain(config, store, run_id, session_of(config, store, run_id)).done == 12
            elapsed[concurrency] = time.perf_counter() - started
            assert server.max_in_flight == concurrency
            texts[concurrency] = sorted((e["feature_id"], e["text"]) for e in store.explanations(run_id))
            assert len(calls_of(store, run_id)) == 12
    assert elapsed[1] >= 12 * 0.15 and elapsed[4] < 0.6 * elapsed[1]
    assert texts[1] == texts[4]


def test_requests_per_minute_spaces_the_calls(tmp_path: Path) -> None:
    with LoopbackServer([], respond=explaining_reply()) as server:
        config = explain_config(tmp_path, server.url, "llm.requests_per_minute=600", "llm.cache=false")
        store = Store(config.store.path)
        write_synthetic_run(store, "rpm", 5)
        assert run_explain(config, store, "rpm", session_of(config, store, "rpm")).done == 5
    assert sum(server.gaps_s) >= 0.35  # 600/min: one start every 0.1 s (arrivals jitter on a busy machine)


def test_token_bucket_waits_for_the_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate_per_minute=30, clock=lambda: now[0], sleep=sleep)
    assert [bucket.acquire() for _ in range(3)] == [0.0, pytest.approx(2.0), pytest.approx(2.0)]


def test_malformed_answers_are_retried_then_recorded_as_failed_calls(tmp_path: Path) -> None:
    with LoopbackServer([Reply(openai_completion("..."))]) as server:
        config = explain_config(tmp_path, server.url, "explainer.retries=1")
        store = Store(config.store.path)
        write_synthetic_run(store, "bad", 1)
        result = run_explain(config, store, "bad", session_of(config, store, "bad"))
        assert result.done == 0 and len(result.failed) == 1 and "unparseable" in next(iter(result.failed.values()))
    calls = calls_of(store, "bad")
    assert len(calls) == 2 and all(c["error"].startswith("unparseable answer") for c in calls)
    assert "cannot be used" in json.loads(calls[1]["request"])["messages"][-1]["content"]


def test_costs_command_summarises_per_role_and_model(tmp_path: Path) -> None:
    with LoopbackServer([], respond=explaining_reply()) as server:
        config = explain_config(
            tmp_path, server.url, "llm.prices.openai-compatible:*={input_per_mtok=1e5, output_per_mtok=0}"
        )
        store = Store(config.store.path)
        write_synthetic_run(store, "a", 3)
        write_synthetic_run(store, "b", 3)
        run_explain(config, store, "a", session_of(config, store, "a"))
        run_explain(config, store, "b", session_of(config, store, "b"))
    [row] = store.llm_costs("b")
    assert (row["role"], row["calls"], row["cached"], row["errors"], row["cost"]) == ("explain", 3, 3, 0, 0.0)
    [row] = store.llm_costs("a")
    assert (row["calls"], row["cached"], row["input_tokens"], row["cost"]) == (3, 0, 33, pytest.approx(3.3))
    result = CliRunner().invoke(app, ["costs", "a", "--db", str(config.store.path)])
    assert result.exit_code == 0, result.output
    assert "explain" in result.output and "3.3000" in result.output and "openai-compatible" in result.output
    missing = CliRunner().invoke(app, ["costs", "nope", "--db", str(config.store.path)])
    assert missing.exit_code == 1 and "no run 'nope'" in missing.output
