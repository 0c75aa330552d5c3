"""The feature pool under load: 200 features explained and scored exactly once at any concurrency,
a budget that stops half-way and resumes to the same rows, and a run that never says `completed`
with work left.

The explainer and the simulator are a real HTTP server on loopback that knows the right answer:
feature `synthetic/mlp.0/<i>` fires on `word<i>`, the server explains it as "the word word<i>" and
simulates 10 on that word and 0 elsewhere, so every score must come out at 1.0.
"""

from __future__ import annotations

import json
import random
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from autointerp.config import RunConfig, load_config
from autointerp.explain.stage import run_explain
from autointerp.llm.accounting import BudgetExceeded
from autointerp.pipeline.pool import FeatureWork, run_pool
from autointerp.records import Explanation, Rows
from autointerp.score.stage import run_score
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.loopback_server import LoopbackServer, Received, Reply, VLLMResponder, openai_completion
from tests.llm.synthetic import write_synthetic_run

FEATURES = 200


def knowing_reply(max_delay_s: float = 0.0, seed: int = 0):  # type: ignore[no-untyped-def]
    """Returns a `respond` function that explains and simulates the synthetic features correctly."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def respond(request: Received) -> Reply:
        with lock:
            delay = rng.uniform(0.0, max_delay_s)
        messages = request.body["messages"]
        prompt = messages[-1]["content"]
        if "predict how strongly" in messages[0]["content"]:
            word = re.search(r"fires on the word (word\d+)", prompt)
            lines = prompt.split("one per line:\n", 1)[1].split("\nCopy every token", 1)[0].splitlines()
            answer = "\n".join(f"{t}\t{10 if word and t.strip() == word.group(1) else 0}" for t in lines)
            return Reply(openai_completion(answer, 40, 3 * len(lines)), delay_s=delay)
        found = re.search(r"<<\s*(word\d+)>>", prompt)
        return Reply(openai_completion(f"the word {found.group(1) if found else 'nothing'}.", 11, 5), delay_s=delay)

    return respond


def pool_config(tmp_path: Path, url: str, *overrides: str) -> RunConfig:
    model = f"openai-compatible:{url}/v1#knows"
    return load_config(
        None,
        [
            f"store.path='{tmp_path / 'pool.duckdb'}'",
            f"explainer.model='{model}'",
            f"score.simulator.model='{model}'",
            "score.methods=['simulation']",
            "score.simulation='generate'",
            "llm.cache=false",
            "score.distractor=false",
            "explainer.top_tokens_candidate=false",  # one explain call per feature, counted
            *overrides,
        ],
    )


def final_rows(store: Store, run_id: str) -> tuple[list[tuple[str, str]], list[tuple[str, str, float | None]]]:
    """Returns (feature, explanation text) and (feature, metric, value) of a run, sorted."""
    explained = sorted((e["feature_id"], e["text"]) for e in store.explanations(run_id))
    scores = store.query(
        "SELECT e.feature_id, s.metric, s.value FROM scores s JOIN explanations e ON e.id = s.explanation_id "
        "WHERE s.run_id = ? ORDER BY 1, 2",
        [run_id],
    )
    return explained, [(s["feature_id"], s["metric"], s["value"]) for s in scores]


def run_stages(config: RunConfig, store: Store, run_id: str) -> tuple[Any, Any]:
    session = session_of(config, store, run_id)
    return run_explain(config, store, run_id, session), run_score(config, store, run_id, session)


@pytest.mark.parametrize(("concurrency", "max_delay_s"), [(1, 0.0), (4, 0.05), (16, 0.05)])
def test_every_feature_is_explained_and_scored_exactly_once(
    tmp_path: Path, concurrency: int, max_delay_s: float
) -> None:
    with LoopbackServer([], respond=knowing_reply(max_delay_s)) as server:
        config = pool_config(tmp_path, server.url, f"llm.concurrency={concurrency}")
        store = Store(config.store.path)
        write_synthetic_run(store, "r", FEATURES, exemplars_per_feature=2, score_windows=2)
        explained, scored = run_stages(config, store, "r")
        assert server.max_in_flight <= concurrency
        if concurrency > 1:
            assert server.max_in_flight > 1
    assert (explained.done, explained.complete, scored.done, scored.complete) == (FEATURES, True, FEATURES, True)
    explanations, scores = final_rows(store, "r")
    assert len({f for f, _ in explanations}) == len(explanations) == FEATURES
    assert all(text == f"the word word{f.rsplit('/', 1)[1]}" for f, text in explanations)
    per_metric = {(f, m) for f, m, _ in scores}
    assert len(per_metric) == len(scores) == FEATURES * 5  # 5 simulation metrics, each once
    main = [v for _, m, v in scores if m == "correlation_top_and_random"]
    assert len(main) == FEATURES and all(v == pytest.approx(1.0) for v in main)
    calls = store.query("SELECT role, count(*) AS n FROM llm_calls GROUP BY role ORDER BY role")
    assert [(c["role"], c["n"]) for c in calls] == [("explain", FEATURES), ("simulate", FEATURES * 2)]


def test_a_budget_stops_half_way_keeps_whole_features_and_resumes_to_the_same_rows(tmp_path: Path) -> None:
    with LoopbackServer([], respond=knowing_reply(0.01)) as server:
        whole = pool_config(tmp_path / "whole", server.url, "llm.concurrency=4")
        reference = Store(whole.store.path)
        write_synthetic_run(reference, "r", 60, exemplars_per_feature=2, score_windows=2)
        run_stages(whole, reference, "r")

        budget = pool_config(tmp_path / "budget", server.url, "llm.concurrency=4", "llm.max_tokens=480")
        store = Store(budget.store.path)
        write_synthetic_run(store, "r", 60, exemplars_per_feature=2, score_windows=2)
        session = session_of(budget, store, "r")
        explained = run_explain(budget, store, "r", session)
        assert isinstance(explained.stop_error, BudgetExceeded) and not explained.complete
        assert 0 < explained.done < 60 and explained.done + explained.not_reached == 60
        calls = store.query("SELECT feature_id, count(*) AS n FROM llm_calls GROUP BY feature_id")
        explanations = store.explanations("r")
        assert {c["feature_id"] for c in calls} == {e["feature_id"] for e in explanations}  # whole features
        assert all(c["n"] == 1 for c in calls)

        resumed = budget.model_copy(update={"llm": budget.llm.model_copy(update={"max_tokens": None})})
        again, scored = run_stages(resumed, store, "r")
        assert again.done == 60 - explained.done and scored.complete
    assert final_rows(store, "r") == final_rows(reference, "r")
    assert store.query("SELECT count(*) AS n FROM llm_calls")[0]["n"] == 60 + 60 * 2


def test_the_pool_never_ends_while_features_remain_even_when_every_answer_is_instant() -> None:
    """The old explain loop lost features when a whole batch finished inside one wait()."""
    written: list[int] = []

    def write(rows: Rows) -> None:
        written.append(len(rows))

    items = list(range(500))
    result = run_pool("explain", items, str, lambda i: FeatureWork(str(i)), write, concurrency=16)
    assert (result.total, result.done, result.complete) == (500, 500, True)


def test_one_feature_failing_does_not_stop_the_others_and_is_reported() -> None:
    def work(i: int) -> FeatureWork:
        if i == 7:
            raise RuntimeError("boom")
        return FeatureWork.failed(str(i), "no answer") if i == 3 else FeatureWork(str(i))

    result = run_pool("explain", list(range(20)), str, work, lambda rows: None, concurrency=4)
    assert result.done == 18 and set(result.failed) == {"3", "7"} and not result.complete
    assert "RuntimeError: boom" in result.failed["7"]
    assert result.summary().startswith("explain: 18/20 done, 2 failed")


def _vllm_knowing() -> VLLMResponder:
    """A vLLM-shaped server that knows the synthetic features: 10 on `word<i>` after "fires on the word
    word<i>", and P(yes) high exactly when a judged text holds the explanation's word."""

    def value(prompt: str, line: str) -> int:
        word = re.search(r"fires on the word (word\d+)", prompt)
        return 10 if word and line.strip() == word.group(1) else 0

    def p_yes(messages: list[dict[str, Any]]) -> float:
        prompt = str(messages[-1]["content"]) if messages[-1]["role"] == "user" else str(messages[-2]["content"])
        word = re.search(r"fires on the word (word\d+)", prompt)
        text = re.search(r"Text: (.*)", prompt)
        return 0.95 if word and text and re.search(rf"\b{word.group(1)}\b", text.group(1)) else 0.05

    return VLLMResponder(value=value, p_yes=p_yes, delay_s=0.02)


