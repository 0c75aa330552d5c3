"""End to end: the `label_features` flow on the real model and a real DuckDB file."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import RunConfig
from autointerp.errors import RunIncomplete
from autointerp.store.database import Store
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS
from tests.conftest import tiny_config
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion

TABLES = ("features", "exemplars", "explanations", "scores", "experiments", "llm_calls")


def _counts(store: Store) -> dict[str, int]:
    return {t: store.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in TABLES}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> tuple[RunConfig, str]:
    from autointerp.flows.label_features import label_features

    config = tiny_config(tmp_path_factory.mktemp("flow"))
    run_id = label_features(config.model_dump(mode="json"))
    return config, run_id


def test_flow_fills_every_table_with_consistent_rows(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    store = Store(config.store.path)
    counts = _counts(store)
    assert all(counts[t] > 0 for t in TABLES), counts
    assert store.runs()[0]["status"] == "completed"
    # (child table, parent table, join condition): every child row must find its parent
    links = [
        ("scores c", "explanations p", "c.explanation_id = p.id"),
        ("explanations c", "features p", "c.feature_id = p.id AND c.run_id = p.run_id"),
        ("experiments c", "explanations p", "c.explanation_id = p.id"),
        ("llm_calls c", "runs p", "c.run_id = p.id"),
        ("exemplars c", "features p", "c.feature_id = p.id AND c.run_id = p.run_id"),
    ]
    orphans = {
        f"{child} without {parent}": f"SELECT count(*) AS n FROM {child} LEFT JOIN {parent} ON {on} WHERE p.id IS NULL"
        for child, parent, on in links
    }
    for name, sql in orphans.items():
        assert store.query(sql)[0]["n"] == 0, name
    features = store.features(run_id)
    assert [f.idx for f in features] == [5, 400, 1201]
    assert {f.id for f in features} == {f"smollm2-135m/mlp.15/{i}" for i in (5, 400, 1201)}


def test_every_stage_logged_its_llm_calls(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    store = Store(config.store.path)
    calls = store.query("SELECT * FROM llm_calls WHERE run_id = ?", [run_id])
    assert (
        {"explain", "simulate", "propose"} <= {c["role"] for c in calls} <= {"explain", "simulate", "propose", "revise"}
    )
    for call in calls:
        assert call["request"] and call["latency_s"] > 0 and call["input_tokens"] > 0
        assert call["error"] is not None or call["response"] is not None
    explanations = store.explanations(run_id)
    call_ids = {c["id"] for c in calls}
    assert all(e["llm_call_id"] in call_ids for e in explanations)


def test_scores_are_correlations_with_per_window_details(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    scores = Store(config.store.path).scores(run_id, "correlation_top_and_random")
    assert scores
    for score in scores:
        assert score["value"] is None or -1.0 <= score["value"] <= 1.0
        windows = json.loads(score["details"])["windows"]
        assert windows and all(w["unread"] == AUTO_SKIPPED_TOKENS for w in windows)  # MLP neurons skip the sink


def test_experiments_record_prediction_measurement_and_verdict(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    experiments = Store(config.store.path).experiments(run_id)
    assert {x["kind"] for x in experiments} <= {"input", "minimal_pair", "ablation", "steering"}
    assert {"ablation", "steering"} <= {x["kind"] for x in experiments}, "they need no parseable LLM answer"
    for experiment in experiments:
        assert experiment["verdict"] in {"supports", "refutes", "inconclusive"}
        assert experiment["spec"] and experiment["predicted"] and experiment["measured"]


def test_the_run_leaves_the_review_apps_list_index_current(finished_run: tuple[RunConfig, str]) -> None:
    from autointerp.review.queries import ReviewQueries

    config, _ = finished_run
    store = Store(config.store.path)
    listed = store.query("SELECT count(DISTINCT feature_id) AS n FROM feature_list_index")[0]["n"]
    assert listed == len(store.query("SELECT DISTINCT id FROM features WHERE NOT dead"))
    lines: list[str] = []
    assert not ReviewQueries(store).check_index(lines.append)  # `autointerp review` has nothing to build
    assert lines == ["feature list index: up to date"]


def test_running_the_same_flow_again_adds_no_rows(finished_run: tuple[RunConfig, str]) -> None:
    from autointerp.flows.label_features import label_features

    config, run_id = finished_run
    store = Store(config.store.path)
    before = _counts(store)
    assert label_features(config.model_dump(mode="json")) == run_id
    assert _counts(store) == before
    assert len(store.runs()) == 1


def test_show_prints_the_run_sorted_by_score(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    result = CliRunner().invoke(app, ["show", "--db", str(config.store.path)])
    assert result.exit_code == 0, result.output
    assert run_id in result.output and "smollm2-135m/mlp.15/" in result.output
    scores = Store(config.store.path).explanation_table(run_id, "correlation_top_and_random")
    values = [s["score"] for s in scores if s["score"] is not None]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("features.layer=99", "layer 99 does not exist"),
        ("features.indices=[99999]", "neuron index 99999 does not exist"),
        ("subject.model=/nonexistent/model.gguf", "GGUF file /nonexistent/model.gguf does not exist"),
        ("features.lyer=3", "unknown config key 'features.lyer'"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path: Path, prefect_harness: None, override: str, message: str) -> None:
    result = CliRunner().invoke(app, ["run", "-s", f"store.path='{tmp_path / 'x.duckdb'}'", "-s", override])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_input_inside_the_flow_prints_one_line_and_no_prefect_traceback(tmp_path: Path) -> None:
    """What a user sees in a terminal: Prefect's own logs (stderr) included, which CliRunner misses."""
    command = [sys.executable, "-m", "autointerp", "run", "-s", f"store.path='{tmp_path / 'x.duckdb'}'"]
    result = subprocess.run([*command, "-s", "features.layer=99"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip()
    assert output == "error: layer 99 does not exist: smollm2-135m has layers 0..29", output


def test_empty_corpus_is_one_line_error(tmp_path: Path, prefect_harness: None) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = CliRunner().invoke(
        app, ["run", "-s", f"store.path='{tmp_path / 'x.duckdb'}'", "-s", f"corpus.source='{empty}'"]
    )
    assert result.exit_code == 1
    assert "produced no windows" in result.output
    assert not (tmp_path / "x.duckdb").exists()  # caught by the preflight: no run was started


def _echo_marked(request: Received) -> Reply:
    """Explains a feature as the token its prompt marks most often (a deterministic explainer)."""
    from collections import Counter

    prompt = request.body["messages"][-1]["content"]
    marked = Counter(t.strip() for t in re.findall(r"<<(.+?)>>", prompt))
    token = marked.most_common(1)[0][0] if marked else "nothing"
    return Reply(openai_completion(f"the token {token}.", 11, 5))


def test_a_run_whose_explainer_is_down_fails_and_a_rerun_explains_every_feature(
    tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autointerp.flows.label_features import label_features

    monkeypatch.setenv("AUTOINTERP_LLM_MAX_RETRIES", "0")
    quiet = ("score.methods=['embedding']", "experiments.lowest_n=0", "experiments.on_disagreement=false")
    down = tiny_config(tmp_path, "explainer.model='openai-compatible:http://127.0.0.1:1/v1#m'", *quiet)
    with pytest.raises(RunIncomplete) as stopped:
        label_features(down.model_dump(mode="json"))
    assert stopped.value.status == "failed" and "explain: 0/3 done, 3 failed" in str(stopped.value)
    assert "Rerun the same command to resume" in str(stopped.value)
    store = Store(down.store.path)
    [run] = store.runs()
    assert run["status"] == "failed" and store.explanations(run["id"]) == []
    with LoopbackServer([], respond=_echo_marked) as server:
        up = tiny_config(tmp_path, f"explainer.model='openai-compatible:{server.url}/v1#m'", *quiet)
        assert up.resolved_run_id() != down.resolved_run_id()  # another explainer is another run...
        resumed = down.model_copy(update={"explainer": up.explainer})
        resumed_data = resumed.model_dump(mode="json")
        resumed_data["run_id"] = run["id"]  # ...so resume the failed one by its id
        assert label_features(resumed_data) == run["id"]
    explained = store.explanations(run["id"])
    assert len({e["feature_id"] for e in explained}) == 3 == len(explained)
    assert store.runs()[0]["status"] == "completed"
    failed = store.query("SELECT count(*) AS n FROM llm_calls WHERE role = 'explain' AND error IS NOT NULL")
    assert failed[0]["n"] == 3 * 3  # the first run's attempts (1 + explainer.retries each) stay recorded


def test_run_status_is_completed_only_when_every_stage_finished() -> None:
    from autointerp.flows.label_features import run_status
    from autointerp.pipeline.pool import StageResult

    done = StageResult("explain", total=3, done=3)
    assert run_status([done, StageResult("score", total=3, done=3)]) == ("completed", None)
    partial = StageResult("explain", total=3, done=2, failed={"f": "LLMError: timeout"})
    status, message = run_status([partial])
    assert status == "incomplete" and message is not None and "explain: 2/3 done, 1 failed" in message
    assert run_status([StageResult("explain", total=3, not_reached=3, stopped="budget")])[0] == "failed"


def test_investigate_obeys_the_run_budget(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    store = Store(config.store.path)
    before = store.query("SELECT count(*) AS n FROM llm_calls")[0]["n"]
    investigated = {
        r["feature_id"] for r in store.query("SELECT DISTINCT feature_id FROM llm_calls WHERE role = 'propose'")
    }
    feature = next(f.id for f in store.features(run_id) if f.id not in investigated)  # one with rounds left
    result = CliRunner().invoke(
        app,
        ["investigate", feature, "--run", run_id, "-s", f"store.path='{config.store.path}'", "-s", "llm.max_tokens=1"],
    )
    assert result.exit_code == 1, result.output
    assert "reached its token budget" in result.output and "llm.max_tokens=1" in result.output
    assert store.query("SELECT count(*) AS n FROM llm_calls")[0]["n"] == before  # not one call made


def test_no_window_is_kept_twice_or_on_both_sides_of_the_split(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    store = Store(config.store.path)
    repeated = store.query(
        "SELECT feature_id, doc_id, token_offset, count(*) AS n, count(DISTINCT split) AS splits FROM exemplars "
        "WHERE run_id = ? GROUP BY ALL HAVING n > 1",
        [run_id],
    )
    assert repeated == []
    scores = store.scores(run_id, "correlation_top_and_random")
    assert all("non_firing_windows" in json.loads(s["details"]) for s in scores)


def test_the_flow_stores_each_features_neighbours_once(finished_run: tuple[RunConfig, str]) -> None:
    config, run_id = finished_run
    store = Store(config.store.path)
    for feature in store.features(run_id):
        cosine = store.neighbours(run_id, feature.id, "cosine")
        assert [n.rank for n in cosine] == list(range(1, config.neighbours.k + 1))  # among all 1536 of layer 15
        assert all(n.other.startswith("smollm2-135m/mlp.15/") and n.other != feature.id for n in cosine)
    rows = store.query("SELECT kind, count(*) AS n FROM neighbours WHERE run_id = ? GROUP BY kind", [run_id])
    counts = {r["kind"]: r["n"] for r in rows}
    assert counts["cosine"] == 3 * config.neighbours.k and counts.get("cooccurrence", 0) <= 3 * 2


def test_the_flow_stores_output_evidence_that_show_the_feature_page_and_the_export_carry(
    finished_run: tuple[RunConfig, str],
) -> None:
    """The default run (outputs on) stores each live neuron's direct-path and steering tokens once; `show`,
    the review app's feature page and the JSONL export carry them; a lost row is recomputed alone, the same."""
    from fastapi.testclient import TestClient

    from autointerp.outputs.stage import run_outputs
    from autointerp.review import ReviewSettings
    from autointerp.review.app import create_app

    config, run_id = finished_run
    store = Store(config.store.path)
    evidence = store.output_evidence_by_feature(run_id)
    assert set(evidence) == {f.id for f in store.features(run_id) if f.live}
    for item in evidence.values():
        assert item.has_output and len(item.promoted) == len(item.steer_raised) == config.outputs.top_k
        assert [e.value for e in item.promoted] == sorted((e.value for e in item.promoted), reverse=True)
        assert item.suppressed[0].value < 0 < item.promoted[0].value and item.steer_lowered[0].value < 0
        assert (item.steer_scale, item.steer_prompts) == (config.outputs.steer_scale, config.outputs.steer_prompts)
    feature_id, item = sorted(evidence.items())[0]
    shown = CliRunner().invoke(app, ["show", "--db", str(config.store.path)])
    assert shown.exit_code == 0 and "promotes" in shown.output, shown.output
    with TestClient(create_app(ReviewSettings(db=config.store.path)), base_url="http://127.0.0.1") as client:
        page = client.get("/feature", params={"id": feature_id})
    assert page.status_code == 200 and "Output: what it writes" in page.text
    assert "raised next tokens" in page.text and f"{item.promoted[0].value:.2f}" in page.text
    exported = CliRunner().invoke(app, ["export-run", "--db", str(config.store.path), "-f", "jsonl"])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.output.splitlines() if line.startswith("{")]
    line = next(x for x in lines if x["feature_id"] == feature_id)
    assert line["output"]["pos_str"] == [e.token for e in item.promoted]
    assert line["output"]["neg_values"] == [e.value for e in item.suppressed]
    # a run interrupted after some features: only the missing one is computed again, to the same values
    with store.transaction() as con:
        con.execute("DELETE FROM output_evidence WHERE run_id = ? AND feature_id = ?", [run_id, feature_id])
    others = store.query("SELECT feature_id, created_at FROM output_evidence WHERE run_id = ?", [run_id])
    result = run_outputs(config, store, run_id)
    assert result.complete and result.done == result.total == len(evidence)
    again = store.output_evidence(run_id, feature_id)
    assert again is not None and [e.token_id for e in again.promoted] == [e.token_id for e in item.promoted]
    assert [e.token_id for e in again.steer_raised] == [e.token_id for e in item.steer_raised]
    after = store.query("SELECT feature_id, created_at FROM output_evidence WHERE run_id = ?", [run_id])
    assert {r["feature_id"]: r["created_at"] for r in after if r["feature_id"] != feature_id} == {
        r["feature_id"]: r["created_at"] for r in others
    }
