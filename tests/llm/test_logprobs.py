"""Log-probabilities over HTTP: all-at-once simulation (`read_values`) and judges' P("yes")
(`answer_probabilities`) against a real vLLM-shaped server on loopback."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from autointerp.errors import LLMError
from autointerp.llm import registry
from autointerp.llm.base import BackendCapabilities, CapabilityMissing, ChatMessage, ChatRequest, ValueReadout
from autointerp.llm.logprobs import (
    ItemFailures,
    LogprobsPayloadError,
    LogprobsUnavailable,
    digit_distribution,
    parse_logprobs_option,
    per_item,
    read_positions,
    render_values_prompt,
)
from autointerp.llm.openai_backend import OpenAIChatBackend, OpenAICompatibleChatBackend
from autointerp.llm.openai_kinds import create_openai_compatible_backend
from autointerp.llm.registry import get_backend, register_backend
from autointerp.llm.retry import RetryPolicy
from tests.llm.loopback_server import (
    LoopbackServer,
    Received,
    Reply,
    VLLMResponder,
    openai_completion,
    openai_error,
    split_tokens,
)

FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
TRUTH = {"cat": 9, "dog": 7, "fish": 4}
"""What the animal-names feature fires on: the value the server "knows" per line."""
YES = ["yes", "Yes", " yes", " Yes"]
NO = ["no", "No", " no", " No"]


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    for name in ("OPENAI_BASE_URL", "AUTOINTERP_COMPATIBLE_API_KEY", "AUTOINTERP_LLM_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)


def knows_animals(prompt: str, line: str) -> int:
    """The right value for `line` when the explanation names animals, else 0."""
    return TRUTH.get(line.strip(), 0) if "animal names" in prompt else 0


def simulation_request(explanation: str) -> ChatRequest:
    return ChatRequest(
        messages=[
            ChatMessage(role="system", content="You predict activations."),
            ChatMessage(role="user", content=f"The neuron fires on {explanation}.\nWrite token<TAB>value."),
        ]
    )


def compatible(server: LoopbackServer, option: str = "?logprobs=prompt,answer") -> OpenAICompatibleChatBackend:
    return OpenAICompatibleChatBackend(f"{server.url}/v1#test-model{option}", timeout_s=5.0, retry=FAST)


LINES = ["The", " cat", " sat", " near", " a", " dog", " and", " fish", "."]


# --- the pure readings ---------------------------------------------------------------------------


def test_logprobs_option_syntax() -> None:
    assert parse_logprobs_option("http://h/v1#m?logprobs=prompt,answer") == (
        "http://h/v1#m",
        frozenset({"prompt", "answer"}),
    )
    assert parse_logprobs_option("m?logprobs=answer") == ("m", frozenset({"answer"}))
    assert parse_logprobs_option("m?logprobs=none") == ("m", frozenset())
    assert parse_logprobs_option("m?logprobs=auto") == ("m", None)
    assert parse_logprobs_option("org/m") == ("org/m", None)
    for bad in ("m?logprobs=all", "m?probs=prompt", "m?logprobs=", "m?logprobs"):
        with pytest.raises(LLMError, match=r"\?logprobs="):
            parse_logprobs_option(bad)


def test_values_prompt_is_plain_text_with_a_placeholder_per_line() -> None:
    request = simulation_request("animal names")
    prompt = render_values_prompt(request.messages, "", ["a", " b"])
    assert prompt == (
        "You predict activations.\n\nThe neuron fires on animal names.\nWrite token<TAB>value.\na\t0\n b\t0\n"
    )
    assert render_values_prompt(request.messages, "Values:", ["a"]).endswith("value.\n\nValues:\na\t0\n")
    with pytest.raises(LLMError, match="tab or newline"):
        render_values_prompt(request.messages, "", ["a\tb"])


def test_read_positions_take_the_last_placeholders_between_tab_and_newline() -> None:
    tokens = ["<s>", "x", "\t", "0", "\n", "say", "\t", "0", "\n", "y", "\t", "0", "\n"]
    assert read_positions(tokens, 2) == [7, 11]
    with pytest.raises(LogprobsPayloadError, match="found 3 of 4 read positions"):
        read_positions(tokens, 4)
    with pytest.raises(LogprobsPayloadError):
        read_positions(["y", "\t0", "\n"], 1)  # the tokenizer merged tab and placeholder


def test_digit_distribution_renormalises_over_the_digits_present() -> None:
    value, mass = digit_distribution({"2": math.log(0.3), "4": math.log(0.1), "\n": math.log(0.5)})
    assert value == pytest.approx((2 * 0.3 + 4 * 0.1) / 0.4)
    assert mass == pytest.approx(0.4)
    with pytest.raises(LogprobsPayloadError, match="no value 0-10"):
        digit_distribution({"\n": -0.1})


# --- all-at-once simulation over HTTP -----------------------------------------------------------


def test_read_values_are_the_values_the_server_knows() -> None:
    items = [(simulation_request("animal names"), LINES), (simulation_request("punctuation"), LINES[:3])]
    with LoopbackServer([], respond=VLLMResponder(value=knows_animals)) as server:
        backend = compatible(server)
        assert backend.capabilities() == BackendCapabilities(prompt_logprobs=True, answer_logprobs=True)
        readouts = backend.read_values(items, batch_size=2)
    animals, punctuation = readouts
    assert animals.values == pytest.approx([TRUTH.get(line.strip(), 0) for line in LINES], abs=1e-9)
    assert punctuation.values == pytest.approx([0, 0, 0])
    assert animals.digit_mass == pytest.approx(0.95, abs=1e-6)
    [request] = [r for r in server.received if "animal names" in r.body["prompt"]]
    assert request.path == "/v1/completions"
    assert (request.body["echo"], request.body["max_tokens"], request.body["logprobs"]) == (True, 0, 20)
    assert request.body["prompt"].endswith("".join(f"{line}\t0\n" for line in LINES))
    assert animals.input_tokens == len(split_tokens(request.body["prompt"]))  # usage.prompt_tokens


def test_many_callers_keep_several_requests_in_flight() -> None:
    responder = VLLMResponder(value=knows_animals, delay_s=0.05)
    with LoopbackServer([], respond=responder) as server:
        backend = compatible(server)
        with ThreadPoolExecutor(max_workers=16) as pool:
            readouts = list(
                pool.map(lambda _: backend.read_values([(simulation_request("animal names"), LINES)]), range(32))
            )
        assert all(r[0].values == pytest.approx([TRUTH.get(x.strip(), 0) for x in LINES]) for r in readouts)
        assert server.max_in_flight > 1
        server.max_in_flight = 0
        backend.read_values([(simulation_request("animal names"), LINES)] * 8, batch_size=8)
        assert server.max_in_flight > 1  # one call's items go out in parallel too


def malformed_server(request: Received) -> Reply:
    """A vLLM-shaped answer, broken in the way the prompt's first line asks for."""
    good = VLLMResponder(value=knows_animals).completion(request.body)
    logprobs = good["choices"][0]["logprobs"]
    prompt = request.body["prompt"]
    if "BREAK:not-json" in prompt:
        return Reply({}, raw="<html>502 upstream</html>")
    if "BREAK:no-top" in prompt:
        logprobs["top_logprobs"] = [
            None if t == "0" else top for t, top in zip(logprobs["tokens"], logprobs["top_logprobs"], strict=True)
        ]
    if "BREAK:short" in prompt:
        logprobs["top_logprobs"] = logprobs["top_logprobs"][:-5]
    if "BREAK:no-choices" in prompt:
        good["choices"] = []
    if "BREAK:nan" in prompt:
        logprobs["top_logprobs"] = [top and dict.fromkeys(top, "oops") for top in logprobs["top_logprobs"]]
    return Reply(good)


