"""Imports of other tools' explanations (CSV, neuron-explainer, delphi) into a real DuckDB run, scored by
our scorers beside ours; exports in Neuronpedia's record format and as JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import load_config
from autointerp.interop import ImportFileError, export_run, import_explanations
from autointerp.review.queries import ReviewQueries
from autointerp.score.stage import run_score
from autointerp.store.database import Store, now
from tests.conftest import session_of
from tests.interop.interop_runs import FIXTURES

RUN = "run-interop"
MONTHS = ["We", " met", " in", " March"]
CODE = ["The", " compiler", " failed", "."]


def _seed(store: Store) -> None:
    """A collected run: two MLP neurons of layer 15 with exemplars, and one explanation of ours."""
    store.migrate()
    store.start_run(RUN, {}, "hash", "test", None)
    features, exemplars = [], []
    for index, fires in ((417, True), (12, False)):
        fid = f"smollm2-135m/mlp.15/{index}"
        features.append({"run_id": RUN, "id": fid, "model": "smollm2-135m", "hook": "mlp.15", "kind": "neuron",
                         "idx": index, "max_activation": 1.0, "density": 0.25, "dead": False})  # fmt: skip
        for kind, (tokens, acts) in (("top", (MONTHS, [0, 0, 0, 1.0 if fires else 0])), ("random", (CODE, [0] * 4))):
            for rank, split in enumerate(("explain", "score")):
                exemplars.append({"run_id": RUN, "feature_id": fid, "kind": kind, "rank": rank, "tokens": tokens,
                                  "activations": acts, "max_activation": max(acts), "split": split})  # fmt: skip
    ours = {"id": "ours-417", "run_id": RUN, "feature_id": "smollm2-135m/mlp.15/417", "iteration": 0,
            "text": "compilers", "explainer": "local:smollm2-135m", "prompt_hash": "abc",
            "created_at": now()}  # fmt: skip
    store.write_results({"features": features, "exemplars": exemplars, "explanations": [ours]})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "interop.duckdb")
    _seed(store)
    return store


def _files(tmp_path: Path) -> dict[str, Path]:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text('feature_id,explanation\nsmollm2-135m/mlp.15/417,"names of months, like March"\n12,code\n')
    # written by neuron-explainer's own code (tests/fixtures/interop/make_neuron_explainer_fixture.py)
    return {"csv": csv_file, "neuron-explainer": FIXTURES / "neuron-explainer" / "15" / "417.jsonl"}


def test_imports_are_scored_beside_ours_and_exported(store: Store, tmp_path: Path) -> None:
    files = _files(tmp_path)
    added = {tool: import_explanations(store, RUN, tool, path).added for tool, path in files.items()}
    assert added == {"csv": 2, "neuron-explainer": 1}
    assert import_explanations(store, RUN, "csv", files["csv"]).added == 0  # importing again adds nothing
    rows = store.query(
        "SELECT feature_id, explainer, prompt_hash, text FROM explanations WHERE explainer LIKE 'import:%'"
    )
    assert {(r["explainer"], r["text"]) for r in rows} >= {("import:neuron-explainer", "months of the year")}
    assert {r["prompt_hash"] for r in rows} == {"import"}
    assert {r["feature_id"] for r in rows if r["text"] == "code"} == {"smollm2-135m/mlp.15/12"}  # a bare index

    db = store.path
    config = load_config(None, [f"store.path='{db}'", 'score.methods=["embedding"]'])
    assert run_score(config, store, RUN, session_of(config, store, RUN)).done == 4
    scores = store.query(
        "SELECT e.explainer, e.text, s.value FROM scores s JOIN explanations e ON s.explanation_id = e.id "
        "WHERE s.metric = 'embedding_auroc' AND e.feature_id LIKE '%/417'"
    )
    by_text = {r["text"]: r["value"] for r in scores}
    assert set(by_text) == {"compilers", "names of months, like March", "months of the year"}
    assert by_text["months of the year"] > by_text["compilers"]  # same scorer, same windows, side by side

    records = json.loads(export_run(store, RUN, "neuronpedia"))["explanations"]
    months = next(r for r in records if r["description"] == "months of the year")
    assert (months["modelId"], months["source"], months["index"]) == ("smollm2-135m", "15-mlp", 417)
    assert months["explanationModelName"] == "import:neuron-explainer"
    scores = months["scores"]
    assert [s["explanationScoreTypeName"] for s in scores] == ["embedding_auroc"] and scores[0]["value"] == 1.0
    lines = [json.loads(line) for line in export_run(store, RUN, "jsonl").decode().splitlines()]
    assert len(lines) == 4
    ours = next(line for line in lines if line["explanation_id"] == "ours-417")
    assert set(ours["scores"]) == {"embedding_auroc", "embedding_auroc_distractor"}
    assert ours["feature"]["density"] == 0.25 and len(ours["exemplars"]) == 4
    assert ours["exemplars"][0]["tokens"] and ours["exemplars"][0]["activations"]


def test_a_kept_list_of_the_strongest_tokens_is_exported_as_written_by_top_tokens(store: Store) -> None:
    """The explain stage kept `the word "March"` (its details' `best_of`) over the explainer's answer: exports name
    its writer `top-tokens`, not the explainer whose answer it beat."""
    best_of = {"k": 1, "chosen": 1, "candidates": [{"text": "code", "source": "explainer"},
                                                   {"text": 'the word "March"', "source": "top tokens"}]}  # fmt: skip
    listed = {"id": "listed-12", "run_id": RUN, "feature_id": "smollm2-135m/mlp.15/12", "iteration": 0,
              "text": 'the word "March"', "explainer": "local:smollm2-135m", "prompt_hash": "abc",
              "created_at": now(), "details": json.dumps({"best_of": best_of})}  # fmt: skip
    store.write_results({"explanations": [listed]})
    records = json.loads(export_run(store, RUN, "neuronpedia"))["explanations"]
    writers = {r["description"]: r["explanationModelName"] for r in records}
    assert writers == {"compilers": "local:smollm2-135m", 'the word "March"': "top-tokens"}
    lines = [json.loads(line) for line in export_run(store, RUN, "jsonl").decode().splitlines()]
    assert {line["text"]: line["explainer"] for line in lines} == {
        "compilers": "local:smollm2-135m",
        'the word "March"': "top-tokens",
    }


def test_unknown_features_abort_the_whole_import(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("feature,text\nsmollm2-135m/mlp.15/417,fine\nsmollm2-135m/mlp.3/9,unknown\nnope,unknown too\n")
    with pytest.raises(ImportFileError, match=rf"2 of 3 explanations .* run {RUN} does not have .*nothing imported"):
        import_explanations(store, RUN, "csv", bad)
    neurons = tmp_path / "ne"
    for layer in (15, 9):
        (neurons / str(layer)).mkdir(parents=True)
        record = {"neuron_id": {"layer_index": layer, "neuron_index": 417},
                  "scored_explanations": [{"explanation": f"layer {layer}"}]}  # fmt: skip
        (neurons / str(layer) / "417.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ImportFileError, match=r"1 of 2 explanations .*layer 9 neuron 417.*neuron at mlp\.9"):
        import_explanations(store, RUN, "neuron-explainer", neurons)
    assert not store.query("SELECT * FROM explanations WHERE explainer LIKE 'import:%'")  # nothing half-imported
    unquoted = tmp_path / "unquoted.csv"  # the text after the comma was dropped without a word
    unquoted.write_text("feature,text\nsmollm2-135m/mlp.15/417,fine\nsmollm2-135m/mlp.15/417,cats, dogs and birds\n")
    with pytest.raises(ImportFileError, match=r"unquoted\.csv:3 has 3 fields where the header has 2; quote a field"):
        import_explanations(store, RUN, "csv", unquoted)
    no_header = tmp_path / "no_header.csv"
    no_header.write_text("a,b\n1,2\n")
    with pytest.raises(ImportFileError, match="needs a header with a feature column"):
        import_explanations(store, RUN, "csv", no_header)
    jsonl = tmp_path / "labels.jsonl"  # JSON lines read as the default CSV: say which format to pass
    jsonl.write_text(json.dumps({"feature_id": "smollm2-135m/mlp.15/417", "explanation": "months"}) + "\n")
    with pytest.raises(ImportFileError, match=r"labels\.jsonl is JSON, not CSV; pass --from neuron-explainer"):
        import_explanations(store, RUN, "csv", jsonl)


def test_cli_import_and_export(store: Store, tmp_path: Path) -> None:
    files = _files(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(files["csv"]), "--from", "csv", "--db", str(store.path)])
    assert result.exit_code == 0, result.output
    assert f"imported 2 explanations into run {RUN}" in result.output
    assert "feature list index built" in result.output  # as a run does: the next review page needs no rebuild
    assert not ReviewQueries(store).check_index()
    bad = tmp_path / "bad.csv"
    bad.write_text("feature_id,explanation\nx/y/1,nothing\n")
    result = runner.invoke(app, ["import", str(bad), "--db", str(store.path)])
    assert result.exit_code == 1 and "1 of 1 explanations" in result.output
    bad.write_text("feature_id,explanation\n12,names of months, like March\n")
    result = runner.invoke(app, ["import", str(bad), "--db", str(store.path)])
    assert result.exit_code == 1 and "bad.csv:2 has 3 fields where the header has 2" in result.output
    out = tmp_path / "np.json"
    result = runner.invoke(app, ["export-run", "--db", str(store.path), "-f", "neuronpedia", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["explanations"]) == 3
    result = runner.invoke(app, ["export-run", "--db", str(store.path), "-f", "xml"])
    assert result.exit_code == 1 and "unknown export format 'xml'" in result.output


def test_imported_explanations_do_not_stand_in_for_ours(store: Store, tmp_path: Path) -> None:
    from autointerp.explain.stage import run_explain

    import_explanations(store, RUN, "csv", _files(tmp_path)["csv"])  # both features get an imported one
    config = load_config(
        None, [f"store.path='{store.path}'", "explainer.max_tokens=8", "explainer.retries=0", "llm.cache=false"]
    )
    result = run_explain(config, store, RUN, session_of(config, store, RUN))
    assert result.total == 1  # feature 12 still gets our explanation; 417 already has ours
    assert store.query("SELECT 1 FROM llm_calls WHERE role = 'explain' AND feature_id = 'smollm2-135m/mlp.15/12'")
