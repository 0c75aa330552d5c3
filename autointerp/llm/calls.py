"""Calling a backend for a pipeline role and recording every call as an `llm_calls` row."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from autointerp.llm.base import ChatBackend, ChatRequest, ChatResponse
from autointerp.store import now


@dataclass
class CallRecorder:
    """Calls backends and keeps one row per call, to be written with the results they produced."""

    run_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        *,
        role: str,
        backend: str,
        model: str,
        prompt_hash: str,
        request: dict[str, Any],
        response: str | None,
        feature_id: str | None,
        explanation_id: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        latency_s: float = 0.0,
        error: str | None = None,
    ) -> str:
        """Adds a row for a call made elsewhere (e.g. a forward pass); returns its id."""
        call_id = str(uuid.uuid4())
        self.rows.append(
            {
                "id": call_id,
                "run_id": self.run_id,
                "feature_id": feature_id,
                "explanation_id": explanation_id,
                "role": role,
                "backend": backend,
                "model": model,
                "prompt_hash": prompt_hash,
                "request": json.dumps(request),
                "response": response,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "latency_s": latency_s,
                "cost": 0.0,
                "error": error,
                "created_at": now(),
            }
        )
        return call_id

    def call(
        self,
        backend: ChatBackend,
        request: ChatRequest,
        *,
        role: str,
        prompt_hash: str,
        feature_id: str | None,
        explanation_id: str | None = None,
    ) -> tuple[ChatResponse | None, str]:
        """Returns (response or None on error, call id); the error is recorded, not raised."""
        started = time.perf_counter()
        try:
            response: ChatResponse | None = backend.generate(request)
            error = None
        except Exception as exc:  # a failed call is a row, never a crash of the run
            response, error = None, f"{type(exc).__name__}: {exc}"
        call_id = self.record(
            role=role,
            backend=backend.backend,
            model=backend.model,
            prompt_hash=prompt_hash,
            request=request.model_dump(mode="json"),
            response=None if response is None else response.text,
            feature_id=feature_id,
            explanation_id=explanation_id,
            input_tokens=response.input_tokens if response else 0,
            output_tokens=response.output_tokens if response else 0,
            latency_s=time.perf_counter() - started,
            error=error,
        )
        return response, call_id

    def mark_error(self, call_id: str, error: str) -> None:
        """Records that a call's answer could not be used (e.g. it did not parse)."""
        for row in self.rows:
            if row["id"] == call_id:
                row["error"] = error

    def take(self) -> list[dict[str, Any]]:
        """Returns the rows recorded so far and forgets them."""
        rows, self.rows = self.rows, []
        return rows
