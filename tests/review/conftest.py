"""Fixtures for the review app: a DuckDB file holding rows shaped like a real run, and a live server."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from autointerp.review import ReviewSettings, create_app
from autointerp.score.confidence import RESAMPLES, Confidence
from autointerp.store.database import Store, now

RUN_ID = "run-review0001"
HOSTILE_TOKEN = "<script>window.__pwned = 1</script>"
HOSTILE_EXPLANATION = 'quotes <img src=x onerror="window.__pwned = 2"> and <b>bold</b>'
WINDOW = ["The", " cat", " sat", " on", " the", " mat", ".", "\n"]


def feature_rows(run_id: str, indices: range, layer: int = 15) -> list[dict[str, Any]]:
    """Returns `features` rows for neurons of one layer."""
    return [
        {
            "run_id": run_id,
            "id": f"smollm2-135m/mlp.{layer}/{i}",
            "model": "smollm2-135m",
            "hook": f"mlp.{layer}",
            "kind": "neuron",
            "idx": i,
            "max_activation": 2.0 + i % 7,
            "mean_activation": 0.1,
            "density": (i % 10) / 10,
            "tokens": 1536,
            "dead": False,
        }
        for i in indices
    ]


def explanation_row(run_id: str, feature_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """Returns an `explanations` row."""
    return {
        "id": str(uuid.uuid4()),
        "run_id": run_id,
        "feature_id": feature_id,
        "iteration": 0,
        "parent_id": None,
        "explainer": "local:smollm2-135m",
        "prompt_hash": "abc123abc123abc1",
        "text": text,
        "llm_call_id": None,
        "created_at": now(),
        **extra,
    }


def populate(path: Path, run_id: str = RUN_ID, count: int = 6) -> dict[str, Any]:
    """Writes one run of `count` features shaped like a real run (every table); returns ids used by tests."""
    store = Store(path)
    store.migrate()
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, 'completed', '{}', 'hash', '0.1.0', NULL, NULL)",
            [run_id, now() - timedelta(minutes=5), now()],
        )
    features = feature_rows(run_id, range(count))
    rows: dict[str, list[dict[str, Any]]] = {
        "features": features,
        "exemplars": [],
        "explanations": [],
        "scores": [],
        "experiments": [],
        "llm_calls": [],
    }
    explanation_ids: dict[str, str] = {}
    for n, feature in enumerate(features):
        fid = feature["id"]
        tokens = [HOSTILE_TOKEN if (n == 0 and i == 2) else t for i, t in enumerate(WINDOW)]
        for kind, rank, split in (("top", 0, "explain"), ("top", 1, "score"), ("random", 0, "score")):
            acts = [float((i * (rank + 1) + n) % 5) if kind == "top" else 0.0 for i in range(len(tokens))]
            rows["exemplars"].append(
                {
                    "run_id": run_id,
                    "feature_id": fid,
                    "kind": kind,
                    "rank": rank,
                    "doc_id": n,
                    "token_offset": 0,
                    "token_ids": list(range(len(tokens))),
                    "tokens": tokens,
                    "activations": acts,
                    "max_activation": max(acts),
                    "split": split,
                }
            )
        call_id = str(uuid.uuid4())
        text = HOSTILE_EXPLANATION if n == 0 else f"the token cat in sentence {n}"
        explanation = explanation_row(run_id, fid, text, llm_call_id=call_id)
        explanation_ids[fid] = explanation["id"]
        rows["explanations"].append(explanation)
        rows["llm_calls"].append(
            {
                "id": call_id,
                "run_id": run_id,
                "feature_id": fid,
                "explanation_id": None,
                "role": "explain",
                "backend": "local",
                "model": "smollm2-135m",
                "prompt_hash": "abc123abc123abc1",
                "request": json.dumps({"messages": [{"role": "user", "content": f"explain {HOSTILE_TOKEN}"}]}),
                "response": text,
                "input_tokens": 120,
                "output_tokens": 9,
                "latency_s": 0.4,
                "cost": 0.0,
                "error": None,
                "created_at": now(),
            }
        )
        windows = [
            {
                "kind": "top",
                "rank": 1,
                "true": list(range(8)),
                "predicted": [0.5 * i for i in range(8)],
                "prior": [0.25] * 8,
                "unread": 1,
            },
            {"kind": "random", "rank": 0, "true": [0] * 8, "predicted": [0.1] * 8, "prior": [0.25] * 8},
        ]
        for metric, value in (
            ("correlation_top_and_random", round(0.9 - 0.15 * n, 3)),
            ("correlation_top", 0.5),
            ("correlation_top_and_random_distractor", 0.02),
        ):
            rows["scores"].append(
                {
                    "id": str(uuid.uuid4()),
                    "run_id": run_id,
                    "explanation_id": explanation["id"],
                    "scorer": "simulation-all-at-once",
                    "scorer_model": "local:smollm2-135m",
                    "metric": metric,
                    "value": value,
                    "details": json.dumps({"llm_call_id": call_id, "windows": windows}),
                    "created_at": now(),
                }
            )
    first = features[0]["id"]
    rows["experiments"].append(
        {
            "id": str(uuid.uuid4()),
            "run_id": run_id,
            "explanation_id": explanation_ids[first],
            "kind": "input",
            "spec": json.dumps({"activating": [f"a {HOSTILE_TOKEN} cat"], "non_activating": ["a dog"]}),
            "predicted": json.dumps({"activating": "fires", "non_activating": "does not fire"}),
            "measured": json.dumps({"activating": [3.2], "non_activating": [0.1]}),
            "verdict": "supports",
            "created_at": now(),
        }
    )
    store.write_results(rows)
    return {"run_id": run_id, "features": [f["id"] for f in features], "explanations": explanation_ids}


@pytest.fixture
def review_db(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A real DuckDB file with one run of six features (a `<script>` token and a hostile explanation)."""
    path = tmp_path / "review.duckdb"
    return path, populate(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def score_row(explanation_id: str, metric: str, value: float | None, **extra: Any) -> dict[str, Any]:
    """Returns a `scores` row of the fixture's run (scorer `simulation-all-at-once` unless given)."""
    return {
        "id": str(uuid.uuid4()),
        "run_id": RUN_ID,
        "explanation_id": explanation_id,
        "scorer": "simulation-all-at-once",
        "scorer_model": "local:smollm2-135m",
        "metric": metric,
        "value": value,
        "details": json.dumps({}),
        "created_at": now(),
        **extra,
    }


def set_confidence(path: Path, explanation_id: str, half_width: float, p_vs_distractor: float) -> None:
    """Stores a bootstrap confidence in the headline score's details, as the score stage writes it."""
    confidence = Confidence(0.0, 2 * half_width, half_width, p_vs_distractor, RESAMPLES).as_details()
    with Store(path).transaction() as con:
        con.execute(
            "UPDATE scores SET details = json_merge_patch(details, ?) "
            "WHERE explanation_id = ? AND metric = 'correlation_top_and_random'",
            [json.dumps({"confidence": confidence}), explanation_id],
        )


def review_row(explanation_id: str, verdict: str, **extra: Any) -> dict[str, Any]:
    """Returns a `reviews` row by reviewer `tester`, made now."""
    return {
        "id": str(uuid.uuid4()),
        "explanation_id": explanation_id,
        "verdict": verdict,
        "edited_text": None,
        "reviewer": "tester",
        "note": None,
        "created_at": now(),
        **extra,
    }


def add_run(path: Path, run_id: str, created_at: Any = None) -> None:
    """Records a completed run (the parent of rows written for it)."""
    with Store(path).transaction() as con:
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, 'completed', '{}', 'hash', '0.1.0', NULL, NULL)",
            [run_id, created_at or now(), now()],
        )


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Starts the review app on a real loopback port (uvicorn in a thread); returns its base URL.
    `serve(settings, host="127.0.0.2")` binds another loopback address."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: ReviewSettings, host: str = "127.0.0.1") -> str:
        port = _free_port()
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("review server did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://{host}:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=5)
