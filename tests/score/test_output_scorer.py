"""The output scorer on planted output features, with a judge on loopback that knows the answer.

Planted output directions (unembedding rows of weekday and month names) are steered in the real
subject model; the judge, a scripted OpenAI-compatible server with token probabilities, says "yes" when
continuation 1 holds more words of the set the description names than continuation 2. So the true
description must reach AUROC 1.0, and another set's description (the distractor) chance, 0.5.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from autointerp.config import LLMConfig
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.llm.base import ChatBackend
from autointerp.outputs.planted import PLANTED_OUTPUTS, planted_output_set
from autointerp.score.output import OutputOptions, OutputScorer, wilson_interval
from autointerp.score.registry import SteeringTarget
from autointerp.score.scorers import score_candidates
from autointerp.subject import SubjectModel
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES
from autointerp.subject.sources import DirectionSource, PlantedSource
from tests.llm.loopback_server import LoopbackServer, VLLMResponder

WORDS = {p.description: [w.lower() for w in p.words] for p in PLANTED_OUTPUTS}
OPTIONS = OutputOptions(prompts=2, strength=4.0, tokens=4)
MAX_ACTIVATION = 75.0
"""About the directions' largest projection on ordinary text past the first token (a fixed scale keeps the
test off a corpus pass)."""


def said(words: list[str], text: str) -> int:
    """Returns how many times `text` says one of `words` (as a word or glued, like "WednesdayWednesday")."""
    return sum(len(re.findall(re.escape(w), text.lower())) for w in words)


def knows_outputs(messages: list[dict[str, Any]]) -> float:
    """P(continuation 1 is the steered one), from the word set the description names."""
    prompt = "\n".join(str(m["content"]) for m in messages)  # the prefill may come as an assistant message
    description = re.search(r"Description of the feature: (.*)\.\n", prompt)
    first = re.search(r"^Continuation 1: (.*)$", prompt, re.MULTILINE)
    second = re.search(r"^Continuation 2: (.*)$", prompt, re.MULTILINE)
    if description is None or first is None or second is None:
        return 0.5
    words = next(
        (w for truth, w in WORDS.items() if truth.removeprefix("makes the model say ") in description.group(1)), []
    )
    a, b = said(words, first.group(1)), said(words, second.group(1))
    return 0.95 if a > b else 0.05 if b > a else 0.5


@pytest.fixture(scope="module")
def judge() -> Iterator[ChatBackend]:
    with LoopbackServer([], respond=VLLMResponder(p_yes=knows_outputs)) as server:
        yield get_backend(f"openai-compatible:{server.url}/v1#judge")


def test_output_scorer_ranks_true_descriptions_above_distractors(subject: SubjectModel, judge: ChatBackend) -> None:
    planted = planted_output_set(subject)
    recorder = CallRecorder("t", LLMSession.from_settings(LLMConfig(cache=False)))
    for name, distractor in (("weekdays", "months"), ("months", "weekdays")):
        index = planted.names.index(name)
        source = DirectionSource(subject, planted.matrix, planted.hook, [index])
        target = SteeringTarget(subject, source, MAX_ACTIVATION)
        truth, other = planted.descriptions[index], planted.descriptions[planted.names.index(distractor)]
        outcomes = score_candidates(
            "output",
            [truth, other],
            [],
            backend=judge,
            recorder=recorder,
            feature_id=name,
            options=OPTIONS,
            steering=target,
        )
        pairs = outcomes[0].details["items"]  # steering made the model say the set's words
        assert all(said(WORDS[truth], p["steered"]) > said(WORDS[truth], p["clean"]) for p in pairs), pairs
        truth_outcome, distractor_outcome = outcomes
        assert truth_outcome.values["output_auroc"] == 1.0, truth_outcome.details
        assert truth_outcome.values["output_accuracy"] == 1.0
        assert distractor_outcome.values["output_auroc"] == 0.5  # the distractor's chance level
        assert truth_outcome.details["accuracy_interval"][0] > 0.3
        assert len(truth_outcome.call_ids) == 2 * OPTIONS.prompts  # each pair judged in both orders


def test_a_feature_that_cannot_be_steered_is_skipped_with_its_reason(subject: SubjectModel, judge: ChatBackend) -> None:
    recorder = CallRecorder("t", LLMSession.from_settings(LLMConfig(cache=False)))
    planted = PlantedSource(subject, [BUILTIN_PLANTED_FEATURES[0]])
    for target in (SteeringTarget(subject, planted, 1.0), SteeringTarget(subject, None, 1.0, "no such file"), None):
        outcomes = (
            score_candidates(
                "output", ["digits", "colours"], [], backend=judge, recorder=recorder, feature_id="p", options=OPTIONS
            )
            if target is None
            else OutputScorer(OPTIONS).score(_context(target, judge, recorder))
        )
        for outcome in outcomes:
            assert outcome.values == {"output_auroc": None, "output_accuracy": None}
            assert outcome.details["skipped"] and outcome.undefined["output_auroc"] == outcome.details["skipped"]
    assert not recorder.rows  # no judge call for a feature with nothing to steer


def _context(target: SteeringTarget, judge: ChatBackend, recorder: CallRecorder) -> Any:
    from autointerp.score.registry import ScoringContext

    return ScoringContext(["digits", "colours"], [], recorder, judge, "p", steering=target)


def test_wilson_interval() -> None:
    low, high = wilson_interval(4, 4) or (0.0, 0.0)
    assert 0.45 < low < 0.55 and high == 1.0
    assert wilson_interval(0, 0) is None
