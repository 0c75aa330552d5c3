"""Guided local generation: answers that do not loop, and answers kept to the shape their parser reads.

A local model (SmolLM2-135M) left to itself writes `literal literal literal literal ...` and answers a
request for three words with `1, 2, 3`. Two logits processors for `model.generate` fix that:

- `AnswerGuard` blocks any n-gram that the answer already holds (only the answer, never the prompt:
  an explanation must be free to quote the prompt's tokens) and applies a repetition penalty to the
  tokens the answer has written so far.
- `ShapeConstraint` allows only tokens that keep the answer a prefix of its shape (`ANSWER_SHAPES`): a
  small character automaton per shape, walked over each vocabulary token's text. The end of the
  answer is allowed only where the shape is complete.

A request names its shape (`ChatRequest.shape`); backends that cannot constrain decoding ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch

State = Hashable
"""A position in a shape's automaton."""
END = "end"
"""The state after the shape's closing character: nothing but the end of the answer may follow."""


@dataclass(frozen=True)
class AnswerShape:
    """A character automaton: `step(state, char)` is the next state or None (the char is not allowed);
    `complete(state)` says whether the answer may end there."""

    name: str
    start: State
    step: Callable[[State, str], State | None]
    complete: Callable[[State], bool]

    def walk(self, state: State, text: str) -> State | None:
        """Returns the state after `text` from `state`, or None when some character is not allowed."""
        for char in text:
            if state == END:
                return None
            next_state = self.step(state, char)
            if next_state is None:
                return None
            state = next_state
        return state

    def accepts(self, text: str) -> bool:
        """Returns whether `text` is a complete answer of this shape."""
        state = self.walk(self.start, text)
        return state is not None and self.complete(state)


def _word_char(char: str) -> bool:
    return char.isascii() and char.isalpha()


def word_list(max_words: int) -> AnswerShape:
    """Returns the shape `word, word, word` (ASCII letters, `'` and `-` inside a word; 1 to `max_words`
    words separated by commas; optional spaces; an optional final newline): what `parse_word_list` reads."""

    def step(state: State, char: str) -> State | None:
        count, phase = cast(tuple[int, str], state)
        if phase in ("lead", "sep"):
            if char == " ":
                return state
            return (count + 1, "word") if _word_char(char) else None
        # phase == "word"
        if _word_char(char) or char in "'-":
            return state
        if char == "," and count < max_words:
            return (count, "sep")
        return END if char == "\n" else None

    return AnswerShape(f"words-{max_words}", (0, "lead"), step, lambda s: s == END or s[1] == "word")  # type: ignore[index]


def quoted_sentence(min_chars: int = 3) -> AnswerShape:
    """Returns the shape `text"`: at least `min_chars` characters, a letter among them, no quote or line
    break, then the closing quote (the prompt's prefill opened it): what `parse_sentence` reads."""

    def step(state: State, char: str) -> State | None:
        chars, letter = cast(tuple[int, bool], state)
        if char == '"':
            return END if chars >= min_chars and letter else None
        if char in "\n\r\ufffd" or not char.isprintable():
            return None
        return (min(chars + 1, min_chars), letter or char.isalpha())

    return AnswerShape("sentence", (0, False), step, lambda s: s == END)


WORD_EXCEPT = "word-except:"
"""Prefix of the shape `word-except:<word>`: `quoted_word` that may not be `<word>` (a minimal pair's token)."""


def quoted_word(excluded: str = "") -> AnswerShape:
    """Returns the shape `word"`: ASCII letters or digits, then the closing quote: what
    `parse_replacement_word` reads; with `excluded`, any word but that one (ignoring case)."""
    target = excluded.lower()

    def step(state: State, char: str) -> State | None:
        # state: "start", or how many characters of `target` the word matches so far (-1: it left it)
        if char.isascii() and char.isalnum():
            matched = 0 if state == "start" else cast(int, state)
            if 0 <= matched < len(target) and target[matched] == char.lower():
                return matched + 1
            return -1
        if char == '"' and state != "start" and (not target or state != len(target)):
            return END
        return None

    return AnswerShape(f"{WORD_EXCEPT}{target}" if target else "word", "start", step, lambda s: s == END)


ANSWER_SHAPES: dict[str, AnswerShape] = {
    shape.name: shape for shape in (word_list(3), word_list(5), quoted_sentence(), quoted_word())
}
"""Shapes a request may name (`ChatRequest.shape`), and `word-except:<word>` for any word."""


def answer_shape(name: str) -> AnswerShape:
    """Returns the shape called `name`; raises KeyError naming the known ones."""
    if name.startswith(WORD_EXCEPT):
        return quoted_word(name[len(WORD_EXCEPT) :])
    if name not in ANSWER_SHAPES:
        known = ", ".join([*sorted(ANSWER_SHAPES), f"{WORD_EXCEPT}<word>"])
        raise KeyError(f"unknown answer shape {name!r}; known: {known}")
    return ANSWER_SHAPES[name]


