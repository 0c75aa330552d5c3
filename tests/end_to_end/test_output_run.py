"""The output side in a run, through the CLI: output evidence read by the explainer, the output scorer.

`autointerp run` on planted output features (unembedding directions of weekday and month names) with
`explainer.evidence=output` and `score.methods=['output']`. The explainer is a loopback server that names
the set its prompt's output evidence shows; the judge a loopback server with token probabilities that
knows which words each description means (`tests.score.test_output_scorer.knows_outputs`). So each
explanation must read the output evidence (recorded in its details), score AUROC 1.0 with its distractor
(the other feature's explanation) at chance, and a rerun must add no row. A run on planted input
features with the output scorer skips every feature with the reason and stores no number.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import load_config
from autointerp.outputs.planted import PLANTED_OUTPUTS
from autointerp.score.stage import run_score
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.loopback_server import LoopbackServer, Received, Reply, VLLMResponder, openai_completion
from tests.score.test_output_scorer import knows_outputs

pytestmark = pytest.mark.slow  # loads the subject model and runs whole flows

JUDGE = VLLMResponder(p_yes=knows_outputs)
SETS = {p.name: p for p in PLANTED_OUTPUTS}


def explainer_or_judge(request: Received) -> Reply:
    """Explains from output evidence (names the set whose words the prompt shows most); else judges."""
    prompt = "\n".join(str(m["content"]) for m in request.body["messages"])
    if "raises the scores of" not in prompt and "Here are excerpts" not in prompt:
        return JUDGE(request)  # a judge's prompt, or the backend's probe of what the server gives
    if "raises the scores of" not in prompt:
        return Reply(openai_completion("nothing in particular."))
    counts = {name: sum(prompt.count(w) for w in p.words) for name, p in SETS.items() if name in ("weekdays", "months")}
    best = max(counts, key=lambda name: counts[name])
    return Reply(openai_completion(SETS[best].description.removeprefix("makes the model say ") + "."))


def _args(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("-s", setting)]


def test_a_run_explains_from_output_evidence_and_scores_by_steering(tmp_path: Path, prefect_harness: None) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"On day {i} we walked to the market and bought some bread." for i in range(60)))
    db = tmp_path / "run.duckdb"
    with LoopbackServer([], respond=explainer_or_judge) as server:
        spec = f"openai-compatible:{server.url}/v1#judge"
        settings = [
            "features.kind=planted_output",
            "features.indices=[0, 1]",
            f"corpus.source='{corpus}'",
            f"store.path='{db}'",
            "corpus.max_windows=24",
            "corpus.window_tokens=12",
            "collect.top_k=3",
            "collect.random_windows=2",
            "collect.min_firing_windows=1",
            "outputs.steer_prompts=2",
            f"explainer.model='{spec}'",
            "explainer.evidence=output",
            f"score.judge.model='{spec}'",
            "score.methods=['output']",
            "score.output_prompts=2",
            "score.output_tokens=4",
            "score.output_strength=8",  # x the max over tokens read; the sink's value set it before
            "experiments.lowest_n=0",
            "experiments.on_disagreement=false",
        ]
        ran = CliRunner().invoke(app, ["run", *_args(settings)])
        assert ran.exit_code == 0, ran.output
        again = CliRunner().invoke(app, ["run", *_args(settings)])
        assert again.exit_code == 0, again.output
    store = Store(db)
    run_id = store.runs()[0]["id"]
    explanations = store.explanations(run_id)
    assert sorted(e["text"] for e in explanations) == ["names of months", "names of weekdays"]
    assert all(e["details"] and json.loads(e["details"])["evidence"] == "output" for e in explanations)
    for metric, expected in (("output_auroc", 1.0), ("output_auroc_distractor", 0.5)):
        rows = store.scores(run_id, metric)
        assert [s["value"] for s in rows] == [expected, expected], [json.loads(s["details"]) for s in rows]
    assert len(store.scores(run_id, "output_accuracy")) == 2  # the rerun added none


def test_the_output_scorer_skips_features_that_cannot_be_steered(tmp_path: Path, prefect_harness: None) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"There were {i} cats and {i + 1} dogs in the garden today." for i in range(60)))
    db = tmp_path / "planted.duckdb"
    with LoopbackServer([], respond=explainer_or_judge) as server:
        spec = f"openai-compatible:{server.url}/v1#judge"
        settings = [
            "features.kind=planted",
            "features.indices=[0, 1]",
            f"corpus.source='{corpus}'",
            f"store.path='{db}'",
            "corpus.max_windows=24",
            "corpus.window_tokens=12",
            "collect.top_k=3",
            "collect.random_windows=2",
            "collect.min_firing_windows=1",
            f"explainer.model='{spec}'",
            f"score.judge.model='{spec}'",
            "score.methods=['output']",
            "experiments.lowest_n=0",
            "experiments.on_disagreement=false",
        ]
        ran = CliRunner().invoke(app, ["run", *_args(settings)])
        assert ran.exit_code == 0, ran.output
        store = Store(db)
        run_id = store.runs()[0]["id"]
        rows = store.scores(run_id, "output_auroc")
        assert rows and all(r["value"] is None for r in rows)  # never a number
        assert all("not a direction" in json.loads(r["details"])["undefined"] for r in rows)
        assert not [c for c in store.query("SELECT role FROM llm_calls") if c["role"] == "output"]
        with duckdb.connect(str(db)) as con:  # score again: the stage's tallies say why each was skipped
            con.execute("DELETE FROM scores")
        config = load_config(None, settings)
        result = run_score(config, store, run_id, session_of(config, store, run_id))
    reason = "output: a planted feature is not a direction in the model: there is nothing to steer"
    assert result.skipped == {reason: len(rows)} and result.complete, result.summary()
