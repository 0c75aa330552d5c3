"""Batched local generation on the real SmolLM2-135M: one padded `model.generate` per batch, same greedy text."""

from __future__ import annotations

from typing import Any

import pytest

from autointerp.llm.base import ChatMessage, ChatRequest
from autointerp.llm.local import LocalChatBackend

pytestmark = pytest.mark.slow


def request(question: str, max_tokens: int = 12, prefill: str = "") -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage(role="system", content="Answer briefly."), ChatMessage(role="user", content=question)],
        max_tokens=max_tokens,
        prefill=prefill,
    )


@pytest.fixture(scope="module")
def backend() -> LocalChatBackend:
    return LocalChatBackend("smollm2-135m", device="cpu")


def test_generate_many_matches_one_at_a_time(backend: LocalChatBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = [
        request("Hi?"),
        request("Is the sky blue? Reply with one word, yes or no."),
        request("Name a fruit.", prefill="A fruit:"),
        request("Write one sentence about the sea, with the word water in it, please."),
    ]
    single = [backend.generate(r) for r in requests]
    calls: list[tuple[int, int]] = []
    model: Any = backend.subject.model  # transformers types `generate` as a tensor attribute
    generate = model.generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(tuple(kwargs["input_ids"].shape))
        return generate(*args, **kwargs)

    monkeypatch.setattr(backend.subject.model, "generate", counted)
    batched = backend.generate_many(requests)
    assert [r.text for r in batched] == [r.text for r in single]
    assert [(r.input_tokens, r.output_tokens) for r in batched] == [(r.input_tokens, r.output_tokens) for r in single]
    assert len(calls) == 1 and calls[0][0] == len(requests)  # one padded batch
    assert backend.capabilities().batched_generation


def test_generate_many_groups_by_sampling_settings_and_keeps_order(
    backend: LocalChatBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [request("Hi?", max_tokens=3), request("Name a colour.", max_tokens=5), request("Hello?", max_tokens=3)]
    monkeypatch.setattr(LocalChatBackend, "generation_batch_size", 8)
    answers = backend.generate_many(requests)
    assert [a.output_tokens <= r.max_tokens for a, r in zip(answers, requests, strict=True)] == [True] * 3
    assert answers[1].text == backend.generate(requests[1]).text
    assert backend.generate_many([]) == []
