"""Log-probabilities from OpenAI-shaped HTTP answers: all-at-once simulation and judges' P("yes").

Two readings, both pure functions of a server's JSON answer, so they are tested without a server:

- `read_echoed_values`: the answer of `/v1/completions` with `echo: true`, `logprobs: k` and
  `max_tokens: 0` (vLLM) to a prompt rendered by `render_values_prompt`. Each line of the window is
  written `line<TAB>0<NEWLINE>`; the log-probabilities echoed for the placeholder "0" are the
  distribution of what the model would write after the tab. The top-k entries that are the values
  "0".."10" are renormalised and their expected value taken; how much probability they held is kept.
- `choice_probabilities`: the answer of `/v1/chat/completions` with `logprobs: true`,
  `top_logprobs: k` and one new token; the first token's top entries are summed per choice
  (each choice has several spellings, e.g. "yes", " Yes") and renormalised over the choices.

A failure of one item is an `LLMError` in that item's place (`per_item` collects them); a server that
returns no log-probabilities at all is `LogprobsUnavailable`, one line naming the setting to change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from autointerp.errors import ConfigError, LLMError
from autointerp.llm.base import ChatMessage, ValueReadout

T = TypeVar("T")

VALUES = tuple(range(11))
"""The values a simulator writes after each tab."""
PLACEHOLDER = "0"
"""Written after every tab so the line is complete; causal attention keeps it from its own read."""
TOP_LOGPROBS = 20
"""Top entries asked per position: vLLM's default `--max-logprobs`, and OpenAI's most for chat."""
LOGPROB_OPTIONS = ("prompt", "answer")
"""What `?logprobs=` on a model spec can declare (besides `auto` and `none`)."""


class LogprobsUnavailable(ConfigError, LLMError):
    """The server returned no log-probabilities although the model spec declared them."""


class LogprobsPayloadError(LLMError):
    """One answer's log-probabilities are missing, malformed or do not match its prompt."""


class ItemFailures(LLMError):
    """Some items of a batched call failed; `results` holds each item's result or its `LLMError`."""

    def __init__(self, results: Sequence[object]) -> None:
        self.results: list[Any] = list(results)
        errors = [r for r in self.results if isinstance(r, LLMError)]
        first = str(errors[0]) if errors else "unknown error"
        super().__init__(f"{len(errors)} of {len(self.results)} items failed; first: {first}")


def per_item(call: Callable[[], list[T]], count: int) -> list[T | LLMError]:
    """Returns `call()`'s results, with each failed item's `LLMError` in its place.

    For `read_values` / `answer_probabilities` of any backend: `ItemFailures` is unpacked into its
    per-item results; any other `LLMError` (the call failed as a whole) stands for all `count` items.
    """
    try:
        return list(call())
    except ItemFailures as failures:
        return failures.results
    except LLMError as error:
        return [error] * count


def parse_logprobs_option(spec: str) -> tuple[str, frozenset[str] | None]:
    """Returns (spec without its `?logprobs=...` suffix, declared set) from a model spec.

    `model?logprobs=prompt,answer` declares both; `answer` or `prompt` one; `none` neither; `auto`
    (or no suffix) returns None: the backend decides (a probe request, or what the API is known to do).
    """
    base, sep, query = spec.partition("?")
    if not sep:
        return spec, None
    key, eq, value = query.partition("=")
    if key != "logprobs" or not eq:
        raise LLMError(f"model {spec!r}: the only option is ?logprobs=prompt,answer (or answer, prompt, none, auto)")
    words = [w.strip() for w in value.split(",") if w.strip()]
    if words == ["auto"]:
        return base, None
    if words == ["none"]:
        return base, frozenset()
    unknown = [w for w in words if w not in LOGPROB_OPTIONS]
    if unknown or not words:
        raise LLMError(f"model {spec!r}: ?logprobs= takes prompt, answer, both (prompt,answer), none or auto")
    return base, frozenset(words)


def render_values_prompt(messages: Sequence[ChatMessage], prefill: str, lines: Sequence[str]) -> str:
    """Returns the plain-text all-at-once prompt: message contents and the prefill, each block separated
    by a blank line, then a newline, then `line<TAB>0<NEWLINE>` per line.

    No chat template is applied (the server's completions endpoint takes text); raises LLMError for a
    line holding a tab or newline, which would make its read position ambiguous.
    """
    for line in lines:
        if "\t" in line or "\n" in line:
            raise LLMError(f"simulation line {line!r} holds a tab or newline; show tokens with display_token")
    blocks = [m.content for m in messages if m.content] + ([prefill] if prefill else [])
    head = "\n\n".join(blocks)
    if head and not head.endswith("\n"):
        head += "\n"
    return head + "".join(f"{line}\t{PLACEHOLDER}\n" for line in lines)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LogprobsPayloadError(f"{what} is {type(value).__name__}, not an object")
    return value


def parse_json_body(text: str) -> dict[str, Any]:
    """Returns a server's JSON answer as a dict; raises LogprobsPayloadError for anything else."""
    try:
        body = json.loads(text)
    except ValueError:
        raise LogprobsPayloadError(f"answer is not JSON: {text[:60]!r}") from None
    return _object(body, "answer")


def first_choice(body: Mapping[str, Any]) -> dict[str, Any]:
    """Returns `choices[0]` of an OpenAI-shaped answer; raises LogprobsPayloadError when there is none."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise LogprobsPayloadError("answer has no choices")
    return _object(choices[0], "choices[0]")


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Returns `usage.prompt_tokens` of an answer, 0 when absent."""
    usage = body.get("usage")
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) else 0