def test_malformed_payloads_fail_their_item_only() -> None:
    breaks = ["not-json", "no-top", "short", "no-choices", "nan"]
    items = [(simulation_request("animal names"), LINES)]
    items += [(simulation_request(f"animal names BREAK:{kind}"), LINES) for kind in breaks]
    with LoopbackServer([], respond=malformed_server) as server:
        backend = compatible(server)
        results = backend.read_values_each(items, batch_size=3)
        with pytest.raises(ItemFailures) as caught:
            backend.read_values(items)
    assert isinstance(results[0], ValueReadout)
    assert results[0].values == pytest.approx([TRUTH.get(x.strip(), 0) for x in LINES])
    errors = results[1:]
    assert all(isinstance(e, LogprobsPayloadError) for e in errors), errors
    messages = [str(e) for e in errors]
    assert "not JSON" in messages[0]
    assert "no top_logprobs" in messages[1]
    assert "tokens but" in messages[2]
    assert "no choices" in messages[3]
    assert "not a number" in messages[4]
    assert all("\n" not in m for m in messages)
    assert [type(r) for r in caught.value.results] == [type(r) for r in results]
    assert "5 of 6 items failed" in str(caught.value)
    assert len(server.received) == 1 + 2 * len(items)  # the first use's probe; malformed answers are not retried


def test_per_item_unpacks_failures_for_any_caller() -> None:
    with LoopbackServer([], respond=malformed_server) as server:
        backend = compatible(server)
        items = [(simulation_request("animal names"), LINES), (simulation_request("BREAK:short"), LINES)]
        good, bad = per_item(lambda: backend.read_values(items), len(items))
    assert isinstance(good, ValueReadout) and isinstance(bad, LogprobsPayloadError)

    def whole_call_fails() -> list[ValueReadout]:
        raise LLMError("server down")

    assert [str(e) for e in per_item(whole_call_fails, 2)] == ["server down", "server down"]


