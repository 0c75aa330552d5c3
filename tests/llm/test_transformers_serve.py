"""The openai-compatible backend against a real `transformers serve` process with the default model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from autointerp.config import load_config
from autointerp.explain.stage import run_explain
from autointerp.llm.base import BackendCapabilities, ChatMessage, ChatRequest
from autointerp.llm.logprobs import LogprobsUnavailable
from autointerp.llm.openai_backend import OpenAICompatibleChatBackend
from autointerp.llm.serve import TransformersServer, transformers_command
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.synthetic import write_synthetic_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_model() -> Iterator[TransformersServer]:
    """`transformers serve` with the cached SmolLM2-135M-Instruct folder on a loopback port."""
    if transformers_command() is None:
        pytest.skip("the `transformers` command is missing: pip install 'transformers[serving]'")
    from autointerp.subject.model import prepare_model_folder

    folder, _ = prepare_model_folder("smollm2-135m")
    with TransformersServer(folder) as server:
        yield server


def test_a_run_explains_features_through_transformers_serve(served_model: TransformersServer, tmp_path: Path) -> None:
    assert served_model.served_models() in ([], [served_model.model_id])  # pinned to the folder, named by it
    config = load_config(
        None,
        [
            f"store.path='{tmp_path / 'runs.duckdb'}'",
            f"explainer.model='{served_model.spec}'",
            "explainer.max_tokens=12",
            "explainer.retries=0",
            "explainer.top_tokens_candidate=false",  # the served model's answers, as written
            f"llm.cache_path='{tmp_path / 'cache.sqlite'}'",
        ],
    )
    store = Store(config.store.path)
    write_synthetic_run(store, "served", 2)
    written = run_explain(config, store, "served", session_of(config, store, "served")).done
    calls = store.query("SELECT * FROM llm_calls WHERE run_id = 'served'")
    assert len(calls) == 2
    for call in calls:  # the server answered every call; a tiny model may still answer unparseably
        assert call["backend"] == "openai-compatible" and call["model"] == served_model.model_id
        assert call["input_tokens"] > 20 and 0 < call["output_tokens"] <= 12 and call["response"]
        assert call["error"] is None or call["error"].startswith("unparseable answer")
        assert call["cost"] == 0.0 and call["latency_s"] > 0
    assert written == len(store.explanations("served")) >= 1
    assert {e["explainer"] for e in store.explanations("served")} == {f"openai-compatible:{served_model.model_id}"}
    write_synthetic_run(store, "again", 2)
    assert (
        run_explain(config, store, "again", session_of(config, store, "again")).done == written
    )  # answered from the cache, identically
    again = store.query("SELECT * FROM llm_calls WHERE run_id = 'again'")
    assert all('"cached": true' in call["request"] and call["cost"] == 0 for call in again)


def test_a_server_without_logprobs_is_found_out(served_model: TransformersServer) -> None:
    """`transformers serve` returns no log-probabilities: the auto probe says so, a declaration fails in one line."""
    model = served_model.spec.partition(":")[2]
    assert OpenAICompatibleChatBackend(model).capabilities() == BackendCapabilities()
    declared = OpenAICompatibleChatBackend(f"{model}?logprobs=prompt,answer")
    request = ChatRequest(messages=[ChatMessage(role="user", content="Is a cat an animal?")])
    with pytest.raises(LogprobsUnavailable, match=r'score\.simulation = "generate"'):
        declared.read_values([(request, ["a", " cat"])])
    with pytest.raises(LogprobsUnavailable, match=r"\?logprobs="):
        declared.answer_probabilities([request], {"yes": ["yes"], "no": ["no"]})
