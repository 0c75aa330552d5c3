"""Every feature kind through the commands a user types: `autointerp check`, then `autointerp run`, then
the evidence invariants on the stored rows (no non-activating window fires, every top window does, no
window in both splits).

The explainer is a scripted server on loopback (it names the token its prompt marks most often) and the
scorer the local embedding model, so each run takes seconds beyond loading the subject model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.outputs import PLANTED_NO_OUTPUT
from autointerp.store.database import Store
from tests.evidence import assert_evidence_invariants
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion

DICTIONARIES = Path(__file__).parents[1] / "fixtures" / "dictionaries"


def _echo_marked(request: Received) -> Reply:
    """Explains a feature as the token its prompt marks most often."""
    from collections import Counter

    prompt = request.body["messages"][-1]["content"]
    marked = Counter(t.strip() for t in re.findall(r"<<(.+?)>>", prompt))
    token = marked.most_common(1)[0][0] if marked else "nothing"
    return Reply(openai_completion(f"the token {token}.", 11, 5))


@pytest.fixture(scope="module")
def explainer_url() -> Iterator[str]:
    """A scripted OpenAI-compatible explainer on loopback, shared by the module's runs."""
    with LoopbackServer([], respond=_echo_marked) as server:
        yield f"openai-compatible:{server.url}/v1#echo"


def _directions(folder: Path) -> Path:
    path = folder / "directions.safetensors"
    save_file({"directions": torch.randn(4, 576, generator=torch.Generator().manual_seed(0))}, str(path))
    return path


def _settings(kind: str, folder: Path) -> list[str]:
    """Returns the `features.*` settings of one kind (fixture paths written by the owning library)."""
    if kind == "mlp":
        return ["features.kind=mlp", "features.layer=3", "features.indices=[5, 400, 1201]"]
    if kind == "direction":
        return [
            "features.kind=direction",
            f"features.path='{_directions(folder)}'",
            "features.layer=6",
            "features.count=4",
        ]
    if kind == "planted":
        return ["features.kind=planted", "features.indices=[0, 1, 2]"]
    dictionary = {  # folders written by sae-lens 6 / eai-sparsify themselves (tests/fixtures/dictionaries)
        "sae": "saelens_topk_rescale",
        "sparsify": "sparsify/layers.3",
        "transcoder": "sparsify/layers.3.mlp",
    }[kind]
    return [f"features.kind={kind}", f"features.path='{DICTIONARIES / dictionary}'", "features.count=4"]


def _small_run(db: Path, explainer_url: str) -> list[str]:
    """Returns the settings of a small run into `db`: 64 windows, the scripted explainer, embedding scores."""
    return [
        f"store.path='{db}'",
        "corpus.max_windows=64",
        "corpus.window_tokens=16",
        "collect.top_k=4",
        "collect.random_windows=3",
        f"explainer.model='{explainer_url}'",
        "score.methods=['embedding']",
        "experiments.lowest_n=0",
        "experiments.on_disagreement=false",
    ]


def _args(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("-s", setting)]