def test_429_then_success_is_retried() -> None:
    responder = VLLMResponder(value=knows_animals)
    calls: list[int] = []

    def respond(request: Received) -> Reply:
        calls.append(1)
        if len(calls) == 1:
            return Reply(openai_error("slow down", "rate_limit"), status=429, headers={"Retry-After": "0.05"})
        return responder(request)

    with LoopbackServer([], respond=respond) as server:
        [readout] = compatible(server).read_values([(simulation_request("animal names"), LINES)])
    assert readout.values == pytest.approx([TRUTH.get(x.strip(), 0) for x in LINES])
    assert len(server.received) == 3  # the probe's 429 and its retry, then the window


def test_persistent_errors_fail_the_item_after_retries() -> None:
    responder = VLLMResponder(value=knows_animals)

    def respond(request: Received) -> Reply:
        return Reply(openai_error("boom"), status=500) if "BREAK" in request.body["prompt"] else responder(request)

    items = [(simulation_request("BREAK"), ["a"]), (simulation_request("animal names"), [" cat"])]
    with LoopbackServer([], respond=respond) as server:
        error, readout = compatible(server).read_values_each(items)
    assert isinstance(error, LLMError) and "failed after 3 attempts: HTTP 500" in str(error)
    assert isinstance(readout, ValueReadout) and readout.values == pytest.approx([9.0])


def test_declared_but_rejected_by_the_server_fails_once_naming_the_fallback() -> None:
    # transformers serve, for one, answers 500 to echo/logprobs on /v1/completions
    rejection = Reply(openai_error("echo is not supported"), status=400)
    with LoopbackServer([rejection]) as server:
        backend = compatible(server, "?logprobs=prompt")
        assert backend.capabilities().prompt_logprobs  # declared: no request until first use
        assert server.received == []
        for _ in range(2):
            with pytest.raises(LogprobsUnavailable) as caught:
                backend.read_values([(simulation_request("x"), ["a"])] * 4)
    message = str(caught.value)
    assert "\n" not in message
    assert "was declared ?logprobs=prompt but gave no prompt log-probabilities" in message
    assert "HTTP 400 (echo is not supported)" in message and 'score.simulation = "generate"' in message
    assert len(server.received) == 1  # one probe, remembered


def test_server_without_logprobs_while_declared_names_the_fallback() -> None:
    with LoopbackServer([], respond=VLLMResponder(logprobs=False)) as server:
        backend = compatible(server, "?logprobs=prompt")
        with pytest.raises(LogprobsUnavailable) as caught:
            backend.read_values([(simulation_request("x"), ["a", "b"])] * 3)
    message = str(caught.value)
    assert "\n" not in message
    assert 'score.simulation = "generate"' in message
    assert message.startswith("openai-compatible:test-model at http://127.0.0.1:")


def test_auto_probes_once_and_finds_what_the_server_returns() -> None:
    with LoopbackServer([], respond=VLLMResponder()) as server:
        backend = compatible(server, "")
        assert backend.capabilities() == BackendCapabilities(prompt_logprobs=True, answer_logprobs=True)
        assert backend.capabilities().prompt_logprobs
        assert sorted(r.path for r in server.received) == ["/v1/chat/completions", "/v1/completions"]
    with LoopbackServer([], respond=VLLMResponder(logprobs=False)) as server:
        backend = compatible(server, "?logprobs=auto")
        assert backend.capabilities() == BackendCapabilities()
        with pytest.raises(CapabilityMissing, match=r'score\.simulation = "generate"'):
            backend.read_values([(simulation_request("x"), ["a"])])
        with pytest.raises(CapabilityMissing):
            backend.answer_probabilities([simulation_request("x")], {"yes": YES, "no": NO})
        assert len(server.received) == 2


def test_none_declares_nothing_and_sends_no_probe() -> None:
    with LoopbackServer([], respond=VLLMResponder()) as server:
        assert compatible(server, "?logprobs=none").capabilities() == BackendCapabilities()
    assert server.received == []


# --- judges with probabilities over HTTP ---------------------------------------------------------


def judge_request(text: str, prefill: str = "") -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage(role="user", content=f"Text: {text}. Does it name an animal? Answer yes or no.")],
        max_tokens=4,
        prefill=prefill,
    )


def animal_judge(messages: list[dict[str, Any]]) -> float:
    """P(yes): high when the user's text names an animal."""
    user = next(m["content"] for m in messages if m["role"] == "user")
    return 0.9 if any(name in user for name in TRUTH) else 0.2