def read_positions(tokens: Sequence[object], count: int) -> list[int]:
    """Returns the indices of the last `count` placeholder tokens: a "0" right after a token ending in a
    tab and right before one starting with a newline (the end of each `line<TAB>0<NEWLINE>`).

    Raises LogprobsPayloadError when fewer are found (the tokenizer merged the placeholder with its
    neighbours, or the echo does not cover the prompt).
    """
    found = [
        i
        for i in range(1, len(tokens))
        if tokens[i] == PLACEHOLDER
        and isinstance(tokens[i - 1], str)
        and str(tokens[i - 1]).endswith("\t")
        and (i + 1 == len(tokens) or str(tokens[i + 1]).startswith("\n"))
    ]
    if len(found) < count:
        raise LogprobsPayloadError(
            f"found {len(found)} of {count} read positions (a '0' token between a tab and a newline) in the"
            " echoed prompt tokens; the server's tokenizer may merge them"
        )
    return found[len(found) - count :]


def digit_distribution(top: Mapping[str, object]) -> tuple[float, float]:
    """Returns (expected value, probability mass) of the values "0".."10" among one position's top entries.

    Raises LogprobsPayloadError when no value is among them or a log-probability is not a number.
    """
    weights: dict[int, float] = {}
    for value in VALUES:
        logprob = top.get(str(value))
        if logprob is None:
            continue
        if not isinstance(logprob, int | float) or isinstance(logprob, bool) or math.isnan(logprob):
            raise LogprobsPayloadError(f"log-probability of {value!r} is {logprob!r}, not a number")
        weights[value] = math.exp(min(0.0, float(logprob)))
    mass = sum(weights.values())
    if mass <= 0.0:
        raise LogprobsPayloadError("no value 0-10 among the top log-probabilities at a read position")
    return sum(v * w for v, w in weights.items()) / mass, mass


def read_echoed_values(body: Mapping[str, Any], lines: Sequence[str], *, label: str) -> ValueReadout:
    """Returns the expected value per line from a `/v1/completions` echo answer to `render_values_prompt`.

    Raises LogprobsUnavailable when the answer carries no log-probabilities at all (the server lacks
    them), LogprobsPayloadError when they are partial or malformed.
    """
    logprobs = first_choice(body).get("logprobs")
    if logprobs is None or (isinstance(logprobs, dict) and not logprobs.get("tokens")):
        raise LogprobsUnavailable(
            f"{label} returned no prompt log-probabilities (it needs /v1/completions with echo and logprobs,"
            ' as vLLM serves); set score.simulation = "generate" or drop "prompt" from ?logprobs= in the model'
        )
    logprobs = _object(logprobs, "logprobs")
    tokens, tops = logprobs.get("tokens"), logprobs.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(tops, list):
        raise LogprobsPayloadError("logprobs lacks the tokens or top_logprobs lists")
    if len(tokens) != len(tops):
        raise LogprobsPayloadError(f"logprobs has {len(tokens)} tokens but {len(tops)} top_logprobs entries")
    values, masses = [], []
    for position in read_positions(tokens, len(lines)):
        top = tops[position]
        if not isinstance(top, dict):
            raise LogprobsPayloadError(f"no top_logprobs at read position {position}")
        value, mass = digit_distribution(top)
        values.append(value)
        masses.append(mass)
    return ValueReadout(
        values=values,
        digit_mass=sum(masses) / len(masses) if masses else 1.0,
        input_tokens=prompt_tokens(body),
    )


def first_token_top(body: Mapping[str, Any], *, label: str) -> dict[str, float]:
    """Returns {token: probability} of the first generated token's `top_logprobs` in a chat answer.

    Raises LogprobsUnavailable when the answer carries no log-probabilities, LogprobsPayloadError when
    they are malformed or empty.
    """
    logprobs = first_choice(body).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if logprobs is None or content is None:
        raise LogprobsUnavailable(
            f"{label} returned no answer log-probabilities; use a server that returns chat logprobs,"
            " or add ?logprobs=none to the model (judges then parse the answer: balanced accuracy only)"
        )
    if not isinstance(content, list) or not content:
        raise LogprobsPayloadError("logprobs.content is empty")
    top = _object(content[0], "logprobs.content[0]").get("top_logprobs")
    if not isinstance(top, list) or not top:
        raise LogprobsPayloadError("the first answer token has no top_logprobs")
    seen: dict[str, float] = {}
    for entry in top:
        entry = _object(entry, "a top_logprobs entry")
        token, logprob = entry.get("token"), entry.get("logprob")
        if not isinstance(token, str) or not isinstance(logprob, int | float) or isinstance(logprob, bool):
            raise LogprobsPayloadError(f"top_logprobs entry {entry!r} lacks a token or a numeric logprob")
        seen.setdefault(token, math.exp(min(0.0, float(logprob))))
    return seen


def choice_probabilities(
    body: Mapping[str, Any], choices: Mapping[str, Sequence[str]], *, label: str
) -> dict[str, float]:
    """Returns each choice's probability, renormalised over the choices, from the first generated token's
    `top_logprobs` of a chat-completions answer (a choice's spellings are summed).

    Raises what `first_token_top` raises, and LogprobsPayloadError when no spelling of any choice is
    among the top entries.
    """
    seen = first_token_top(body, label=label)
    weights = {name: sum(seen.get(spelling, 0.0) for spelling in set(spellings)) for name, spellings in choices.items()}
    total = sum(weights.values())
    if total <= 0.0:
        shown = ", ".join(repr(t) for t in list(seen)[:8])
        raise LogprobsPayloadError(
            f"none of the choices {sorted(choices)} is among the first token's top entries ({shown})"
        )
    return {name: weight / total for name, weight in weights.items()}