MAX_CACHED_MASKS = 256
"""Allowed-token masks a vocabulary keeps (about 50 KB each for SmolLM2's 49,152 tokens), oldest dropped first."""


@dataclass
class Vocabulary:
    """A tokenizer's token texts (what each id adds to the decoded answer), the ids that end an answer,
    and per (shape, state) the ids allowed there, computed when first needed."""

    texts: list[str]
    stop_ids: frozenset[int]
    special_ids: frozenset[int]
    _allowed: dict[tuple[str, State], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, tokenizer: object, stop_ids: Sequence[int]) -> Vocabulary:
        """Returns the vocabulary of a transformers tokenizer (every id decoded alone)."""
        size = len(tokenizer)  # type: ignore[arg-type]
        texts = list(tokenizer.batch_decode([[i] for i in range(size)]))  # type: ignore[attr-defined]
        specials = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", []))
        return cls(texts, frozenset(int(i) for i in stop_ids), specials)

    def allowed(self, shape: AnswerShape, state: State) -> torch.Tensor:
        """Returns a bool mask [vocabulary]: the tokens that keep the answer a prefix of `shape` from `state`,
        and the stop tokens where the shape is complete."""
        key = (shape.name, state)
        if key not in self._allowed:
            if len(self._allowed) >= MAX_CACHED_MASKS:  # `word-except:` names one shape per word
                del self._allowed[next(iter(self._allowed))]
            mask = torch.zeros(len(self.texts), dtype=torch.bool)
            if state != END:
                for index, text in enumerate(self.texts):
                    if text and index not in self.special_ids and shape.walk(state, text) is not None:
                        mask[index] = True
            if shape.complete(state):
                mask[sorted(self.stop_ids)] = True
            self._allowed[key] = mask
        return self._allowed[key]


class ShapeConstraint:
    """A `model.generate` logits processor that keeps every row's answer a prefix of `shape`: a row may
    end only where the shape is complete; a row with no allowed token (none in the vocabulary) may end."""

    def __init__(self, shape: AnswerShape, vocabulary: Vocabulary, prompt_width: int) -> None:
        self.shape, self.vocabulary, self.prompt_width = shape, vocabulary, prompt_width
        self._states: list[State | None] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._states is None:
            self._states = [self.shape.start] * input_ids.shape[0]
        elif input_ids.shape[1] > self.prompt_width:
            last = input_ids[:, -1].tolist()
            for row, token in enumerate(last):
                state = self._states[row]
                if state is None or token in self.vocabulary.stop_ids:
                    self._states[row] = None  # finished: generate pads it from now on
                else:
                    self._states[row] = self.shape.walk(state, self.vocabulary.texts[token])
        for row, state in enumerate(self._states):
            if state is None:
                continue
            mask = self.vocabulary.allowed(self.shape, state).to(scores.device)
            if not bool(mask[: scores.shape[1]].any()):
                mask = torch.zeros_like(mask)
                mask[sorted(self.vocabulary.stop_ids)] = True
            width = min(scores.shape[1], mask.shape[0])
            blocked = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
            blocked[:width] = ~mask[:width]
            scores[row, blocked] = -float("inf")
        return scores


class AnswerGuard:
    """A `model.generate` logits processor against loops, over the answer only (columns from `prompt_width`):
    bans each token that would repeat an n-gram of `no_repeat_ngram` tokens the answer already holds (0:
    off), and divides the logit of every token the answer already wrote by `repetition_penalty` (multiplies
    it when negative; 1: off)."""

    def __init__(self, prompt_width: int, no_repeat_ngram: int, repetition_penalty: float) -> None:
        self.prompt_width, self.n, self.penalty = prompt_width, no_repeat_ngram, repetition_penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        answers = input_ids[:, self.prompt_width :]
        if answers.shape[1] == 0:
            return scores
        if self.penalty != 1.0:
            written = torch.gather(scores, 1, answers)
            written = torch.where(written > 0, written / self.penalty, written * self.penalty)
            scores = cast(torch.FloatTensor, scores.scatter(1, answers, written))
        if self.n > 0 and answers.shape[1] >= self.n:
            for row, tokens in enumerate(answers.tolist()):
                for token in banned_continuations(tokens, self.n):
                    scores[row, token] = -float("inf")
        return scores


def banned_continuations(tokens: list[int], n: int) -> set[int]:
    """Returns the tokens that would end an n-gram already in `tokens` if written next."""
    if n <= 0 or len(tokens) < n:
        return set()
    if n == 1:
        return set(tokens)
    prefix = tuple(tokens[len(tokens) - n + 1 :])
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix}
