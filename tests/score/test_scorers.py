"""Every scorer on hand-made windows of a planted feature, with the real local model as the scorer."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import pytest

from autointerp.config import LLMConfig
from autointerp.llm import CallRecorder, ChatBackend, ChatRequest, ChatResponse, LLMSession
from autointerp.llm.base import BackendCapabilities, ValueReadout
from autointerp.llm.local import LocalChatBackend
from autointerp.score.confidence import simulation_confidence
from autointerp.score.distractors import DistractorPool, choose_distractors
from autointerp.score.fuzzing import fuzzing_items, random_marks
from autointerp.score.judge import parse_yes_no
from autointerp.score.scorers import primary_value, score_candidates
from autointerp.score.simulation import (
    NULL_DESCRIPTION,
    SimulationOptions,
    SimulationParseError,
    parse_simulation_lines,
)
from autointerp.score.windows import HeldOutWindow
from autointerp.subject import SubjectModel
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES

ONE_AT_A_TIME = LLMSession.from_settings(LLMConfig(cache=False, concurrency=1))
"""Scripted backends answer in order: their calls must not run in parallel."""
DIGITS = next(f for f in BUILTIN_PLANTED_FEATURES if f.name == "digits")
TRUTH, DISTRACTOR = DIGITS.description, "names of animals such as cats and dogs"
TEXTS = [
    ("There are 3 apples and 7 pears on 2 tables.", "top"),
    ("Call 5 5 5 or write 9 letters today.", "top"),
    ("The cat sat on the mat and purred.", "random"),
    ("She walked home in the rain today.", "random"),
]


@pytest.fixture(scope="module")
def local(subject: SubjectModel) -> LocalChatBackend:
    backend = LocalChatBackend.__new__(LocalChatBackend)  # the session's model, not a second copy
    ChatBackend.__init__(backend, "smollm2-135m")
    backend.subject = subject
    backend._lock = threading.Lock()
    return backend


def recorder() -> CallRecorder:
    return CallRecorder("t", ONE_AT_A_TIME)


def planted_windows(subject: SubjectModel, texts: list[tuple[str, str]]) -> list[HeldOutWindow]:
    windows = []
    for text, kind in texts:
        tokens = subject.decode_tokens(subject.tokenizer(text, add_special_tokens=False)["input_ids"])
        levels = [10 * int(a) for a in DIGITS.activations(tokens)]
        windows.append(HeldOutWindow(tokens, levels, kind))
    return windows


def test_simulation_all_at_once_ranks_truth_above_distractor(local: LocalChatBackend, subject: SubjectModel) -> None:
    recorder = CallRecorder("t", ONE_AT_A_TIME)
    truth, distractor = score_candidates(
        "simulation", [TRUTH, DISTRACTOR], planted_windows(subject, TEXTS), backend=local, recorder=recorder,
        feature_id="digits", options=SimulationOptions(batch_size=3),
    )  # fmt: skip
    assert truth.scorer == "simulation-all-at-once"
    assert truth.values["correlation_all"] is not None and distractor.values["correlation_all"] is not None
    assert truth.values["correlation_all"] > distractor.values["correlation_all"]
    assert truth.values["correlation_top"] is not None
    assert truth.values["correlation_random"] is None  # random windows hold no digit: flat, so flagged
    assert "constant" in truth.undefined["correlation_random"]
    assert len(recorder.rows) == 3 and all(r.input_tokens > 0 for r in recorder.rows)  # and the prior's
    assert truth.details["prior"] == {"description": "nothing in particular", "subtracted": True}


def test_batching_does_not_change_simulation(local: LocalChatBackend, subject: SubjectModel) -> None:
    windows = planted_windows(subject, [("Pay 3 now.", "top"), ("The cat sat on the mat.", "random")])
    one = score_candidates("simulation", [TRUTH], windows, backend=local, recorder=CallRecorder("t", ONE_AT_A_TIME),
                           feature_id="d", options=SimulationOptions(batch_size=1))  # fmt: skip
    many = score_candidates("simulation", [TRUTH], windows, backend=local, recorder=CallRecorder("t", ONE_AT_A_TIME),
                            feature_id="d", options=SimulationOptions(batch_size=8))  # fmt: skip
    for a, b in zip(one[0].details["windows"], many[0].details["windows"], strict=True):
        assert a["predicted"] == pytest.approx(b["predicted"], abs=2e-3)


def test_detection_reports_balanced_accuracy_and_auroc(local: LocalChatBackend, subject: SubjectModel) -> None:
    truth, distractor = score_candidates(
        "detection", [TRUTH, DISTRACTOR], planted_windows(subject, TEXTS), backend=local,
        recorder=CallRecorder("t", ONE_AT_A_TIME), feature_id="digits",
    )  # fmt: skip
    for outcome in (truth, distractor):
        assert 0.0 <= (outcome.values["detection_balanced_accuracy"] or -1) <= 1.0
        assert outcome.values["detection_auroc"] is not None
        assert all(0.0 <= w["p_yes"] <= 1.0 for w in outcome.details["windows"])
    assert primary_value("detection", truth) == truth.values["detection_auroc"]
    truth_auroc, distractor_auroc = truth.values["detection_auroc"], distractor.values["detection_auroc"]
    assert truth_auroc is not None and distractor_auroc is not None and truth_auroc >= distractor_auroc


def test_fuzzing_marks_correct_and_random_tokens(local: LocalChatBackend, subject: SubjectModel) -> None:
    windows = planted_windows(subject, TEXTS)
    items = fuzzing_items(windows)
    assert [correct for _, correct, _ in items] == [True, False, True, False]  # two activating windows
    assert "<<3>>" in items[0][0] and "<<3>>" not in items[1][0]
    assert random_marks(windows[0]) == random_marks(windows[0])  # seeded by the text
    outcome = score_candidates("fuzzing", [TRUTH], windows, backend=local, recorder=CallRecorder("t", ONE_AT_A_TIME),
                               feature_id="digits")[0]  # fmt: skip
    assert outcome.values["fuzzing_auroc"] is not None and len(outcome.details["items"]) == 4


def test_feature_that_never_fires_is_flagged_by_every_scorer(local: LocalChatBackend, subject: SubjectModel) -> None:
    silent = [HeldOutWindow(w.tokens, [0] * len(w.tokens), w.kind) for w in planted_windows(subject, TEXTS)]
    for method in ("simulation", "detection", "fuzzing", "embedding"):
        outcome = score_candidates(
            method, [TRUTH], silent, backend=local, recorder=CallRecorder("t", ONE_AT_A_TIME), feature_id="f"
        )[0]
        assert all(v is None for v in outcome.values.values()), method
        assert all("never fires" in outcome.undefined[m] for m in outcome.values), (method, outcome.undefined)


def test_dense_feature_has_no_detection_score(local: LocalChatBackend, subject: SubjectModel) -> None:
    dense = [HeldOutWindow(w.tokens, [5] * len(w.tokens), w.kind) for w in planted_windows(subject, TEXTS)]
    outcome = score_candidates(
        "detection", [TRUTH], dense, backend=local, recorder=CallRecorder("t", ONE_AT_A_TIME), feature_id="f"
    )
    assert outcome[0].values["detection_auroc"] is None
    assert "no non-activating window" in outcome[0].undefined["detection_auroc"]
    fuzz = score_candidates(
        "fuzzing", [TRUTH], dense, backend=local, recorder=CallRecorder("t", ONE_AT_A_TIME), feature_id="f"
    )
    assert "no wrong marking" in fuzz[0].undefined["fuzzing_auroc"]


class ScriptedBackend(ChatBackend):
    """A chat backend without token probabilities that answers from a script (the plugin interface)."""

    backend = "scripted"

    def __init__(self, answers: list[str]) -> None:
        super().__init__("script")
        self.answers = answers

    def generate(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(text=self.answers.pop(0), input_tokens=1, output_tokens=1)


def test_generated_simulation_parses_lines_and_records_failures() -> None:
    tokens = ["The", " year", " 19", "84"]
    windows = [HeldOutWindow(tokens, [0, 0, 10, 10], "top"), HeldOutWindow(tokens, [0, 0, 10, 0], "top")]
    backend = ScriptedBackend(["The\t0\n year\t0\n 19\t9\n84\t9\n", "I cannot do that."])
    recorder = CallRecorder("t", ONE_AT_A_TIME)
    outcome = score_candidates("simulation", [TRUTH], windows, backend=backend, recorder=recorder, feature_id="f")[0]
    assert outcome.scorer == "simulation-generated"
    assert outcome.details["windows"][0]["predicted"] == [0, 0, 9, 9]
    assert outcome.details["windows"][1]["predicted"] is None and outcome.details["failed"] == 1
    assert outcome.values["correlation_top"] == pytest.approx(1.0)  # only the parsed window counts
    assert [r.error is not None for r in recorder.rows] == [False, True]


def test_unread_first_tokens_count_in_no_correlation_nor_its_confidence() -> None:
    """A window's first tokens, which the source does not read (`features.skip_first_tokens`), hold a 0 that
    was never measured: a simulator that predicts them high is not wrong there."""
    answers = ["7\t9\n cat\t0\n 19\t9\n84\t9\n", "7\t9\n cat\t0\n 19\t0\n84\t9\n", "7\t9\n dog\t0\n 19\t0\n84\t0\n"]
    levels = [[0, 0, 10, 10], [0, 0, 0, 10], [0, 0, 0, 0]]
    scored = {}
    for unread in (0, 1):
        windows = [
            HeldOutWindow(["7", " cat", " 19", "84"], levels[0], "top", 0, unread=unread),
            HeldOutWindow(["7", " cat", " 19", "84"], levels[1], "top", 1, unread=unread),
            HeldOutWindow(["7", " dog", " 19", "84"], levels[2], "random", 0, unread=unread),
        ]
        backend = ScriptedBackend(list(answers))
        calls = CallRecorder("t", ONE_AT_A_TIME)
        [scored[unread]] = score_candidates(
            "simulation", [TRUTH], windows, backend=backend, recorder=calls, feature_id="f"
        )
    assert scored[1].values["correlation_top_and_random"] == pytest.approx(1.0)
    assert (scored[0].values["correlation_top_and_random"] or 0.0) < 0.8  # the 9s on "7" counted against it
    assert [w.get("unread") for w in scored[1].details["windows"]] == [1, 1, 1]
    assert "unread" not in scored[0].details["windows"][0]
    confidence = simulation_confidence(scored[1].details, None)
    assert confidence is not None and confidence.low == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot leave 5 unread"):
        HeldOutWindow(["a", "b"], [0, 0], "top", unread=5)


class PriorReader(ChatBackend):
    """Reads all-at-once values as a simulator with a token prior would: 4 on every digit and on "the"
    whatever the description says, and 5 more on what the description names (digits, or "cat")."""

    backend = "scripted"
    max_concurrency = 1

    def __init__(self) -> None:
        super().__init__("prior-reader")
        self.descriptions: list[str] = []

    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(prompt_logprobs=True)

    def generate(self, request: ChatRequest) -> ChatResponse:
        raise AssertionError("all-at-once simulation reads values; it generates nothing")

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        readouts = []
        for request, lines in items:
            text = " ".join(m.content for m in request.messages)
            self.descriptions.append(next(d for d in (TRUTH, DISTRACTOR, NULL_DESCRIPTION) if d in text))
            named = (lambda t: t.strip().isdigit()) if TRUTH in text else (lambda t: t.strip() == "cat")
            prior = [4.0 if line.strip().isdigit() or line.strip() == "the" else 0.0 for line in lines]
            bonus = 5.0 if DISTRACTOR in text or TRUTH in text else 0.0
            values = [p + bonus * named(t) for p, t in zip(prior, lines, strict=True)]
            readouts.append(ValueReadout(values, input_tokens=len(lines)))
        return readouts


def test_simulation_takes_the_simulators_prior_off_when_asked() -> None:
    """The simulator's guess from the tokens alone (4 on digits and "the") is no credit to a description:
    with the prior subtracted the truth scores 1.0 and the distractor nothing, where as read both gain from it."""
    tokens = ["the", " cat", " has", " 3", " legs", " and", " the", " 7", " dogs", " too"]
    windows = [HeldOutWindow(tokens, [0, 0, 0, 10, 0, 0, 0, 10, 0, 0], "top", raw=[0, 0, 0, 2, 0, 0, 0, 2, 0, 0])]
    windows.append(HeldOutWindow(["the", " cat", " sat", "."], [0, 0, 0, 0], "random", raw=[0.0] * 4))
    scored = {}
    for prior in ("keep", "subtract"):
        backend, calls = PriorReader(), recorder()
        scored[prior] = score_candidates(
            "simulation", [TRUTH, DISTRACTOR], windows, backend=backend, recorder=calls, feature_id="f",
            options=SimulationOptions(prior=prior),
        )  # fmt: skip
        # one batched call per description, and the prior's
        assert len(calls.rows) == (3 if prior == "subtract" else 2)
        assert (NULL_DESCRIPTION in backend.descriptions) == (prior == "subtract")
    truth, distractor = scored["subtract"]
    assert truth.values["correlation_top_and_random"] == pytest.approx(1.0)
    assert (distractor.values["correlation_top_and_random"] or 0.0) < 0.1
    assert truth.details["prior"]["subtracted"] and truth.details["windows"][0]["prior"][3] == 4.0
    assert truth.details["windows"][0]["predicted"][3] == 9.0  # stored as read, scored less the prior
    assert len(truth.call_ids) == 2  # its own call and the prior's
    as_read_truth, as_read_distractor = scored["keep"]
    assert "prior" not in as_read_truth.details and "prior" not in as_read_truth.details["windows"][0]
    assert (as_read_truth.values["correlation_top_and_random"] or 0.0) < 1.0
    assert (as_read_distractor.values["correlation_top_and_random"] or 0.0) > 0.3  # credited with the prior's digits
    # neuron-explainer's number is theirs either way: the predictions as read
    assert truth.values["ev_correlation_score"] == pytest.approx(as_read_truth.values["ev_correlation_score"])
    confidence = simulation_confidence(truth.details, distractor.details)
    assert confidence is not None and confidence.p_vs_distractor == 0.0


def test_generated_detection_without_probabilities() -> None:
    windows = [HeldOutWindow(["a", "1"], [0, 10], "top"), HeldOutWindow(["a", "b"], [0, 0], "random")]
    backend = ScriptedBackend([" Yes.", " maybe"])
    recorder = CallRecorder("t", ONE_AT_A_TIME)
    outcome = score_candidates("detection", [TRUTH], windows, backend=backend, recorder=recorder, feature_id="f")[0]
    assert outcome.values["detection_balanced_accuracy"] is None  # the negative window's answer failed
    assert recorder.rows[1].error is not None and "neither yes nor no" in recorder.rows[1].error


def test_parse_simulation_lines_aligns_and_rejects() -> None:
    tokens = ["a", " b", " c", " d"]
    assert parse_simulation_lines("a\t1\nb\t2\nc\t30\nd\t-1", tokens) == ([1, 2, 10, 0], 4)
    values, matched = parse_simulation_lines("Sure:\na\t1\nb 2\nd\t4\nextra\t5\nmore\t1", tokens)
    assert values == [1, 2, 0, 4] and matched == 3
    with pytest.raises(SimulationParseError, match="only 0 of 4"):
        parse_simulation_lines("no numbers here", tokens)


@pytest.mark.parametrize(("answer", "expected"), [(" Yes", True), ("no.", False), ("**YES**", True), ("Maybe", None)])
def test_parse_yes_no(answer: str, expected: bool | None) -> None:
    assert parse_yes_no(answer) is expected


def test_distractors_are_deterministic_and_never_the_feature_itself() -> None:
    candidates = [(f"f{i}", f"text {i}") for i in range(6)]
    first = choose_distractors("f2", candidates, 3)
    assert first == choose_distractors("f2", list(reversed(candidates)), 3)
    assert len(first) == 3 and all(key != "f2" for key, _ in first)
    assert choose_distractors("f0", [("f0", "x")]) == []


def test_the_distractor_pool_chooses_what_choose_distractors_does() -> None:
    rng = random.Random(0)
    candidates = [(f"f{i}", rng.choice(["a", "b", "c", f"t{i}"])) for i in range(60)]
    pool = DistractorPool(candidates, str)
    for key, text in [*candidates[:30], ("new", "a"), ("f3", "zzz")]:
        expected = choose_distractors(key, [c for c in candidates if c[1] != text], 3)
        assert pool.choose(key, text, 3) == expected
    assert DistractorPool([("f0", "x")], str).choose("f0", "x") == []


class FailingPrior(PriorReader):
    """PriorReader whose calls under "nothing in particular" fail (a server error, say)."""

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        if any(NULL_DESCRIPTION in " ".join(m.content for m in request.messages) for request, _ in items):
            raise ConnectionError("the prior's call failed")
        return super().read_values(items, batch_size)


def test_a_failed_prior_call_fails_the_subtracted_scores_but_not_neuron_explainers_number() -> None:
    tokens = ["the", " cat", " has", " 3", " legs"]
    windows = [HeldOutWindow(tokens, [0, 0, 0, 10, 0], "top", raw=[0, 0, 0, 2, 0])]
    windows.append(HeldOutWindow(["the", " cat", " sat", "."], [0, 0, 0, 0], "random", raw=[0.0] * 4))
    [truth] = score_candidates(
        "simulation", [TRUTH], windows, backend=FailingPrior(), recorder=recorder(), feature_id="f",
        options=SimulationOptions(prior="subtract"),
    )  # fmt: skip
    assert truth.values["correlation_top_and_random"] is None and truth.details["failed"] == 2
    assert [w["prior"] for w in truth.details["windows"]] == [None, None]
    as_read = truth.values["ev_correlation_score"]  # the predictions as read are there (4s and 9s on the digits)
    assert as_read is not None and as_read > 0.5
