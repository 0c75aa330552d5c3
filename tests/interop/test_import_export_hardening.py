"""Imports that land only on the feature the other tool named (hook and kind as well as index), refuse
placeholders, read delphi's scores; Neuronpedia exports in the shapes its client reads; input the
import/export commands must survive (a BOM, a huge field, an output folder that does not exist).

The delphi, neuron-explainer and Neuronpedia fixtures under tests/fixtures/interop/ were written or
parsed by those tools' own code (the make_*_fixture.py scripts there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.interop import ImportFileError, import_explanations
from autointerp.interop.imports import delphi_targets
from autointerp.store.database import Store
from tests.interop.interop_runs import FIXTURES, feature_id, seed_run

RUN = "run-hooks"
runner = CliRunner()


def _store(tmp_path: Path, kind: str, hook: str, indices: tuple[int, ...] = (417, 12)) -> Store:
    store = Store(tmp_path / f"{kind}-{hook}.duckdb")
    seed_run(store, RUN, kind, hook, indices)
    return store


def _import(store: Store, path: Path, tool: str) -> Any:
    return runner.invoke(app, ["import", str(path), "--from", tool, "--db", str(store.path)])


def _imported(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT feature_id, text FROM explanations WHERE explainer LIKE 'import:%' ORDER BY text")


def test_a_residual_delphi_latent_never_lands_on_an_mlp_neuron(tmp_path: Path) -> None:
    store = _store(tmp_path, "neuron", "mlp.15", (1194, 417, 12))
    delphi = tmp_path / "explanations"
    delphi.mkdir()
    (delphi / "layers.15_latent1194.txt").write_text(json.dumps("commas in lists"))
    result = _import(store, delphi, "delphi")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: 1 of 1 explanations")
    assert "delphi hookpoint layers.15, latent 1194" in line and "blocks.15.hook_resid_post" in line
    assert "neuron features at mlp.15" in line and "nothing imported" in line
    assert not _imported(store)
    # delphi's MLP hookpoint names dictionary latents of the MLP, not its neurons either
    result = _import(store, FIXTURES / "delphi-mlp", "delphi")
    assert result.exit_code == 1 and "layers.15.mlp" in result.output and "mlp_out" in result.output
    assert not _imported(store)


def test_delphi_hookpoints_match_the_hook_and_kind_autointerp_stores(tmp_path: Path) -> None:
    from autointerp.subject.sparsify import sparsify_hook_names

    for hookpoint in ("layers.15", "layers.15.mlp", "model.layers.3", "gpt_neox.layers.3.mlp"):
        targets = delphi_targets(hookpoint) or ()
        assert ("sae", sparsify_hook_names(hookpoint, transcode=False)[0]) in targets
        assert ("transcoder", sparsify_hook_names(hookpoint, transcode=True)[0]) in targets
    assert delphi_targets("layers.15.attn") is None

    residual = _store(tmp_path, "sae", "blocks.15.hook_resid_post")
    result = _import(residual, FIXTURES / "delphi-mlp", "delphi")
    assert result.exit_code == 1 and "sae features at blocks.15.hook_resid_post" in result.output
    mlp_out = _store(tmp_path, "sae", "blocks.15.hook_mlp_out")
    assert _import(mlp_out, FIXTURES / "delphi-mlp", "delphi").exit_code == 0
    assert [r["feature_id"] for r in _imported(mlp_out)] == [feature_id("sae", 15, 12)]
    transcoder = _store(tmp_path, "transcoder", "blocks.15.mlp.hook_in")
    assert _import(transcoder, FIXTURES / "delphi-mlp" / "explanations", "delphi").exit_code == 0
    assert [r["feature_id"] for r in _imported(transcoder)] == [feature_id("transcoder", 15, 12)]


def test_delphi_placeholders_are_refused_and_its_scores_imported(tmp_path: Path) -> None:
    store = _store(tmp_path, "sae", "blocks.15.hook_resid_post", (417, 12, 5))
    result = _import(store, FIXTURES / "delphi", "delphi")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"imported 2 explanations into run {RUN}" in output
    assert "placeholders refused: 1" in output and "4 delphi scores added" in output
    assert "delphi scores skipped: embedding (not per-example classifications)" in output
    assert [(r["feature_id"], r["text"]) for r in _imported(store)] == [
        (feature_id("sae", 15, 417), "calendar months, like March"),
        (feature_id("sae", 15, 12), "programming words"),
    ]
    scores = store.query(
        "SELECT s.scorer, s.metric, s.value, s.scorer_model FROM scores s JOIN explanations e "
        "ON s.explanation_id = e.id WHERE e.feature_id = ? ORDER BY s.metric",
        [feature_id("sae", 15, 417)],
    )
    expected = json.loads((FIXTURES / "delphi_expected.json").read_text())["scores"]  # delphi's own analysis
    by_metric = {r["metric"]: r["value"] for r in scores}
    assert {r["scorer"] for r in scores} == {"import:delphi:detection", "import:delphi:fuzz"}
    for scorer in ("detection", "fuzz"):
        numbers = expected[f"{scorer}/layers.15_latent417"]
        assert by_metric[f"import:delphi:{scorer}_balanced_accuracy"] == pytest.approx(numbers["accuracy"])
        assert by_metric[f"import:delphi:{scorer}_auroc"] == pytest.approx(numbers["auc"])
    assert {r["scorer_model"] for r in scores} == {"delphi"}
    again = import_explanations(store, RUN, "delphi", FIXTURES / "delphi")
    assert (again.added, again.scores_added, again.refused) == (0, 0, 1)  # importing again adds nothing


def test_neuron_explainer_names_neurons_only(tmp_path: Path) -> None:
    sae = _store(tmp_path, "sae", "blocks.15.hook_resid_post")
    with pytest.raises(ImportFileError, match=r"2 of 2 .*layer 15 neuron (417|12).*neuron at mlp\.15.*sae features"):
        import_explanations(sae, RUN, "neuron-explainer", FIXTURES / "neuron-explainer")
    neurons = _store(tmp_path, "neuron", "mlp.15")
    assert import_explanations(neurons, RUN, "neuron-explainer", FIXTURES / "neuron-explainer").added == 2
    assert {r["feature_id"] for r in _imported(neurons)} == {
        feature_id("neuron", 15, 417),
        feature_id("neuron", 15, 12),
    }


def test_csv_placeholders_kind_and_hook_columns(tmp_path: Path) -> None:
    store = _store(tmp_path, "neuron", "mlp.15")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "feature_id,explanation,kind,hook\n417,months,neuron,mlp.15\n12,   ,neuron,mlp.15\n"
        "12,Explanation could not be parsed.,,\n"
    )
    result = _import(store, labels, "csv")
    assert result.exit_code == 0, result.output
    assert "imported 1 explanations" in result.output and "placeholders refused: 2" in result.output
    wrong_kind = tmp_path / "wrong_kind.csv"
    wrong_kind.write_text("feature,text,kind\nsmollm2-135m/mlp.15/417,months,sae\n")
    result = _import(store, wrong_kind, "csv")
    assert result.exit_code == 1 and "sae at any hook" in result.output and "neuron features at mlp.15" in result.output
    empty = tmp_path / "empty.csv"
    empty.write_text("feature_id,explanation\n417,Explanation could not be parsed.\n")
    result = _import(store, empty, "csv")
    assert result.exit_code == 1 and "placeholders refused: 1" in result.output and "nothing imported" in result.output
    assert [r["text"] for r in _imported(store)] == ["months"]


def test_csv_with_a_byte_order_mark_and_a_huge_field(tmp_path: Path) -> None:
    store = _store(tmp_path, "neuron", "mlp.15")
    bom = tmp_path / "excel.csv"
    bom.write_bytes("feature_id,explanation\r\n417,months\r\n".encode("utf-8-sig"))
    result = _import(store, bom, "csv")
    assert result.exit_code == 0, result.output
    huge = tmp_path / "huge.csv"
    huge.write_text("feature_id,explanation\n12," + "x" * 1_000_000 + "\n")
    result = _import(store, huge, "csv")
    assert result.exit_code == 0, result.output
    assert sorted(len(r["text"]) for r in _imported(store)) == [6, 1_000_000]
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"feature_id,explanation\n417,\xff\xfe months\n")
    result = _import(store, broken, "csv")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "is not UTF-8" in result.output


def test_exports_create_missing_folders(tmp_path: Path) -> None:
    store = Store(tmp_path / "scored.duckdb")
    from tests.interop.interop_runs import seed_scored_run

    seed_scored_run(store, RUN)
    for command, name in ((["export-run", "-f", "neuronpedia"], "np.json"), (["export", "-f", "jsonl"], "r.jsonl")):
        out = tmp_path / "new" / "deeper" / name
        result = runner.invoke(app, [*command, "--db", str(store.path), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for exporter in ("export-run", "export"):  # it said "File exists", not which part of the path is a file
        result = runner.invoke(app, [exporter, "--db", str(store.path), "-o", str(blocker / "x.json")])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert (
            " ".join(result.output.split())
            == f"error: cannot write --out {blocker}/x.json: {blocker} is a file, not a folder"
        )


def _nulls(value: Any, where: str = "") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _nulls(v, f"{where}[{i}]")]
    return []


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_neuronpedia_export_in_the_shape_its_client_reads() -> None:
    from tests.fixtures.interop.make_neuronpedia_example import example_export

    ours = json.loads(example_export())
    committed = json.loads((FIXTURES / "neuronpedia_export.json").read_text())
    assert ours == committed, "the export changed: rerun tests/fixtures/interop/make_neuronpedia_*.py"
    assert not _nulls(ours)
    parsed = json.loads((FIXTURES / "neuronpedia_parsed.json").read_text())  # read by neuronpedia's own code
    assert len(parsed["explanations"]) == len(ours["explanations"]) == 3
    for record, read in zip(ours["explanations"], parsed["explanations"], strict=True):
        assert set(parsed["explanation_fields_read"]) <= set(record)
        assert isinstance(record["index"], int) and isinstance(record["source"], str)
        assert (read["modelId"], read["source"], read["index"], read["text"]) == (
            record["modelId"], record["source"], record["index"], record["description"],
        )  # fmt: skip
        assert (read["method"], read["explainer_model"]) == (record["typeName"], record["explanationModelName"])
        for score in record["scores"]:
            assert set(score) == {"explanationScoreTypeName", "explanationScoreModelName", "value"}
            assert isinstance(score["value"], float) and not score["explanationScoreTypeName"].endswith("_distractor")
    # the undefined detection score (NULL in the store) is left out, not written as null
    assert all(s["explanationScoreTypeName"] == "embedding_auroc" for r in ours["explanations"] for s in r["scores"])
    assert [_without_nulls(body) for body in parsed["upload_bodies"]] == ours["uploads"]
    for upload in ours["uploads"]:
        assert set(upload) == {"modelId", "source", "features"} and 0 < len(upload["features"]) <= 128
        for feature in upload["features"]:
            assert isinstance(feature["index"], int) and isinstance(feature["density"], float)
            assert all(set(e) == {"text", "methodName", "modelName"} for e in feature["explanations"])
            assert all(set(a) == {"tokens", "values"} for a in feature["activations"])


def test_neuronpedia_client_parses_the_export() -> None:
    np_explanation = pytest.importorskip("neuronpedia.np_explanation")
    from tests.fixtures.interop.make_neuronpedia_example import example_export

    for record in json.loads(example_export())["explanations"]:
        explanation = np_explanation.Explanation.from_np_db_json(record)
        assert (explanation.source, explanation.index) == (record["source"], record["index"])


def test_a_row_repeated_in_the_file_is_stored_once_and_counted_as_repeated(tmp_path: Path) -> None:
    """The same CSV row twice was reported as '1 already there' on the file's first import."""
    store = _store(tmp_path, "sae", "blocks.15.hook_resid_post")
    csv = tmp_path / "labels.csv"
    csv.write_text("feature,explanation\n417,calendar months\n417,calendar months\n12,programming words\n")
    first = " ".join(_import(store, csv, "csv").output.split())
    assert f"imported 2 explanations into run {RUN} (0 already there; 1 repeated in the file, stored once)" in first
    again = " ".join(_import(store, csv, "csv").output.split())
    assert f"imported 0 explanations into run {RUN} (3 already there)" in again  # every row: the run has it
    assert len(_imported(store)) == 2
