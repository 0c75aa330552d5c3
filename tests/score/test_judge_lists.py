"""Batched judging (`score.judge_windows_per_prompt`): several windows per prompt, a list answer.

The judge here knows the right answer: it reads each numbered text of the prompt and says 1 where the
text holds a digit. So batched and one-per-prompt judging must agree on every window, with fewer calls;
a list that does not parse fails its call and every window in it, and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autointerp.config import LLMConfig, load_config
from autointerp.llm import CallRecorder, ChatBackend, ChatRequest, ChatResponse, LLMSession
from autointerp.records import Explanation, Rows
from autointerp.score.judge import JudgementListError, JudgeOptions, parse_judgement_list
from autointerp.score.scorers import score_candidates
from autointerp.score.stage import run_score
from autointerp.score.windows import HeldOutWindow
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion
from tests.llm.synthetic import write_synthetic_run

ONE_AT_A_TIME = LLMSession.from_settings(LLMConfig(cache=False, concurrency=1))
TEXT = re.compile(r"^Text \d+(?: with marked tokens)?: (.*)$", re.MULTILINE)


def knows(text: str) -> bool:
    """The truth for a detection text (a digit anywhere) or a fuzzing text (only digits marked)."""
    marked = re.findall(r"<<(.*?)>>", text)
    return all(m.strip().isdigit() for m in marked) if marked else bool(re.search(r"\d", text))


class KnowingJudge(ChatBackend):
    """Answers one-window prompts with yes / no and list prompts with [1, 0, ...]; `broken` calls answer
    a list one item short."""

    backend = "knowing"

    def __init__(self, broken: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__("judge")
        self.broken = broken
        self.calls = 0

    def generate(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        prompt = request.messages[-1].content
        texts = TEXT.findall(prompt)
        if texts:
            answers = ["1" if knows(t) else "0" for t in texts]
            if self.calls in self.broken:
                answers = answers[:-1]
            return ChatResponse(text=", ".join(answers) + "]", input_tokens=10, output_tokens=2 * len(texts))
        text = prompt.split("Text: ", 1)[1] if "Text: " in prompt else prompt.split("marked tokens: ", 1)[1]
        return ChatResponse(text="yes" if knows(text.split("\n")[0]) else "no", input_tokens=10, output_tokens=1)


WINDOWS = [
    HeldOutWindow(["a", " 1", " b"], [0, 10, 0], "top"),
    HeldOutWindow(["c", " d", " 22"], [0, 0, 10], "top"),
    HeldOutWindow(["e", " f", " g"], [0, 0, 0], "random"),
    HeldOutWindow(["3", " h", " i"], [10, 0, 0], "quantile"),
    HeldOutWindow(["j", " k", " l"], [0, 0, 0], "random"),
    HeldOutWindow(["m", " n", " o"], [0, 0, 0], "random"),
    HeldOutWindow(["p", " 4", " q"], [0, 10, 0], "top"),
]


@pytest.mark.parametrize(
    ("answer", "count", "expected"),
    [
        ("Answer: [1, 0, 1]", 3, [True, False, True]),
        ("[yes, No, 'true']", 3, [True, False, True]),
        ("Answer: [0 1", 2, [False, True]),
        ("Answer: [[1, 0, 0]", 3, [True, False, False]),
        ("1,0\nsome words after", 2, [True, False]),
    ],
)
def test_parse_judgement_list(answer: str, count: int, expected: list[bool]) -> None:
    assert parse_judgement_list(answer, count) == expected


@pytest.mark.parametrize(
    ("answer", "match"), [("[1, 0]", "2 items for 3"), ("[1, maybe, 0]", "'maybe'"), ("", "0 items")]
)
def test_parse_judgement_list_rejects(answer: str, match: str) -> None:
    with pytest.raises(JudgementListError, match=match):
        parse_judgement_list(answer, 3)


@pytest.mark.parametrize("method", ["detection", "fuzzing"])
def test_batched_judging_agrees_with_one_window_per_prompt_in_fewer_calls(method: str) -> None:
    single, batched = KnowingJudge(), KnowingJudge()
    one = score_candidates(
        method, ["digits"], WINDOWS, backend=single, recorder=CallRecorder("t", ONE_AT_A_TIME), feature_id="f"
    )[0]
    recorder = CallRecorder("t", ONE_AT_A_TIME)
    many = score_candidates(
        method, ["digits"], WINDOWS, backend=batched, recorder=recorder, feature_id="f", options=JudgeOptions(3)
    )[0]
    key = "windows" if method == "detection" else "items"
    assert [w["p_yes"] for w in many.details[key]] == [w["p_yes"] for w in one.details[key]]
    assert many.values[f"{method}_balanced_accuracy"] == one.values[f"{method}_balanced_accuracy"] == 1.0
    assert many.details["windows_per_prompt"] == 3 and many.values[f"{method}_auroc"] is None
    assert "several windows per prompt" in many.undefined[f"{method}_auroc"]
    items = len(one.details[key])
    assert single.calls == items and batched.calls == -(-items // 3) == len(recorder.rows)
    assert all(r.role == ("detect" if method == "detection" else "fuzz") and r.error is None for r in recorder.rows)


def test_a_list_of_the_wrong_length_fails_its_windows_only() -> None:
    judge = KnowingJudge(broken={2})
    recorder = CallRecorder("t", ONE_AT_A_TIME)
    outcome = score_candidates(
        "detection", ["digits"], WINDOWS, backend=judge, recorder=recorder, feature_id="f", options=JudgeOptions(3)
    )[0]
    assert [w["p_yes"] is None for w in outcome.details["windows"]] == [False] * 3 + [True] * 3 + [False]
    assert outcome.details["failed"] == 3 and outcome.values["detection_balanced_accuracy"] == 1.0
    assert [r.error is not None for r in recorder.rows] == [False, True, False]
    assert "2 items for 3 texts" in str(recorder.rows[1].error)


def test_batched_judging_over_http_in_the_score_stage(tmp_path: Path) -> None:
    """The score stage with `score.judge_windows_per_prompt = 4` against a knowing OpenAI-compatible server."""

    def respond(request: Received) -> Reply:
        prompt = request.body["messages"][-1]["content"]
        word = re.search(r"fires on the word (word\d+)", prompt)
        texts = TEXT.findall(prompt)
        answer = ", ".join("1" if word and word.group(1) in t.split() else "0" for t in texts) + "]"
        return Reply(openai_completion(answer, 120, 2 * len(texts)))

    with LoopbackServer([], respond=respond) as server:
        config = load_config(
            None,
            [
                f"store.path='{tmp_path / 'judge.duckdb'}'",
                f"score.judge.model='openai-compatible:{server.url}/v1#knows?logprobs=none'",
                "score.methods=['detection']",
                "score.judge_windows_per_prompt=4",
                "score.distractor=false",
                "llm.cache=false",
                "llm.concurrency=4",
            ],
        )
        store = Store(config.store.path)
        write_synthetic_run(store, "r", 6, exemplars_per_feature=1, score_windows=8)
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
    assert result.done == 6 and result.complete
    values = store.query("SELECT metric, value FROM scores WHERE metric = 'detection_balanced_accuracy'")
    assert [v["value"] for v in values] == [1.0] * 6
    calls = store.query("SELECT count(*) AS n, count(error) AS errors FROM llm_calls WHERE role = 'detect'")[0]
    assert (calls["n"], calls["errors"]) == (6 * 2, 0)  # 8 windows, 4 per prompt
