"""The `openai` and `openai-compatible` backends: chat completions through the official `openai` SDK.

`openai:gpt-4o-mini` calls OpenAI (or `OPENAI_BASE_URL`); `openai-compatible:http://127.0.0.1:8000/v1#name`
calls any server speaking the chat-completions API (vLLM, llama.cpp, Ollama, ...), where a key is optional.
The API key is read from `OPENAI_API_KEY` (`AUTOINTERP_COMPATIBLE_API_KEY` for compatible servers)
and handed to the SDK client; it is never kept on the backend, logged, or written into an exception message.

Log-probabilities (see `autointerp.llm.logprobs`): a `?logprobs=` suffix on the model declares what the
server returns: `prompt` (prompt log-probabilities from `/v1/completions` with `echo`, as vLLM serves:
all-at-once simulation, `read_values`), `answer` (chat `logprobs` / `top_logprobs`: judges' P("yes"),
`answer_probabilities`), `prompt,answer`, `none`, or `auto` (the default): one tiny probe request per kind
at the first `capabilities()` call (not recorded as an `llm_calls` row). OpenAI's API echoes no prompt
log-probabilities, so `openai:` may declare only `answer`, and probes only that (its reasoning models refuse
`logprobs`; the probe finds out).

The entry points that build these backends and check a model for the preflight are in
`autointerp.llm.openai_kinds`; the SDK import, model specs, prefills and parallel per-item calls in
`autointerp.llm.openai_requests`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from autointerp.errors import LLMError
from autointerp.llm.base import (
    BackendCapabilities,
    CapabilityMissing,
    ChatBackend,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LazyCapabilities,
    Probabilities,
    ValueReadout,
)
from autointerp.llm.lean_http import HTTPStatusFailure, LeanHTTP, lean_failure
from autointerp.llm.logprobs import (
    TOP_LOGPROBS,
    LogprobsUnavailable,
    choice_probabilities,
    first_token_top,
    parse_json_body,
    parse_logprobs_option,
    read_echoed_values,
    render_values_prompt,
)
from autointerp.llm.openai_requests import (
    all_or_failures,
    import_openai,
    map_items,
    prefill_as_instruction,
    split_model_spec,
    strip_prefill,
)
from autointerp.llm.retry import (
    CallFailure,
    RetryPolicy,
    call_with_retries,
    request_timeout,
    sdk_failure,
    timeout_from_env,
)

if TYPE_CHECKING:
    from types import ModuleType

    from openai import OpenAI

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
COMPATIBLE_KEY_ENV = "AUTOINTERP_COMPATIBLE_API_KEY"
NO_KEY = "not-needed"
"""Key sent to compatible servers that want none (the SDK insists on some key)."""
CONTINUING_SERVERS = frozenset({"vllm", "llamacpp"})
"""`owned_by` in a server's `/models` answer that marks a server continuing a final assistant message."""
PARALLEL_REQUESTS = 8
"""Requests in flight at once within one `answer_probabilities` call."""

logger = logging.getLogger(__name__)

Result = TypeVar("Result")


