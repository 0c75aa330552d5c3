"""`autointerp bench-outputs` on a tiny setting: explainers fed input, output and both evidence, one table.

The explainer and the judge are one loopback server: it explains from output evidence by naming the set of
words the prompt shows most (else "nothing in particular"), and judges continuations knowing which words
each description means. So the true descriptions of the planted output features must reach output AUROC
1.0 against distractors at 0.5, the output-evidence explainer must find them too, and the output scorer
must skip the planted input feature with its reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.bench.outputs import OutputBenchSettings, scorer_specs
from autointerp.bench.settings import BenchSettings
from autointerp.cli.app import app
from autointerp.config import DEFAULT_EXPLAINER, DEFAULT_SIMULATOR, ExplainerConfig, ScoreConfig
from autointerp.subject import SubjectModel
from tests.end_to_end.test_output_run import explainer_or_judge
from tests.llm.loopback_server import LoopbackServer


@pytest.mark.slow
def test_bench_outputs_compares_evidence_on_both_sides(tmp_path: Path) -> None:
    report = tmp_path / "outputs-bench.md"
    with LoopbackServer([], respond=explainer_or_judge) as server:
        spec = f"openai-compatible:{server.url}/v1#judge"
        args = ["bench-outputs", "--feature", "digits", "--output-feature", "weekdays", "--output-feature", "months"]
        args += ["--explainer", spec, "--scorer", spec, "--max-windows", "48", "--distractors", "1"]
        args += ["--output-prompts", "1", "--output-tokens", "4", "--output", str(report)]
        ran = CliRunner().invoke(app, args)
    assert ran.exit_code == 0, ran.output
    text = report.read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["true description"][-1].strip(" |") == "1.00 (1.00)", text
    assert rows["explainer, output evidence"][-1].strip(" |") == "1.00 (1.00)", text
    assert rows["distractors (chance)"][-1].strip(" |") == "0.50", text
    assert "Output scorer skipped 1 features: a planted feature is not a direction in the model" in text
    assert "- explainer rows: its answers as written" in text  # the top-token list is not weighed here


def test_bench_outputs_names_an_unknown_output_feature() -> None:
    ran = CliRunner().invoke(app, ["bench-outputs", "--output-feature", "planets"])
    assert ran.exit_code != 0
    assert "no planted output feature 'planets'; choose from weekdays" in ran.output


def test_bench_outputs_defaults_to_a_run_s_models() -> None:
    """Without --explainer and --scorer the benchmark uses what a run uses: the trained explainer, the trained
    simulator for simulation and the judge for detection and the output scorer (it had used the untrained
    model for all of them)."""
    settings = OutputBenchSettings()
    assert settings.explainer == ExplainerConfig().model == DEFAULT_EXPLAINER
    defaults = ScoreConfig()
    assert scorer_specs(settings.base) == {
        "simulation": defaults.simulator.model,
        "detection": defaults.judge.model,
        "output": defaults.judge.model,
    }
    assert defaults.simulator.model == DEFAULT_SIMULATOR
    one = BenchSettings(scorer="openai-compatible:http://127.0.0.1:9/v1#m")
    assert set(scorer_specs(one).values()) == {"openai-compatible:http://127.0.0.1:9/v1#m"}


def test_planted_output_features_read_no_token_a_run_leaves_unread(subject: SubjectModel) -> None:
    """The input side of a planted output direction is read as a run reads model features: each window's first
    `AUTO_SKIPPED_TOKENS` (the attention sink, where the residual stream points along these directions most) are
    0 in every window and are not scored."""
    from autointerp.bench.outputs import _cut, output_feature_sets
    from autointerp.outputs.planted import PLANTED_OUTPUTS, planted_output_set
    from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS
    from autointerp.subject.sources import DirectionSource

    settings = BenchSettings(max_windows=48)
    ids, _ = _cut(subject, settings)
    planted = planted_output_set(subject)
    outputs = [p for p in PLANTED_OUTPUTS if p.name in ("weekdays", "months")]
    source = DirectionSource(subject, planted.matrix, planted.hook, [planted.names.index(p.name) for p in outputs])
    for fs in output_feature_sets(subject, source, outputs, ids, settings):
        assert fs.heldout and all(w.unread == AUTO_SKIPPED_TOKENS for w in fs.heldout)
        assert all(e["activations"][:AUTO_SKIPPED_TOKENS] == [0.0] * AUTO_SKIPPED_TOKENS for e in fs.explain)
