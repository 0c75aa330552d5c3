"""The explain stage on a backend that generates in padded batches: the first attempt of a chunk of
features is one `generate_many` call, only unparseable answers retry one at a time, and the pool's
guarantees hold (every feature once, written whole, a budget stops cleanly and resumes).

A scripted batched backend knows the right answer (feature `synthetic/mlp.0/<i>` fires on `word<i>`);
the last test runs the real SmolLM2-135M and compares with one-at-a-time generation.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from autointerp.config import RunConfig, load_config
from autointerp.explain.stage import run_explain
from autointerp.llm import ChatBackend, ChatRequest, ChatResponse, get_backend, register_backend
from autointerp.llm.accounting import BudgetExceeded
from autointerp.llm.base import BackendCapabilities
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.synthetic import write_synthetic_run


class BatchedKnower(ChatBackend):
    """Explains synthetic features correctly, in batches; features listed in `mumbles` first answer with
    nothing usable (their retry, one at a time, is right)."""

    backend = "batched-knower"
    max_concurrency: ClassVar[int | None] = 1
    generation_batch_size: ClassVar[int] = 4
    mumbles: ClassVar[set[str]] = {"word3", "word9"}

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.batches: list[int] = []
        self.singles = 0
        self.lock = threading.Lock()

    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(batched_generation=True)

    def answer(self, request: ChatRequest, first: bool) -> ChatResponse:
        word = re.search(r"<<\s*(word\d+)>>", request.messages[1].content)
        name = word.group(1) if word else "nothing"
        text = "..." if first and name in self.mumbles else f" the word {name}."
        return ChatResponse(text=text, input_tokens=100, output_tokens=5)

    def generate(self, request: ChatRequest) -> ChatResponse:
        with self.lock:
            self.singles += 1
        return self.answer(request, first=len(request.messages) == 2)

    def generate_many(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        with self.lock:
            self.batches.append(len(requests))
        return [self.answer(r, first=True) for r in requests]


register_backend("batched-knower", BatchedKnower)


def config_for(tmp_path: Path, model: str, *overrides: str) -> RunConfig:
    return load_config(
        None,
        [
            f"store.path='{tmp_path / 'b.duckdb'}'",
            f"explainer.model='{model}'",
            "llm.cache=false",
            "explainer.top_tokens_candidate=false",  # the explainer's calls and budget alone
            *overrides,
        ],
    )


def explanations(store: Store, run_id: str) -> list[tuple[str, str]]:
    return sorted((e["feature_id"], e["text"]) for e in store.explanations(run_id))


def test_first_attempts_go_in_batches_and_only_unparseable_answers_retry(tmp_path: Path) -> None:
    config = config_for(tmp_path, "batched-knower:a", "explainer.retries=1")
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 20)
    backend = get_backend(config.explainer.model)
    assert isinstance(backend, BatchedKnower)
    result = run_explain(config, store, "r", session_of(config, store, "r"))
    assert (result.done, result.complete) == (20, True)
    assert backend.batches == [8, 8, 4] and backend.singles == 2  # chunks of 2 x 4; word3 and word9 retried
    assert explanations(store, "r") == sorted((f"synthetic/mlp.0/{i}", f"the word word{i}") for i in range(20))
    calls = store.query(
        "SELECT feature_id, count(*) AS n, count(error) AS errors, max(latency_s) > 0 AS timed FROM llm_calls "
        "GROUP BY feature_id ORDER BY feature_id"
    )
    retried = {"synthetic/mlp.0/3", "synthetic/mlp.0/9"}
    assert [(c["n"], c["errors"]) for c in calls] == [(2, 1) if c["feature_id"] in retried else (1, 0) for c in calls]
    batched = store.query("SELECT request FROM llm_calls WHERE feature_id = 'synthetic/mlp.0/0'")[0]["request"]
    assert '"batched": 8' in str(batched)


def test_a_budget_stops_the_batched_stage_between_chunks_and_a_rerun_finishes(tmp_path: Path) -> None:
    config = config_for(tmp_path, "batched-knower:b", "explainer.retries=1", "llm.max_tokens=1500")
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 20)
    result = run_explain(config, store, "r", session_of(config, store, "r"))
    assert isinstance(result.stop_error, BudgetExceeded) and not result.complete
    # chunk 1: 8 x 105 tokens + word3's retry (945); chunk 2 passes the check, spends 840 (1785), and
    # word9's retry is refused: its 7 parsed features are kept, word9 and chunk 3 are not reached
    assert result.done == 15 and result.not_reached == 5
    written = {e["feature_id"] for e in store.explanations("r")}
    called = {c["feature_id"] for c in store.query("SELECT DISTINCT feature_id FROM llm_calls")}
    assert written == called and len(written) == 15 and "synthetic/mlp.0/9" not in written  # whole features
    resumed = config.model_copy(update={"llm": config.llm.model_copy(update={"max_tokens": None})})
    again = run_explain(resumed, store, "r", session_of(resumed, store, "r"))
    assert (again.done, again.complete) == (5, True)
    assert explanations(store, "r") == sorted((f"synthetic/mlp.0/{i}", f"the word word{i}") for i in range(20))


@pytest.mark.slow
def test_batched_explain_on_smollm2_gives_the_explanations_of_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autointerp.llm.local import LocalChatBackend

    spec = "local:smollm2-135m"
    backend = get_backend(spec)
    assert isinstance(backend, LocalChatBackend)
    many: list[int] = []
    generate_many = backend.generate_many

    def counted(requests: Sequence[ChatRequest]) -> Any:
        many.append(len(requests))
        return generate_many(requests)

    monkeypatch.setattr(backend, "generate_many", counted)
    texts = {}
    for mode in ("batched", "single"):
        if mode == "single":
            monkeypatch.setattr(backend, "capabilities", lambda: BackendCapabilities(prompt_logprobs=True))
        config = config_for(tmp_path / mode, spec, "explainer.max_tokens=16", "explainer.retries=0")
        store = Store(config.store.path)
        write_synthetic_run(store, "r", 4)
        result = run_explain(config, store, "r", session_of(config, store, "r"))
        texts[mode] = explanations(store, "r")
        assert result.total == 4 and result.done + len(result.failed) == 4
    assert many == [4]  # one batch for the batched run, none for the other
    assert texts["batched"] == texts["single"] and len(texts["batched"]) >= 3


def test_a_second_run_takes_batched_answers_from_the_cache(tmp_path: Path) -> None:
    cache = f"llm.cache_path='{tmp_path / 'cache.sqlite'}'"
    config = config_for(tmp_path, "batched-knower:c", "llm.cache=true", cache, "explainer.retries=1")
    store = Store(config.store.path)
    backend = get_backend(config.explainer.model)
    assert isinstance(backend, BatchedKnower)
    for run_id in ("first", "second"):
        write_synthetic_run(store, run_id, 6)
        assert run_explain(config, store, run_id, session_of(config, store, run_id)).done == 6
    assert backend.batches == [6] and backend.singles == 1  # the second run made no call
    cached = store.query("SELECT count(*) AS n FROM llm_calls WHERE run_id = 'second' AND request LIKE '%cached%'")
    assert cached[0]["n"] == 6 + 1
    assert explanations(store, "second") == explanations(store, "first")
