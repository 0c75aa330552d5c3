"""Benchmark: the explain calls of a stored run regenerated with the guard against loops (`llm.local`).

    .venv/bin/python benchmarks/guided_explanations.py RUN.duckdb

Reads the run's `explain` calls (their stored requests: messages, prefill, max_tokens, temperature),
asks the same local model again through a `CallRecorder` with the default `llm.local` settings (role
`explain`: no repeated 3-gram within an answer, repetition penalty 1.15), and prints both answers and
how many repeat a word (letters and digits) four times or more.
"""

from __future__ import annotations

import collections
import json
import re
import sys

import duckdb

from autointerp.config import LLMConfig
from autointerp.llm.base import ChatRequest
from autointerp.llm.calls import CallRecorder, LLMSession
from autointerp.llm.registry import get_backend


def most_repeated(text: str) -> int:
    """Returns how often the answer's most frequent word occurs."""
    counts = collections.Counter(re.findall(r"[A-Za-z0-9]+", text.lower()))
    return max(counts.values(), default=0)


def main(path: str) -> None:
    con = duckdb.connect(path, read_only=True)
    rows = con.execute(
        "SELECT feature_id, model, request, response FROM llm_calls WHERE role = 'explain' ORDER BY feature_id"
    ).fetchall()
    backend = get_backend("local:" + rows[0][1])
    recorder = CallRecorder("guided", LLMSession.from_settings(LLMConfig(cache=False)))
    requests = []
    for _, _, request, _ in rows:
        data = json.loads(request) if isinstance(request, str) else request
        requests.append(ChatRequest(**{k: v for k, v in data.items() if k in ChatRequest.model_fields}))
    answers = recorder.call_many(backend, requests, role="explain", prompt_hash="x", feature_ids=[r[0] for r in rows])
    before = after = 0
    for (feature_id, _, _, response), (answer, _) in zip(rows, answers, strict=True):
        old, new = response or "", answer.text if answer else ""
        before += most_repeated(old) >= 4
        after += most_repeated(new) >= 4
        print(f"{feature_id}\n  unguided: {old!r}\n  guided:   {new!r}")
    print(f"explanations repeating a word 4+ times: unguided {before}/{len(rows)}, guided {after}/{len(rows)}")


if __name__ == "__main__":
    main(sys.argv[1])