class OpenAIChatBackend(ChatBackend):
    """A model behind the OpenAI chat-completions API."""

    backend: ClassVar[str] = "openai"
    key_env: ClassVar[str] = KEY_ENV
    """Environment variable holding the API key."""
    key_required: ClassVar[bool] = True
    """Whether a missing key is an error (else a dummy key is sent)."""
    max_tokens_param: ClassVar[str] = "max_completion_tokens"
    """Request field for the token limit: OpenAI's current name; compatible servers know `max_tokens`."""
    allowed_logprobs: ClassVar[frozenset[str]] = frozenset({"answer"})
    """What `?logprobs=` may declare: OpenAI's API echoes no prompt log-probabilities."""
    lean_http: ClassVar[bool] = False
    """POST with a plain keep-alive `httpx` client (`LeanHTTP`) instead of the SDK's request machinery."""

    def __init__(self, model: str, *, timeout_s: float | None = None, retry: RetryPolicy | None = None) -> None:
        model, declared = parse_logprobs_option(model)
        spec_url, model_name = split_model_spec(model)
        super().__init__(model_name)
        if declared is not None and not declared <= self.allowed_logprobs:
            raise LLMError(
                f"{self.backend}:{model_name} cannot declare ?logprobs={','.join(sorted(declared))}: the API returns"
                ' no prompt log-probabilities; use score.simulation = "generate" (or ?logprobs=answer)'
            )
        self.declared_logprobs: frozenset[str] | None = declared
        """What the model spec declares; None (`auto`): a probe decides at the first `capabilities()` call."""
        self._probed: dict[str, LLMError | LogprobsUnavailable | None] = {}
        self._probe_lock = threading.Lock()
        self.base_url: str | None = spec_url or os.environ.get(BASE_URL_ENV) or None
        self.timeout_s = timeout_s if timeout_s is not None else timeout_from_env()
        """Per-request timeout: fixed when given, else the base to which each request adds time per token."""
        self.scaled_timeout = timeout_s is None
        self.retry = retry or RetryPolicy.from_env()
        self._continues: bool | None = None
        """Whether the server continues a final assistant message (`continue_final_message`); None: not
        tried yet. Only compatible servers are tried; OpenAI gets the prefill as an instruction."""
        # the key lives only in the client that sends it, never in this object's own attributes
        self._sdk: ModuleType | None = None
        self._client: OpenAI | None = None
        self._lean: LeanHTTP | None = None
        if self.lean_http and self.base_url:  # a compatible server: plain HTTP, the SDK is not even imported
            self._lean = LeanHTTP(self.base_url, self._api_key(), self.timeout_s)
        else:
            self._sdk = import_openai()
            self._client = self._sdk.OpenAI(
                api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout_s, max_retries=0
            )

    def _api_key(self) -> str:
        key = os.environ.get(self.key_env)
        if key:
            return key
        if self.key_required:
            raise LLMError(f"the {self.backend} backend needs an API key: set {self.key_env}")
        return NO_KEY

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def label(self) -> str:
        """Returns `backend:model`, with the server when one is set, for log lines and errors."""
        return f"{self.name} at {self.base_url}" if self.base_url else self.name

    def generate(self, request: ChatRequest) -> ChatResponse:
        """Returns the model's answer, without the prefill; raises LLMError once retries are spent.

        A prefill is continued by the server where it can (a final assistant message, as the judges'
        path does: `_continuation`); otherwise the last user turn asks the answer to start with it."""
        params: dict[str, Any] = {"temperature": request.temperature, self.max_tokens_param: request.max_tokens}
        body: dict[str, Any] | None = None
        if request.prefill and self._continues is not False:
            messages, extra = self._continuation(request)
            if extra:
                body = self._post_json(
                    "/chat/completions", {"model": self.model, "messages": messages, **params, **extra}, refused_ok=True
                )
                if body is None:
                    self._continues = False
                    logger.info(
                        "%s refused a continued assistant message; the prefill becomes an instruction", self.label
                    )
        if body is None:
            asked = prefill_as_instruction(request.messages, request.prefill)
            body = self._post_json(
                "/chat/completions", {"model": self.model, "messages": [m.model_dump() for m in asked], **params}
            )
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LLMError(f"{self.label} answered with no choices")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        text = message.get("content") if isinstance(message, dict) else None
        text = text if isinstance(text, str) else ""
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return ChatResponse(
            text=strip_prefill(text, request.prefill) if request.prefill else text,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )

    def _continuation(self, request: ChatRequest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Returns (messages, extra body) that make the server continue the prefill, or an empty extra
        body when this backend cannot (OpenAI's API continues no assistant message)."""
        return [m.model_dump() for m in request.messages], {}

    def request_timeout(self, max_tokens: int) -> float:
        """Returns the timeout of a request for `max_tokens` tokens (see `retry.request_timeout`)."""
        return request_timeout(self.timeout_s, max_tokens) if self.scaled_timeout else self.timeout_s

    @overload
    def _post_json(self, path: str, params: dict[str, Any]) -> dict[str, Any]: ...

    @overload
    def _post_json(self, path: str, params: dict[str, Any], *, refused_ok: bool) -> dict[str, Any] | None: ...

    def _post_json(self, path: str, params: dict[str, Any], *, refused_ok: bool = False) -> dict[str, Any] | None:
        """Returns the JSON answer to one POST of `params` to `path` (e.g. `/chat/completions`) under the
        retry policy, with a timeout that grows with the tokens asked for. A compatible server gets the lean
        client (`LeanHTTP`: JSON on keep-alive connections; the SDK is not imported); OpenAI gets the SDK
        client's `post` (its auth, timeouts and error types), without its per-call parameter transformation
        and response models: at high concurrency those cost more client CPU than the HTTP round trip (see
        results/benchmarks/campaign.md). `refused_ok`: returns None when the server refuses the request's
        fields (HTTP 400 / 422) instead of raising."""
        tokens = params.get(self.max_tokens_param, params.get("max_tokens", 0))
        timeout = self.request_timeout(int(tokens or 0))
        lean = self._lean
        if lean is not None:
            try:
                text = self._call(
                    lambda: lean.post(path, params, timeout), timeout, passthrough=(400, 422) if refused_ok else ()
                )
            except HTTPStatusFailure as exc:
                if refused_ok and exc.status in (400, 422):
                    return None
                raise
            return parse_json_body(text)
        client, sdk = self._client, self._sdk
        assert client is not None and sdk is not None  # the SDK path: no lean client
        try:
            text = self._call(
                lambda: client.post(path, cast_to=str, body=params, options={"timeout": timeout}),
                timeout,
                passthrough=(400, 422) if refused_ok else (),
            )
        except sdk.APIStatusError as exc:
            if refused_ok and exc.status_code in (400, 422):
                return None
            raise
        return parse_json_body(text)

    def capabilities(self) -> BackendCapabilities:
        """Returns what the model spec declares, or (`auto`) what one probe request per kind finds, each
        kind probed only when a scorer reads it (a detection-only run never probes prompt log-probabilities)."""
        return LazyCapabilities(self._offers)

    def _offers(self, kind: str) -> bool:
        """Returns whether `kind` ("prompt" / "answer") log-probabilities are declared, or (`auto`) found by
        the probe."""
        if self.declared_logprobs is not None:
            return kind in self.declared_logprobs
        return kind in self.allowed_logprobs and self._probe_once(kind) is None

    def _require(self, kind: str) -> None:
        """Returns when `kind` log-probabilities can be read. Raises CapabilityMissing when the backend does
        not offer them, LogprobsUnavailable (one line naming the setting to change) when the model spec
        declared them but the first use's probe got none back: a server lacking them fails once, not per item."""
        if not self._offers(kind):
            fallback = 'score.simulation = "generate"' if kind == "prompt" else "judges that parse yes/no"
            raise CapabilityMissing(f"{self.label} gives no {kind} log-probabilities; use {fallback}")
        failure = self._probe_once(kind)
        if failure is None:
            return
        if isinstance(failure, LogprobsUnavailable):
            raise failure
        fallback = (
            'set score.simulation = "generate" or drop "prompt" from ?logprobs='
            if kind == "prompt"
            else 'drop "answer" from ?logprobs= (judges then parse yes/no: balanced accuracy only)'
        )
        reason = str(failure).removeprefix(self.label).strip(" :")
        raise LogprobsUnavailable(
            f"{self.label} was declared ?logprobs={kind} but gave no {kind} log-probabilities ({reason}); {fallback}"
        )

    def _probe_once(self, kind: str) -> LLMError | LogprobsUnavailable | None:
        """Returns None when one tiny request (sent once per backend and kind) got `kind` log-probabilities
        back, else the LLMError saying why not."""
        with self._probe_lock:
            if kind not in self._probed:
                self._probed[kind] = failure = self._probe(kind)
                if failure is None:
                    logger.info("%s returns %s log-probabilities (probed)", self.label, kind)
                else:
                    logger.warning("%s: no usable %s log-probabilities (probed): %s", self.label, kind, failure)
            return self._probed[kind]

    def _probe(self, kind: str) -> LLMError | LogprobsUnavailable | None:
        try:
            if kind == "prompt":
                self._read_one(ChatRequest(messages=[]), ["x"])
            else:
                probe = ChatRequest(messages=[ChatMessage(role="user", content="Say yes.")])
                first_token_top(self._answer_body(probe), label=self.label)
        except (LLMError, LogprobsUnavailable) as exc:  # the server lacks them: a ConfigError, found out here
            return exc
        return None

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        """Returns the expected value 0-10 after each line of each item, one `/v1/completions` request per
        item (`batch_size` in flight at once). Raises `ItemFailures` (its `results` hold each item's
        readout or LLMError) when some items fail, `LogprobsUnavailable` when the server returns no
        prompt log-probabilities, `CapabilityMissing` when the backend does not offer them."""
        results = self.read_values_each(items, batch_size)
        return all_or_failures(results)

    def read_values_each(
        self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8
    ) -> list[ValueReadout | LLMError]:
        """Returns, per item, its `ValueReadout` or the `LLMError` that failed it (retries spent, a partial
        or malformed payload), so one failed window is recorded without losing the others.

        The prompt is `render_values_prompt` (message contents, prefill, then `line<TAB>0<NEWLINE>` per
        line; no chat template); the request asks for zero new tokens with `echo` and the top
        `TOP_LOGPROBS` log-probabilities. Raises `LogprobsUnavailable` (one line naming
        `score.simulation = "generate"`) when the server returns none at all: a declared `prompt` is
        checked by one probe request at first use."""
        self._require("prompt")
        return map_items(lambda item: self._read_one(*item), items, batch_size)

    def _read_one(self, request: ChatRequest, lines: list[str]) -> ValueReadout:
        if not lines:
            return ValueReadout(values=[], digit_mass=1.0, input_tokens=0)
        prompt = render_values_prompt(request.messages, request.prefill, lines)
        params: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "echo": True,
            "logprobs": TOP_LOGPROBS,
            "max_tokens": 0,
            "temperature": 0.0,
        }
        return read_echoed_values(self._post_json("/completions", params), lines, label=self.label)

    def answer_probabilities(
        self, requests: Sequence[ChatRequest], choices: Mapping[str, Sequence[str]]
    ) -> list[dict[str, float]]:
        """Returns, per request, each choice's probability renormalised over the choices, read from the
        first answer token's top log-probabilities. Raises `ItemFailures` (its `results` hold each item's
        probabilities or LLMError) when some items fail, `LogprobsUnavailable` when the server returns
        no log-probabilities, `CapabilityMissing` when the backend does not offer them."""
        return all_or_failures(self.answer_probabilities_each(requests, choices))

    def answer_probabilities_each(
        self, requests: Sequence[ChatRequest], choices: Mapping[str, Sequence[str]]
    ) -> list[dict[str, float] | LLMError]:
        """Returns, per request, {choice: probability} or the `LLMError` that failed it (retries spent, no
        spelling of any choice among the top `TOP_LOGPROBS` first tokens, a malformed payload).

        One chat request per item, one new token, `logprobs` with `top_logprobs`; `PARALLEL_REQUESTS` in
        flight at once. A prefill is continued where the server can (see `_answer_messages`)."""
        self._require("answer")
        return map_items(lambda request: self._answer_one(request, choices), requests, PARALLEL_REQUESTS)

    def _answer_messages(self, request: ChatRequest) -> tuple[list[ChatMessage], dict[str, Any]]:
        """Returns (messages, extra body) for reading the first answer token: OpenAI cannot continue a
        prefill, so it is left out (the question itself asks for the answer word)."""
        return request.messages, {}

    def _answer_one(self, request: ChatRequest, choices: Mapping[str, Sequence[str]]) -> dict[str, float]:
        body = self._answer_body(request)
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Probabilities.with_usage(
            choice_probabilities(body, choices, label=self.label),
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )

    def _answer_body(self, request: ChatRequest) -> dict[str, Any]:
        """Returns the JSON answer to `request` asked for one token with its top log-probabilities."""
        messages, extra_body = self._answer_messages(request)
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [message.model_dump() for message in messages],
            "temperature": 0.0,
            self.max_tokens_param: 1,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        return self._post_json("/chat/completions", {**params, **extra_body})

    def _call(self, call: Callable[[], Result], timeout_s: float, passthrough: tuple[int, ...] = ()) -> Result:
        """Returns `call()` under the retry policy; raises one-line LLMError once retries are spent (an
        SDK status error whose status is in `passthrough` is raised as it is)."""

        sdk = self._sdk

        def describe(exc: Exception) -> CallFailure | None:
            if sdk is not None and isinstance(exc, sdk.APIStatusError) and exc.status_code in passthrough:
                return None
            if isinstance(exc, HTTPStatusFailure) and exc.status in passthrough:
                return None
            return lean_failure(exc, timeout_s) or (sdk_failure(exc, sdk, timeout_s) if sdk is not None else None)

        key = self._lean.api_key if self._lean is not None else self._client.api_key if self._client else ""
        return call_with_retries(call, describe=describe, label=self.label, policy=self.retry, secrets=[key])


class OpenAICompatibleChatBackend(OpenAIChatBackend):
    """The same client for any OpenAI-compatible server; an API key is optional."""

    backend: ClassVar[str] = "openai-compatible"
    key_env: ClassVar[str] = COMPATIBLE_KEY_ENV
    """A key of its own, so an OpenAI key is never sent to whatever server is named."""
    key_required: ClassVar[bool] = False
    lean_http: ClassVar[bool] = True
    max_tokens_param: ClassVar[str] = "max_tokens"
    allowed_logprobs: ClassVar[frozenset[str]] = frozenset({"prompt", "answer"})

    def __init__(self, model: str, *, timeout_s: float | None = None, retry: RetryPolicy | None = None) -> None:
        if split_model_spec(model)[0] is None and not os.environ.get(BASE_URL_ENV):
            raise LLMError(
                f"the openai-compatible backend needs a server: use openai-compatible:http://HOST:PORT/v1#{model}"
                f" or set {BASE_URL_ENV}"
            )
        super().__init__(model, timeout_s=timeout_s, retry=retry)

    def _continuation(self, request: ChatRequest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Returns (messages, extra body): the prefill as a final assistant message that the server continues
        (vLLM's `continue_final_message`; llama.cpp continues a final assistant message itself). A server
        that refuses these fields (`transformers serve`: HTTP 422) gets the prefill as an instruction."""
        if self._continues is None:
            self._continues = self._server_continues()
        if not self._continues:
            return [m.model_dump() for m in request.messages], {}
        messages, extra = self._answer_messages(request)
        return [m.model_dump() for m in messages], extra

    def _server_continues(self) -> bool:
        """Returns whether the server is one known to continue a final assistant message (its `/models`
        says `owned_by` vllm or llamacpp); asked once. Other servers (`transformers serve`, unknown ones)
        get the prefill as an instruction."""
        try:
            timeout = min(self.timeout_s, 5.0)
            if self._lean is not None:
                text = self._lean.get("/models", timeout)
            else:
                assert self._client is not None
                text = self._client.get("/models", cast_to=str, options={"timeout": timeout})
            listed = parse_json_body(text).get("data")
        except Exception:  # no /models, or not JSON: an unknown server
            return False
        owners = {str(m.get("owned_by", "")).lower() for m in listed or [] if isinstance(m, dict)}
        continues = bool(owners & CONTINUING_SERVERS)
        logger.info("%s: prefill %s", self.label, "continued" if continues else "sent as an instruction")
        return continues

    def _answer_messages(self, request: ChatRequest) -> tuple[list[ChatMessage], dict[str, Any]]:
        """Returns (messages, extra body): a prefill becomes a final assistant message that the server
        continues (vLLM's `continue_final_message`; llama.cpp continues a final assistant message itself)."""
        if not request.prefill:
            return request.messages, {}
        prefilled = [*request.messages, ChatMessage(role="assistant", content=request.prefill)]
        return prefilled, {"continue_final_message": True, "add_generation_prompt": False}
