"""Shared by the distributed tests: the campaign config, a deterministic explainer, row comparison."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from autointerp.config import RunConfig
from autointerp.store.database import Store
from tests.conftest import tiny_config
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion

__all__ = ["LoopbackServer", "campaign_config", "echo_marked", "run_rows", "write_toml"]


def echo_marked(request: Received) -> Reply:
    """Explains a feature as the token its prompt marks most often (a deterministic explainer)."""
    prompt = request.body["messages"][-1]["content"]
    marked = Counter(t.strip() for t in re.findall(r"<<(.+?)>>", prompt))
    token = marked.most_common(1)[0][0] if marked else "nothing"
    return Reply(openai_completion(f"the token {token}.", 11, 5))


def campaign_config(folder: Path, server_url: str, *overrides: str) -> RunConfig:
    """The tiny config with a deterministic explainer, embedding scores, and batches of 8 windows (6
    batches: 4 collection shards of 2, 2, 1 and 1)."""
    return tiny_config(
        folder,
        f"explainer.model='openai-compatible:{server_url}/v1#m'",
        "explainer.retries=0",
        "score.methods=['embedding']",
        "experiments.lowest_n=0",
        "experiments.on_disagreement=false",
        "corpus.batch_size=8",
        "llm.cache=false",
        *overrides,
    )


def write_toml(config: RunConfig, path: Path) -> Path:
    """Writes a config as TOML (what `autointerp run -c` reads): a table per section, JSON values."""

    def lines(prefix: str, table: dict[str, Any]) -> list[str]:
        out = [f"[{prefix}]"] if prefix else []
        tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        out += [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
        for key, sub in tables:
            out += lines(f"{prefix}.{key}" if prefix else key, sub)
        return out

    path.write_text("\n".join(lines("", config.model_dump(mode="json", exclude_none=True))) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def assert_same_rows(rows: dict[str, list[Any]], expected: dict[str, list[Any]]) -> None:
    """Asserts two runs' `run_rows` are equal, table by table, with row counts first: a diff of whole tables
    is cut short by pytest and can read like a missing row when a value differs."""
    assert rows.keys() == expected.keys()
    for table, wanted in expected.items():
        assert len(rows[table]) == len(wanted), f"{table}: {len(rows[table])} rows, expected {len(wanted)}"
        for got, want in zip(rows[table], wanted, strict=True):
            assert got == want, f"{table}: a row differs"


def run_rows(store: Store, run_id: str) -> dict[str, list[Any]]:
    """Returns a run's rows, table by table, with ids, timestamps and latencies left out and ids of
    explanations replaced by their feature, sorted: what must be equal between two runs."""
    feature_of = {r["id"]: r["feature_id"] for r in store.explanations(run_id)}

    def rows(sql: str, drop: tuple[str, ...] = ()) -> list[str]:
        out = []
        for row in store.query(sql, [run_id]):
            for name in ("run_id", "id", "created_at", "latency_s", *drop):
                row.pop(name, None)
            for name in ("explanation_id", "parent_id"):
                if row.get(name) is not None:
                    row[name] = feature_of.get(row[name], row[name])
            for name in ("details", "request", "spec", "measured", "predicted"):
                if isinstance(row.get(name), str):
                    data = json.loads(row[name])
                    if isinstance(data, dict):
                        for key in ("llm_call_ids", "distractor_explanation_id"):
                            data.pop(key, None)
                    row[name] = data
            out.append(json.dumps({k: _plain(v) for k, v in row.items()}, sort_keys=True, default=str))
        return sorted(out)

    return {
        "features": rows("SELECT * FROM features WHERE run_id = ?"),
        "exemplars": rows("SELECT * FROM exemplars WHERE run_id = ?"),
        "explanations": rows("SELECT * FROM explanations WHERE run_id = ?", ("llm_call_id",)),
        "scores": rows("SELECT * FROM scores WHERE run_id = ?"),
        "experiments": rows("SELECT * FROM experiments WHERE run_id = ?"),
        "llm_calls": rows("SELECT * FROM llm_calls WHERE run_id = ?"),
        "neighbours": rows("SELECT * FROM neighbours WHERE run_id = ?"),  # co-occurrence: from merged shard logs
    }
