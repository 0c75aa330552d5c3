"""What the OpenAI backends share besides their class: the SDK import, the model spec
(`http://host:port/v1#model`), a prefill turned into an instruction for servers that cannot continue an
assistant message, and per-item calls run in parallel with each item's failure kept in its place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TypeVar

from autointerp.errors import LLMError
from autointerp.llm.base import ChatMessage
from autointerp.llm.logprobs import ItemFailures, LogprobsUnavailable

Item = TypeVar("Item")
Result = TypeVar("Result")


def import_openai() -> ModuleType:
    """Returns the `openai` module, or raises LLMError saying how to install it."""
    try:
        import openai
    except ImportError:
        raise LLMError("the openai backend needs the openai SDK: pip install openai") from None
    return openai


def split_model_spec(spec: str) -> tuple[str | None, str]:
    """Returns (base_url or None, model) from `model` or `http(s)://host:port/v1#model`."""
    if spec.startswith(("http://", "https://")):
        base_url, sep, model = spec.partition("#")
        if not sep or not model:
            raise LLMError(f"model {spec!r} needs the model name after '#', e.g. http://127.0.0.1:8000/v1#qwen")
        return base_url, model
    return None, spec


def prefill_as_instruction(messages: list[ChatMessage], prefill: str) -> list[ChatMessage]:
    """Returns `messages` with the last user turn asking the answer to start with `prefill`."""
    if not prefill:
        return messages
    instruction = f"Start your answer with: {prefill}"
    last = messages[-1] if messages else None
    if last is not None and last.role == "user":
        return [*messages[:-1], ChatMessage(role="user", content=f"{last.content}\n\n{instruction}")]
    return [*messages, ChatMessage(role="user", content=instruction)]


def strip_prefill(text: str, prefill: str) -> str:
    """Returns `text` without a leading copy of `prefill` (the model was asked to repeat it)."""
    body = text.lstrip()
    for start in (prefill, prefill.strip()):
        if start and body.startswith(start):
            return body[len(start) :]
    return text


def map_items(call: Callable[[Item], Result], items: Sequence[Item], parallel: int) -> list[Result | LLMError]:
    """Returns `call(item)` per item, run `parallel` at a time, with an item's LLMError in its place;
    `LogprobsUnavailable` (the server as a whole lacks them) is raised instead."""

    def one(item: Item) -> Result | LLMError:
        try:
            return call(item)
        except LogprobsUnavailable:
            raise
        except LLMError as exc:
            return exc

    if len(items) <= 1 or parallel <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(parallel, len(items)), thread_name_prefix="logprobs") as pool:
        return list(pool.map(one, items))


def all_or_failures(results: list[Result | LLMError]) -> list[Result]:
    """Returns `results` when none failed; raises ItemFailures carrying them otherwise."""
    if any(isinstance(result, LLMError) for result in results):
        raise ItemFailures(results)
    return [result for result in results if not isinstance(result, LLMError)]