@pytest.mark.parametrize("kind", ["mlp", "sae", "sparsify", "transcoder", "direction", "planted"])
def test_every_feature_kind_runs_through_the_cli_with_sound_evidence(
    kind: str, tmp_path: Path, explainer_url: str, prefect_harness: None
) -> None:
    db = tmp_path / "run.duckdb"
    settings = [
        *_settings(kind, tmp_path),
        *_small_run(db, explainer_url),
    ]
    if kind == "planted":  # scored by simulation too: the explain stage weighs the top-tokens list with it
        settings.append("score.methods=['embedding', 'simulation']")
    checked = CliRunner().invoke(app, ["check", *_args(settings)])
    assert checked.exit_code == 0, checked.output
    ran = CliRunner().invoke(app, ["run", *_args(settings)])
    assert ran.exit_code == 0, ran.output
    metric = "simulation score (correlation_top_and_random" if kind == "planted" else "embedding score (embedding_auroc"
    assert f"explanations by {metric}" in ran.output  # the metric it sorts by, named
    assert_evidence_invariants(db)
    store = Store(db)
    [run] = store.run_progress()
    assert run["status"] == "completed"
    live = [f for f in store.features(run["id"]) if f.live]
    assert live and run["explained"] == len(live) == run["live_features"]
    assert all((f.firing_windows or 0) >= 2 and f.nonfiring_windows is not None for f in live)
    if kind != "planted":  # each window's first two tokens (the attention sink) are not read: 0 in every exemplar
        unread = "activations[1] <> 0 OR activations[2] <> 0"
        assert store.query(f"SELECT count(*) AS n FROM exemplars WHERE {unread}") == [{"n": 0}]
    evidence = store.output_evidence_by_feature(run["id"])  # what each feature writes, or why it writes nothing
    assert set(evidence) == {f.id for f in live}
    if kind == "planted":
        assert all(e.no_output_reason == PLANTED_NO_OUTPUT and not e.promoted for e in evidence.values())
        # the explainer's answer was weighed against the list of the strongest tokens, the better one kept
        for explanation in store.explanations(run["id"]):
            best_of = json.loads(explanation["details"])["best_of"]
            sources = [c["source"] for c in best_of["candidates"]]
            assert sources[0] == "explainer" and sources[-1] == "top tokens", sources
            scores = [c["score"] if c["score"] is not None else -2.0 for c in best_of["candidates"]]
            assert scores[best_of["chosen"]] == max(scores)
            assert explanation["text"] == best_of["candidates"][best_of["chosen"]]["text"]
    else:
        assert all(e.has_output and e.promoted and e.suppressed and e.steer_raised for e in evidence.values())


PLANTED_FILE = """
from autointerp.subject.planted import PlantedFeature

PLANTED_FEATURES = [
    PlantedFeature("the", "the word the", lambda tokens: [1.0 if t.strip() == "the" else 0.0 for t in tokens]),
    PlantedFeature("rare", "the word Zanzibar", lambda tokens: [1.0 if "anz" in t else 0.0 for t in tokens]),
    PlantedFeature("every", "every token", lambda tokens: [1.0 for t in tokens]),
]
"""


def test_too_little_evidence_is_skipped_or_flagged_and_runs_says_so(
    tmp_path: Path, explainer_url: str, prefect_harness: None
) -> None:
    """A feature that fires in one window is stored with its reason and not explained; one that fires
    everywhere has no non-firing window and is scored on what exists; `autointerp runs` counts both."""
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED_FILE)
    corpus = tmp_path / "corpus.txt"
    sentences = [f"Line {i} says that {'the' if i % 3 == 0 else 'a'} cat sat on a mat near a door." for i in range(200)]
    sentences[5] = "Once a ship sailed from Zanzibar to a coast."
    corpus.write_text("\n".join(sentences) + "\n")
    db = tmp_path / "run.duckdb"
    settings = [
        "features.kind=planted",
        f"features.path='{planted}'",
        f"corpus.source='{corpus}'",
        *_small_run(db, explainer_url),
    ]
    ran = CliRunner().invoke(app, ["run", *_args(settings)])
    assert ran.exit_code == 0, ran.output
    assert_evidence_invariants(db)
    store = Store(db)
    run_id = store.runs()[0]["id"]
    features = {f.id: f for f in store.features(run_id)}
    rare, every, the = features["planted/rare"], features["planted/every"], features["planted/the"]
    assert rare.firing_windows == 1
    assert rare.skip_reason == "fires in 1 window (collect.min_firing_windows = 2)"
    assert every.nonfiring_windows == 0 and every.skip_reason is None
    assert the.nonfiring_windows == 3 and the.firing_windows == 4  # 1 line in 3 has "the"
    explained = {e["feature_id"] for e in store.explanations(run_id)}
    assert explained == {"planted/every", "planted/the"}
    listed = CliRunner().invoke(app, ["runs", "--db", str(db)])  # into a pipe: no column cut short
    assert listed.exit_code == 0, listed.output
    header = next(line for line in listed.output.splitlines() if "skipped" in line)
    row = next(line for line in listed.output.splitlines() if run_id in line)
    cells = [c.strip() for c in re.split(r"[│┃]", row)]
    names = [c.strip() for c in re.split(r"[│┃]", header)]
    assert cells[names.index("explained")] == "2/2"
    assert cells[names.index("skipped")] == "1" and cells[names.index("few non-firing")] == "1"
