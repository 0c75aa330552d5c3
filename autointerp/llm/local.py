"""The `local` backend: a transformers causal LM in this process (the subject-model loader)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from transformers import LogitsProcessorList

from autointerp.activations import display_token
from autointerp.errors import LLMError, SubjectModelError
from autointerp.llm.adapter import merge_adapter
from autointerp.llm.adapter_spec import SimulationLines, read_adapter_config, resolve_local_model
from autointerp.llm.base import BackendCapabilities, ChatBackend, ChatMessage, ChatRequest, ChatResponse, ValueReadout
from autointerp.llm.guided import AnswerGuard, ShapeConstraint, Vocabulary, answer_shape
from autointerp.llm.registry import BackendKind, ProbeLimits
from autointerp.subject.model import SubjectModel, load_subject_model


def simulation_line(tokens: Sequence[str], index: int, style: SimulationLines) -> str:
    """Returns line `index` of a simulation prompt: token `index` made visible, and with
    `previous-and-token` the token before it (nothing for the first) and ` ->` in front of it."""
    token = display_token(tokens[index])
    if style == "token":
        return token
    previous = display_token(tokens[index - 1]) if index else ""
    return f"{previous} ->{token}"


class LocalChatBackend(ChatBackend):
    """Greedy or sampled generation with the chat template; exposes the model for token probabilities."""

    backend = "local"
    max_concurrency = 1
    generation_batch_size: ClassVar[int] = 8
    """Prompts per padded `model.generate` call in `generate_many`."""
    simulation_lines: SimulationLines = "token"
    """How `simulation_prompt` writes each token's line: as the adapter was trained (`token` without one)."""
    guided_generation: ClassVar[bool] = True
    """A request's shape and its guidance against loops are honoured (`autointerp.llm.guided`)."""

    def __init__(self, model: str, device: str | None = None) -> None:
        super().__init__(model)
        self._lock = threading.Lock()
        """One generation at a time: the model is shared, and parallel CPU forwards only contend."""
        base, adapter = resolve_local_model(model)
        subject = load_subject_model(base, device=device or os.environ.get("AUTOINTERP_LOCAL_DEVICE", "auto"))
        self.subject: SubjectModel = merge_adapter(subject, adapter) if adapter else subject
        """The model; with an adapter, a private copy with the adapter merged (the shared one is unchanged)."""
        if adapter:
            self.simulation_lines = read_adapter_config(adapter).lines
        self._vocabulary: Vocabulary | None = None

    def prompt_ids(self, messages: list[ChatMessage], prefill: str = "") -> list[int]:
        """Returns the token ids of the chat-formatted conversation followed by `prefill`."""
        tokenizer = self.subject.tokenizer
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(str(text) + prefill, add_special_tokens=False)["input_ids"])

    def generate(self, request: ChatRequest) -> ChatResponse:
        """Returns the model's continuation of the chat-formatted request (one caller at a time)."""
        with self._lock:
            return self._generate(request)

    def stop_ids(self) -> set[int]:
        """Returns the token ids that end an answer (the generation config's and the tokenizer's end of sequence)."""
        stop = self.subject.model.generation_config.eos_token_id
        stop_ids = set(stop if isinstance(stop, list) else [stop] if stop is not None else [])
        if self.subject.tokenizer.eos_token_id is not None:
            stop_ids.add(self.subject.tokenizer.eos_token_id)
        return stop_ids

    def guidance(self, request: ChatRequest, prompt_width: int) -> LogitsProcessorList:
        """Returns the logits processors `request` asks for: its answer shape, and guidance against loops."""
        processors = LogitsProcessorList()
        if request.no_repeat_ngram or request.repetition_penalty != 1.0:
            processors.append(AnswerGuard(prompt_width, request.no_repeat_ngram, request.repetition_penalty))
        if request.shape is not None:
            if self._vocabulary is None:
                self._vocabulary = Vocabulary.of(self.subject.tokenizer, sorted(self.stop_ids()))
            processors.append(ShapeConstraint(answer_shape(request.shape), self._vocabulary, prompt_width))
        return processors

    @torch.inference_mode()
    def _generate(self, request: ChatRequest) -> ChatResponse:
        tokenizer, model = self.subject.tokenizer, self.subject.model
        ids = torch.tensor([self.prompt_ids(request.messages, request.prefill)], device=self.subject.device)
        sampling = (
            {"do_sample": True, "temperature": request.temperature} if request.temperature > 0 else {"do_sample": False}
        )
        output = model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=request.max_tokens,
            pad_token_id=tokenizer.pad_token_id,
            top_p=None,
            top_k=None,
            logits_processor=self.guidance(request, ids.shape[1]),
            **sampling,
        )
        new_tokens = output[0, ids.shape[1] :]
        return ChatResponse(
            text=str(tokenizer.decode(new_tokens, skip_special_tokens=True)),
            input_tokens=int(ids.shape[1]),
            output_tokens=int(new_tokens.shape[0]),
        )

    def capabilities(self) -> BackendCapabilities:
        """Returns what a model in this process offers: probabilities anywhere in the prompt, and
        batched generation (`generate_many`)."""
        return BackendCapabilities(prompt_logprobs=True, answer_logprobs=True, batched_generation=True)

    def _single_token_ids(self, words: Sequence[str]) -> list[int]:
        ids = set()
        for word in words:
            encoded = self.subject.tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
        return sorted(ids)

    def digit_tokens(self) -> dict[int, int]:
        """Returns value -> token id for the values 0-10 written as one token: what all-at-once simulation
        reads (and what a simulator is trained to predict)."""
        return {v: ids[0] for v in range(11) if len(ids := self._single_token_ids([str(v)])) == 1}

    def _padded(self, prompts: list[list[int]], rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns right-padded ids and mask [rows, longest] of the chosen prompts."""
        device = self.subject.device
        length = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), length), self.subject.tokenizer.pad_token_id or 0, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, index in enumerate(rows):
            ids[row, : len(prompts[index])] = torch.tensor(prompts[index], device=device)
            mask[row, : len(prompts[index])] = 1
        return ids, mask

    def answer_probabilities(
        self, requests: Sequence[ChatRequest], choices: Mapping[str, Sequence[str]], batch_size: int = 16
    ) -> list[dict[str, float]]:
        """Returns per request each choice's share of the first answer token's probability (one padded
        forward pass per batch of similar-length prompts)."""
        with self._lock, torch.inference_mode():
            encoded = [self.prompt_ids(r.messages, r.prefill) for r in requests]
            choice_ids = {name: self._single_token_ids(words) for name, words in choices.items()}
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
            body, head = self.subject.model.base_model, self.subject.model.get_output_embeddings()
            result: list[dict[str, float]] = [{} for _ in encoded]
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                ids, mask = self._padded(encoded, rows)
                hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                last = torch.tensor([len(encoded[i]) - 1 for i in rows], device=ids.device)
                probs = torch.softmax(head(hidden[torch.arange(len(rows), device=ids.device), last]).float(), dim=-1)
                mass = {
                    name: probs[:, torch.tensor(t, device=ids.device)].sum(dim=-1) for name, t in choice_ids.items()
                }
                total = torch.stack(list(mass.values())).sum(dim=0).clamp(min=1e-12)
                for row, index in enumerate(rows):
                    result[index] = {name: float(m[row] / total[row]) for name, m in mass.items()}
            return result

    def simulation_prompt(
        self, request: ChatRequest, lines: list[str], style: SimulationLines | None = None
    ) -> tuple[list[int], list[int]]:
        """Returns (token ids, read positions) of `request` followed by `line<TAB>0<NEWLINE>` per token of
        `lines` (written by `simulation_line` in `style`, by default the adapter's); the logits at each read
        position predict the value written after that line's tab."""
        tokenizer = self.subject.tokenizer
        ids = self.prompt_ids(request.messages, request.prefill)
        zero_id = tokenizer("0", add_special_tokens=False)["input_ids"][-1]
        newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
        positions = []
        for index in range(len(lines)):
            line = simulation_line(lines, index, style or self.simulation_lines)
            ids.extend(tokenizer(line + "\t", add_special_tokens=False)["input_ids"])
            positions.append(len(ids) - 1)
            ids.append(zero_id)  # placeholder; causal attention means it never influences its own read
            ids.extend(newline_ids)
        return ids, positions

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        """Returns the expected value 0-10 after each line of each item, and the probability mass the
        digits held; prompts of similar length share one padded forward pass."""
        with self._lock, torch.inference_mode():
            digits = self.digit_tokens()
            device = self.subject.device
            values = torch.tensor(list(digits), dtype=torch.float32, device=device)
            digit_ids = torch.tensor(list(digits.values()), device=device)
            prompts = [self.simulation_prompt(request, lines) for request, lines in items]
            encoded = [ids for ids, _ in prompts]
            order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
            body, head = self.subject.model.base_model, self.subject.model.get_output_embeddings()
            readouts: list[ValueReadout] = [ValueReadout(values=[]) for _ in prompts]
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                ids, mask = self._padded(encoded, rows)
                hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                for row, index in enumerate(rows):
                    logits = head(hidden[row, prompts[index][1]]).float()  # [lines, vocab]
                    log_all = torch.logsumexp(logits, dim=-1)
                    digit_logits = logits[:, digit_ids]
                    mass = torch.exp(torch.logsumexp(digit_logits, dim=-1) - log_all)
                    probs = torch.softmax(digit_logits, dim=-1)
                    readouts[index] = ValueReadout(
                        values=(probs @ values).tolist(),
                        digit_mass=float(mass.mean()) if len(mass) else 1.0,
                        input_tokens=len(encoded[index]),
                    )
            return readouts

    def generate_many(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Returns one answer per request, in order: requests with the same temperature and max_tokens are
        sorted by prompt length and generated `generation_batch_size` at a time in one left-padded
        `model.generate` call each (requests differing in guidance go in different batches); a greedy
        answer is the one `generate` gives for the same request."""
        prompts = [self.prompt_ids(request.messages, request.prefill) for request in requests]
        groups: dict[tuple[float, int, str | None, int, float], list[int]] = {}
        for index, request in enumerate(requests):
            key = (
                request.temperature,
                request.max_tokens,
                request.shape,
                request.no_repeat_ngram,
                request.repetition_penalty,
            )
            groups.setdefault(key, []).append(index)
        answers: dict[int, ChatResponse] = {}
        with self._lock:
            for indices in groups.values():
                indices.sort(key=lambda i: len(prompts[i]))
                for start in range(0, len(indices), self.generation_batch_size):
                    batch = indices[start : start + self.generation_batch_size]
                    responses = self._generate_batch([prompts[i] for i in batch], requests[batch[0]])
                    answers.update(zip(batch, responses, strict=True))
        return [answers[index] for index in range(len(requests))]

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], like: ChatRequest) -> list[ChatResponse]:
        """Returns the answers to `prompts` (token ids) from one `model.generate` over a left-padded batch,
        with the temperature, token limit and guidance of `like`; each row's answer ends at its first
        end-of-sequence token, as a single `generate` stops there."""
        tokenizer, model, device = self.subject.tokenizer, self.subject.model, self.subject.device
        temperature, max_tokens = like.temperature, like.max_tokens
        stop_ids = self.stop_ids()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        width = max(len(prompt) for prompt in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, device=device)
            mask[row, width - len(prompt) :] = 1
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        output = model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            pad_token_id=pad_id,
            top_p=None,
            top_k=None,
            logits_processor=self.guidance(like, width),
            **sampling,
        )
        answers = []
        for row, prompt in enumerate(prompts):
            tokens = output[row, width:].tolist()
            end = next((i + 1 for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
            answers.append(
                ChatResponse(
                    text=str(tokenizer.decode(tokens[:end], skip_special_tokens=True)),
                    input_tokens=len(prompt),
                    output_tokens=end,
                )
            )
        return answers


class LocalBackends(BackendKind[LocalChatBackend]):
    """`local:<model>`: a transformers model in this process (a name as for the subject model, optionally
    `+adapter`)."""

    def create(self, model: str) -> LocalChatBackend:
        """Returns the backend (the model loads on first use)."""
        return LocalChatBackend(model)

    def check(self, model: str, who: str, limits: ProbeLimits) -> list[str]:
        """Checks that the name resolves like a subject model and its folder holds weights and a tokenizer
        (nothing is loaded)."""
        from autointerp.subject.locate import check_model_files, locate_model

        try:
            base, _ = resolve_local_model(model)
            shape = locate_model(base)
            if shape.folder is not None:
                check_model_files(shape.folder)
        except SubjectModelError as exc:
            raise LLMError(f"{who}: {exc}") from None
        return []


create_local_backend = LocalBackends()
"""Entry point `local` (a kind is also a factory: `create_local_backend(model)` is the backend)."""