def test_all_at_once_simulation_and_probability_judges_over_http_score_the_truth_at_one(tmp_path: Path) -> None:
    with LoopbackServer([], respond=_vllm_knowing()) as server:
        config = pool_config(
            tmp_path,
            server.url,
            "llm.concurrency=8",
            f"score.simulator.model='openai-compatible:{server.url}/v1#knows?logprobs=prompt'",
            f"score.judge.model='openai-compatible:{server.url}/v1#knows?logprobs=answer'",
            "score.methods=['simulation', 'detection']",
            "score.simulation='all-at-once'",
        )
        store = Store(config.store.path)
        write_synthetic_run(store, "r", 12, exemplars_per_feature=2, score_windows=2)
        session = session_of(config, store, "r")
        explanations = store.explanations("r")
        assert explanations == []
        with LoopbackServer([], respond=knowing_reply()) as explainer:
            explaining = config.model_copy(
                update={
                    "explainer": config.explainer.model_copy(
                        update={"model": f"openai-compatible:{explainer.url}/v1#e"}
                    )
                }
            )
            assert run_explain(explaining, store, "r", session).done == 12
        scored = run_score(config, store, "r", session)
        assert scored.done == 12 and server.max_in_flight > 1
    scores = store.query("SELECT scorer, value, details FROM scores WHERE metric = 'correlation_top_and_random'")
    assert {s["scorer"] for s in scores} == {"simulation-all-at-once"}
    assert all(s["value"] == pytest.approx(1.0, abs=0.01) for s in scores)
    mass = [json.loads(s["details"])["digit_probability_mass"] for s in scores]
    assert all(m > 0.9 for m in mass)
    calls = store.query("SELECT count(*) AS n, sum(output_tokens) AS out FROM llm_calls WHERE role = 'simulate'")
    # one request per window and one per window under "nothing in particular" (the prior); nothing generated
    assert calls[0]["n"] == 12 * 2 * 2 and calls[0]["out"] == 0
    detection = store.query("SELECT value FROM scores WHERE metric = 'detection_auroc'")
    assert len(detection) == 12 and all(d["value"] == pytest.approx(1.0) for d in detection)


def test_a_server_without_declared_log_probabilities_stops_the_stage_with_one_line(tmp_path: Path) -> None:
    with LoopbackServer([], respond=VLLMResponder(logprobs=False)) as server:
        config = pool_config(
            tmp_path,
            server.url,
            f"score.simulator.model='openai-compatible:{server.url}/v1#m?logprobs=prompt'",
            "score.simulation='all-at-once'",
        )
        store = Store(config.store.path)
        write_synthetic_run(store, "r", 6, exemplars_per_feature=2, score_windows=2)
        store.write_results(
            Rows(
                Explanation(
                    run_id="r",
                    feature_id=f"synthetic/mlp.0/{i}",
                    text=f"the word word{i}",
                    explainer="x",
                    prompt_hash="h",
                    llm_call_id=None,
                )
                for i in range(6)
            )
        )
        result = run_score(config, store, "r", session_of(config, store, "r"))
    assert result.done == 0 and result.not_reached == 6 and result.stopped is not None
    assert "\n" not in result.stopped and 'score.simulation = "generate"' in result.stopped
    assert store.query("SELECT count(*) AS n FROM scores")[0]["n"] == 0
