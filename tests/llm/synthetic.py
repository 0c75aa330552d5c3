"""A run with synthetic features and exemplars in a real DuckDB store, and a server that explains them.

Feature `synthetic/mlp.0/<i>` fires on the word `word<i>`; `explaining_reply` answers an explain
request with `the word word<i>.`, a deterministic function of the prompt, so runs can be compared.
"""

from __future__ import annotations

import re
from pathlib import Path

from autointerp.config import RunConfig, load_config
from autointerp.store.database import Store
from tests.llm.loopback_server import Received, Reply, openai_completion


def synthetic_feature_id(index: int) -> str:
    return f"synthetic/mlp.0/{index}"


def write_synthetic_run(
    store: Store, run_id: str, count: int, exemplars_per_feature: int = 3, score_windows: int = 0
) -> None:
    """Stores `count` live features, each with `exemplars_per_feature` explain-split exemplars and
    `score_windows` held-out ones (half top windows that fire on the feature's word, half random)."""
    store.migrate()
    store.start_run(run_id, {}, "synthetic", "test", None)
    features, exemplars = [], []
    for index in range(count):
        fid = synthetic_feature_id(index)
        features.append(
            {
                "run_id": run_id,
                "id": fid,
                "model": "synthetic",
                "hook": "mlp.0",
                "kind": "mlp",
                "idx": index,
                "max_activation": 4.0,
                "mean_activation": 0.1,
                "density": 0.01,
                "tokens": 1000,
                "dead": False,
            }
        )
        for rank in range(exemplars_per_feature):
            tokens = ["The", " quick", f" word{index}", " jumps", " over", f" fence{rank}", "."]
            activations = [0.0, 0.0, 4.0 - rank, 0.0, 0.0, 0.0, 0.0]
            exemplars.append(
                {
                    "run_id": run_id,
                    "feature_id": fid,
                    "kind": "top",
                    "rank": rank,
                    "doc_id": rank,
                    "token_offset": 0,
                    "token_ids": list(range(len(tokens))),
                    "tokens": tokens,
                    "activations": activations,
                    "max_activation": max(activations),
                    "split": "explain",
                }
            )
        for rank in range(score_windows):
            fires = rank % 2 == 0
            # the word after two tokens: a run reading the model leaves each window's first two unread
            tokens = ["A", " cat", f" word{index}" if fires else " word", " sat", f" here{rank}", "."]
            activations = [0.0, 0.0, 3.0 if fires else 0.0, 0.0, 0.0, 0.0]
            exemplars.append(
                {
                    "run_id": run_id,
                    "feature_id": fid,
                    "kind": "top" if fires else "random",
                    "rank": 100 + rank,
                    "doc_id": 100 + rank,
                    "token_offset": 0,
                    "token_ids": list(range(len(tokens))),
                    "tokens": tokens,
                    "activations": activations,
                    "max_activation": max(activations),
                    "split": "score",
                }
            )
    store.write_collection(run_id, features, exemplars)


def explaining_reply(delay_s: float = 0.0, prompt_tokens: int = 11, completion_tokens: int = 5):  # type: ignore[no-untyped-def]
    """Returns a `respond` function answering each explain request with the word its feature fires on."""

    def respond(request: Received) -> Reply:
        prompt = request.body["messages"][-1]["content"]
        found = re.search(r"<<\s*(word\d+)>>", prompt)
        word = found.group(1) if found else "nothing"
        return Reply(openai_completion(f"the word {word}.", prompt_tokens, completion_tokens), delay_s=delay_s)

    return respond


def explain_config(tmp_path: Path, server_url: str, *overrides: str) -> RunConfig:
    """Returns a config explaining with the loopback server, caching into `tmp_path`."""
    return load_config(
        None,
        [
            f"store.path='{tmp_path / 'runs.duckdb'}'",
            f"explainer.model='openai-compatible:{server_url}/v1#test-model'",
            f"llm.cache_path='{tmp_path / 'llm-cache.sqlite'}'",
            "explainer.top_tokens_candidate=false",  # the server's calls alone: nothing simulated
            *overrides,
        ],
    )
