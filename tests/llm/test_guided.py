"""Guided local generation: answer shapes (the proposer's parsers always get what they read) and the guard
against loops; unit tests of the constraint over a small vocabulary, then the real SmolLM2-135M."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from autointerp.config import LLMConfig, LLMRoleConfig, LocalGenerationConfig
from autointerp.errors import LLMError
from autointerp.experiments.proposals import (
    SENTENCE_SHAPE,
    WORD_LIST_SHAPE,
    WORD_SHAPE,
    parse_replacement_word,
    parse_sentence,
    parse_word_list,
    replacement_parser,
    replacement_shape,
)
from autointerp.llm.base import ChatMessage, ChatRequest
from autointerp.llm.calls import CallRecorder, LLMSession
from autointerp.llm.guided import AnswerGuard, ShapeConstraint, Vocabulary, answer_shape, banned_continuations

VOCAB = ["1", ",", " 2", " dog", " cat", "\n", "<eos>", "s", '"', "x y", "3,", " the", "ing"]
EOS = VOCAB.index("<eos>")


def vocabulary() -> Vocabulary:
    return Vocabulary(list(VOCAB), frozenset({EOS}), frozenset({EOS}))


def greedy(processor: object, preference: list[str], prompt: list[int], steps: int = 12) -> list[int]:
    """Decodes greedily with fixed scores (earlier in `preference` = higher) under `processor`."""
    scores = torch.full((len(VOCAB),), -5.0)
    for rank, text in enumerate(preference):
        scores[VOCAB.index(text)] = 10.0 - rank
    ids = torch.tensor([prompt])
    for _ in range(steps):
        step = processor(ids, scores.clone().unsqueeze(0))  # type: ignore[operator]
        token = int(step[0].argmax())
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        if token == EOS:
            break
    return ids[0, len(prompt) :].tolist()


def text_of(tokens: list[int]) -> str:
    return "".join(VOCAB[t] for t in tokens if t != EOS)


@pytest.mark.parametrize(
    ("shape", "good", "bad"),
    [
        (
            WORD_LIST_SHAPE,
            [" dog, cat", "dog,cat,the\n", " don't, well-known"],
            ["1, 2, 3", "dog,, cat", "a, b, c, d", ""],
        ),
        (SENTENCE_SHAPE, ['The cat sat."', 'a 10 b"'], ['12"', 'ab"', "no closing quote", 'two\nlines"', 'x"y"']),
        (WORD_SHAPE, ['dog"', '10"'], ['"', 'two words"', "dog"]),
    ],
)
def test_shapes_accept_what_their_parser_reads(shape: str, good: list[str], bad: list[str]) -> None:
    parse: dict[str, Callable[[str], object]] = {
        WORD_LIST_SHAPE: parse_word_list,
        SENTENCE_SHAPE: parse_sentence,
        WORD_SHAPE: parse_replacement_word,
    }
    for text in good:
        assert answer_shape(shape).accepts(text), text
        assert parse[shape](text)
    for text in bad:
        assert not answer_shape(shape).accepts(text), text


def test_a_replacement_word_may_not_be_the_token_itself() -> None:
    shape = answer_shape(replacement_shape(" The"))
    assert shape.name == "word-except:the"
    for text in ['them"', 'th"', 'dog"', 'theory"']:
        assert shape.accepts(text), text
        assert replacement_parser(" The")(text)
    for text in ['the"', 'THE"', '"', "them"]:
        assert not shape.accepts(text), text
    assert replacement_shape("\n") == WORD_SHAPE  # nothing to exclude that the shape could spell
    with pytest.raises(KeyError, match="word-except:<word>"):
        answer_shape("sentences")


def test_constraint_turns_a_digit_list_into_words() -> None:
    # unconstrained, the preferred answer is "1, 2, 3," (what SmolLM2 writes for three words); constrained,
    # the best allowed tokens spell words, and the answer ends once three are written
    preference = ["1", ",", " 2", "3,", " dog", " cat", " the", "<eos>"]
    with pytest.raises(LLMError, match="holds no words"):
        parse_word_list(text_of(greedy(lambda ids, s: s, preference, [0, 0])))
    constrained = ShapeConstraint(answer_shape(WORD_LIST_SHAPE), vocabulary(), prompt_width=2)
    tokens = greedy(constrained, preference, [0, 0], steps=20)
    assert tokens[-1] == EOS and text_of(tokens) == " dog, dog, dog"  # three words, then it must end
    assert parse_word_list(text_of(tokens)) == ["dog"]


def test_constraint_ends_a_quoted_sentence() -> None:
    constrained = ShapeConstraint(answer_shape(SENTENCE_SHAPE), vocabulary(), prompt_width=1)
    tokens = greedy(constrained, ['"', "<eos>", " the", " dog", "\n"], [0], steps=10)
    text = text_of(tokens)
    assert text.endswith('"') and tokens[-1] == EOS  # the quote comes only once the sentence may end
    assert parse_sentence(text) == text[:-1].strip()


def test_guard_blocks_a_loop_in_the_answer_only() -> None:
    assert banned_continuations([3, 4, 5, 3, 4], 3) == {5}  # "3 4" was followed by 5
    assert banned_continuations([3, 4, 3], 3) == set()
    guard = AnswerGuard(prompt_width=3, no_repeat_ngram=3, repetition_penalty=1.0)
    tokens = greedy(guard, [" dog", " cat", " the", "<eos>"], [3, 3, 3], steps=8)  # the prompt says dog dog dog
    assert tokens[:3] == [3, 3, 3]  # the answer may say what the prompt said...
    assert tokens[3] != 3  # ...but not loop: a fourth dog would repeat the answer's 3-gram
    trigrams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    assert len(trigrams) == len(set(trigrams)) == 6


def test_session_guides_local_roles_and_strips_shapes_for_other_backends() -> None:
    class Remote:
        guided_generation = False

    class Local:
        guided_generation = True

    session = LLMSession.from_settings(LLMConfig(cache=False))
    request = ChatRequest(messages=[ChatMessage(role="user", content="hi")], shape=WORD_LIST_SHAPE)
    remote = session.guided(Remote(), request, "propose")  # type: ignore[arg-type]
    assert remote.shape is None and remote.logged() == ChatRequest(messages=request.messages).logged()
    local = session.guided(Local(), request, "propose")  # type: ignore[arg-type]
    assert (local.shape, local.no_repeat_ngram, local.repetition_penalty) == (WORD_LIST_SHAPE, 3, 1.15)
    judged = session.guided(Local(), request.model_copy(update={"shape": None}), "detect")  # type: ignore[arg-type]
    assert judged.no_repeat_ngram == 0 and "no_repeat_ngram" not in judged.logged()
    off = LLMSession.from_settings(LLMConfig(cache=False, local=LocalGenerationConfig(structured=False)))
    assert off.guided(Local(), request, "propose").shape is None  # type: ignore[arg-type]


# --- the real model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_structured_proposer_parses_on_the_real_model() -> None:
    """SmolLM2-135M answers the output-prediction prompt with digits (`1, 2, 3`: unparseable); kept to the
    word-list shape it answers with words, on the first call."""
    from autointerp.experiments.context import Proposer
    from autointerp.llm.registry import get_backend

    backend = get_backend("local:smollm2-135m")
    outcomes = {}
    for structured in (False, True):
        session = LLMSession.from_settings(LLMConfig(cache=False, local=LocalGenerationConfig(structured=structured)))
        recorder = CallRecorder("test", session)
        proposer = Proposer(backend, recorder, LLMRoleConfig(max_tokens=12, retries=0), "f", "e")
        words = proposer.ask(
            "predict_output", {"explanation": 'the token "10"'}, parse_word_list, shape=WORD_LIST_SHAPE
        )
        outcomes[structured] = (words, [row.error for row in recorder.rows])
    assert outcomes[False][0] is None and "holds no words" in str(outcomes[False][1][0])  # the bug, unguided
    words, errors = outcomes[True]
    assert words and all(w.replace("'", "").replace("-", "").isalpha() for w in words) and errors == [None]


@pytest.mark.slow
def test_minimal_pair_proposer_gives_another_word_on_the_real_model() -> None:
    """Asked for a word to put in place of " the", SmolLM2-135M answers "the" (no edit) on the call and on its
    retry, as in the default run; kept to `word-except:the` it gives a different word on the first call."""
    from autointerp.experiments.context import Proposer
    from autointerp.explain.explainer import marked_text
    from autointerp.llm.registry import get_backend

    backend = get_backend("local:smollm2-135m")
    tokens = ["Return", " the", " value", " of", " the", " first", " argument", "."]
    values = {
        "explanation": 'the word "the"',
        "marked_text": marked_text(tokens, [0, 10, 0, 0, 0, 0, 0, 0]),
        "token": repr("the"),
    }
    outcomes = {}
    for shape in (WORD_SHAPE, replacement_shape(" the")):
        recorder = CallRecorder("test", LLMSession.from_settings(LLMConfig(cache=False)))
        proposer = Proposer(backend, recorder, LLMRoleConfig(max_tokens=12, retries=1), "f", "e")
        word = proposer.ask("minimal_pair", values, replacement_parser(" the"), shape=shape)
        outcomes[shape] = (word, [row.error for row in recorder.rows])
    word, errors = outcomes[WORD_SHAPE]
    assert word is None and all("token itself" in str(error) for error in errors)  # the bug, any word allowed
    word, errors = outcomes[replacement_shape(" the")]
    assert word and word.lower() != "the" and errors == [None]