def test_answer_probabilities_on_openai_read_the_first_token() -> None:
    requests = [judge_request("a cat sat", prefill="Answer:"), judge_request("a chair")]
    with LoopbackServer([], respond=VLLMResponder(p_yes=animal_judge)) as server:
        backend = OpenAIChatBackend(f"{server.url}/v1#gpt-test", timeout_s=5.0, retry=FAST)
        assert backend.capabilities() == BackendCapabilities(answer_logprobs=True)  # one chat probe
        probe = server.received[-1]
        probabilities = backend.answer_probabilities(requests, {"yes": YES, "no": NO})
    assert [p["yes"] for p in probabilities] == pytest.approx([0.9, 0.2])
    assert all(sum(p.values()) == pytest.approx(1.0) for p in probabilities)
    assert [r.path for r in server.received] == ["/v1/chat/completions"] * 3
    bodies = sorted((r.body for r in server.received if r is not probe), key=lambda b: json.dumps(b["messages"]))
    for body in bodies:
        assert (body["logprobs"], body["top_logprobs"], body["max_completion_tokens"]) == (True, 20, 1)
        assert [m["role"] for m in body["messages"]] == ["user"]  # OpenAI cannot continue the prefill
        assert "continue_final_message" not in body


def test_answer_probabilities_on_a_compatible_server_continue_the_prefill() -> None:
    with LoopbackServer([], respond=VLLMResponder(p_yes=animal_judge)) as server:
        [p] = compatible(server, "?logprobs=answer").answer_probabilities(
            [judge_request("a dog", prefill="Answer:")], {"yes": YES, "no": NO}
        )
    assert p["yes"] == pytest.approx(0.9)
    probe, received = server.received
    assert probe.body["messages"] == [{"role": "user", "content": "Say yes."}]
    assert received.body["messages"][-1] == {"role": "assistant", "content": "Answer:"}
    assert (received.body["continue_final_message"], received.body["add_generation_prompt"]) == (True, False)
    assert received.body["max_tokens"] == 1


def test_answer_without_any_choice_in_the_top_list_fails_that_item() -> None:
    with LoopbackServer([], respond=VLLMResponder(p_yes=animal_judge)) as server:
        backend = compatible(server, "?logprobs=answer")
        [error] = backend.answer_probabilities_each([judge_request("x")], {"maybe": ["maybe", " maybe"]})
    assert isinstance(error, LogprobsPayloadError)
    assert "none of the choices ['maybe']" in str(error) and "'Answer'" in str(error)


def test_answer_with_null_logprobs_while_declared_says_what_to_change() -> None:
    with (
        LoopbackServer([Reply(openai_completion("yes"))]) as server,
        pytest.raises(LogprobsUnavailable, match=r"\?logprobs=none"),
    ):
        OpenAIChatBackend(f"{server.url}/v1#gpt-test?logprobs=answer", retry=FAST).answer_probabilities(
            [judge_request("x")], {"yes": YES, "no": NO}
        )


def test_openai_probe_of_a_model_refusing_logprobs_turns_them_off() -> None:
    refusal = openai_error("logprobs are not supported with this model", "invalid_request_error")
    with LoopbackServer([Reply(refusal, status=400), Reply(openai_completion("yes"))]) as server:
        backend = OpenAIChatBackend(f"{server.url}/v1#reasoner", retry=FAST)
        assert backend.capabilities() == BackendCapabilities()
        assert backend.generate(judge_request("x")).text == "yes"
    assert [r.body.get("logprobs") for r in server.received] == [True, None]


def test_openai_declares_no_prompt_logprobs() -> None:
    with pytest.raises(LLMError, match=r'score\.simulation = "generate"'):
        OpenAIChatBackend("gpt-test?logprobs=prompt")
    backend = OpenAIChatBackend("gpt-test?logprobs=none")
    assert backend.capabilities() == BackendCapabilities()
    with pytest.raises(CapabilityMissing):
        OpenAIChatBackend("gpt-test").read_values([(simulation_request("x"), ["a"])])


def test_registry_spec_with_option_keeps_the_plain_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.BACKENDS, "_registered", dict(registry.BACKENDS._registered))
    monkeypatch.setattr(registry, "_instances", {})
    register_backend("openai-compatible", create_openai_compatible_backend)
    with LoopbackServer([], respond=VLLMResponder(value=knows_animals)) as server:
        backend = get_backend(f"openai-compatible:{server.url}/v1#org/model-7b?logprobs=prompt")
        assert backend.name == "openai-compatible:org/model-7b"
        assert backend.capabilities().prompt_logprobs and not backend.capabilities().answer_logprobs
        [readout] = backend.read_values([(simulation_request("animal names"), [" dog"])])
    assert readout.values == pytest.approx([7.0])
    assert server.received[0].body["model"] == "org/model-7b"
