"""The experiment loop stops at each of its conditions and resumes without redoing rounds.

The proposer and explainer here are a scripted chat backend registered through the real
registry, so each stop condition can be forced; the subject model and simulator are real.
"""

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.collect.stage import run_collect
from autointerp.config import RunConfig
from autointerp.experiments.stage import Investigation, select_targets
from autointerp.explain.stage import run_explain
from autointerp.llm import ChatBackend, ChatRequest, ChatResponse, register_backend
from autointerp.pipeline.common import MAIN_METRIC
from autointerp.score.stage import run_score
from autointerp.store.database import Store, now
from autointerp.subject import SubjectModel
from tests.conftest import session_of, tiny_config

FEATURE = "smollm2-135m/mlp.15/5"


class ScriptedBackend(ChatBackend):
    """Answers each prompt role with a fixed text; model `new` revises, model `same` does not."""

    backend = "scripted"

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.revisions = 0

    def generate(self, request: ChatRequest) -> ChatResponse:
        system, user = request.messages[0].content, request.messages[1].content
        if "revise explanations" in system:
            self.revisions += 1
            text = " the letter e" if self.model == "same" else f" idea number {self.revisions}"
        elif "Answer with three words" in user:
            text = " cat, dog, the"
        elif "minimal-pair" in system:
            text = 'dog" is the word'
        elif "design experiments" in system:
            text = 'The cat sat on the mat." and more'
        else:
            text = " the letter e"
        return ChatResponse(text=text, input_tokens=10, output_tokens=3)


register_backend("scripted", ScriptedBackend)


def _config(path: Path, model: str, *overrides: str) -> RunConfig:
    return tiny_config(
        path,
        "features.indices=[5]",
        f"explainer.model='scripted:{model}'",
        f"experiments.proposer.model='scripted:{model}'",
        *overrides,
    )


@pytest.fixture(scope="module")
def collected_db(tmp_path_factory: pytest.TempPathFactory, subject: SubjectModel) -> Path:
    folder = tmp_path_factory.mktemp("loop")
    config = _config(folder, "same")
    store = Store(config.store.path)
    store.migrate()
    store.start_run("r", {}, "h", "0", None)
    run_collect(config, store, "r")
    return config.store.path


def _fresh(collected_db: Path, tmp_path: Path, model: str, *overrides: str) -> tuple[RunConfig, Store]:
    shutil.copy(collected_db, tmp_path / "test.duckdb")
    config = _config(tmp_path, model, *overrides)
    store = Store(config.store.path)
    run_explain(config, store, "r", session_of(config, store, "r"))
    return config, store


def _chain(store: Store) -> list[dict]:
    return sorted((e for e in store.explanations("r") if e["feature_id"] == FEATURE), key=lambda e: e["iteration"])


def test_stops_at_the_round_budget_with_linked_revisions(collected_db: Path, tmp_path: Path) -> None:
    config, store = _fresh(collected_db, tmp_path, "new", "experiments.score_threshold=1.0", "experiments.max_rounds=2")
    run_score(config, store, "r", session_of(config, store, "r"))
    assert Investigation(config, store, "r", session_of(config, store, "r")).investigate(FEATURE) == "budget"
    chain = _chain(store)
    assert [e["iteration"] for e in chain] == [0, 1, 2]
    assert chain[1]["parent_id"] == chain[0]["id"] and chain[2]["parent_id"] == chain[1]["id"]
    scored = {s["explanation_id"] for s in store.scores("r", MAIN_METRIC)}
    assert {e["id"] for e in chain} <= scored, "every revision is rescored"
    kinds = {(x["explanation_id"], x["kind"]) for x in store.experiments("r")}
    for explanation in chain[:2]:
        assert {k for e, k in kinds if e == explanation["id"]} == {"input", "minimal_pair", "ablation", "steering"}
    for experiment in store.experiments("r"):
        assert experiment["verdict"] in {"supports", "refutes", "inconclusive"}
        assert json.loads(experiment["measured"])


def test_stops_when_a_round_changes_nothing_and_resumes_without_new_calls(collected_db: Path, tmp_path: Path) -> None:
    config, store = _fresh(
        collected_db, tmp_path, "same", "experiments.score_threshold=1.0", "experiments.kinds=['minimal_pair']"
    )
    assert Investigation(config, store, "r", session_of(config, store, "r")).investigate(FEATURE) == "no change"
    assert len(_chain(store)) == 1
    assert [x["kind"] for x in store.experiments("r")] == ["minimal_pair"]
    calls = store.query("SELECT count(*) AS n FROM llm_calls")[0]["n"]
    assert Investigation(config, store, "r", session_of(config, store, "r")).investigate(FEATURE) == "no change"
    assert store.query("SELECT count(*) AS n FROM llm_calls")[0]["n"] == calls
    assert len(store.experiments("r")) == 1


def test_stops_at_once_when_the_score_reaches_the_threshold(collected_db: Path, tmp_path: Path) -> None:
    config, store = _fresh(collected_db, tmp_path, "new", "experiments.score_threshold=0.5")
    explanation = _chain(store)[0]
    store.write_results(
        {
            "scores": [
                {
                    "id": str(uuid.uuid4()),
                    "run_id": "r",
                    "explanation_id": explanation["id"],
                    "scorer": "test",
                    "scorer_model": "test",
                    "metric": MAIN_METRIC,
                    "value": 0.9,
                    "details": "{}",
                    "created_at": now(),
                }
            ]
        }
    )
    assert Investigation(config, store, "r", session_of(config, store, "r")).investigate(FEATURE) == "threshold"
    assert store.experiments("r") == []


@pytest.mark.parametrize("kind", ["direction", "planted"])
def test_experiments_on_directions_and_planted_features(kind: str, tmp_path: Path, subject: SubjectModel) -> None:
    """A direction gets all four kinds (ablation and steering along it); a planted feature, which is
    no direction in the model, gets input and minimal-pair experiments measured on itself."""
    if kind == "direction":
        matrix = torch.randn(2, subject.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
        np.save(tmp_path / "directions.npy", matrix.numpy())
        overrides = ["features.kind='direction'", f"features.path='{tmp_path / 'directions.npy'}'", "features.layer=6"]
        feature_id, expected = "smollm2-135m/direction.6/1", {"input", "minimal_pair", "ablation", "steering"}
    else:
        overrides = ["features.kind='planted'"]
        feature_id, expected = "planted/the", {"input", "minimal_pair"}
    config = _config(tmp_path, "new", "features.indices=[0, 1]", "experiments.score_threshold=1.0", *overrides)
    store = Store(config.store.path)
    store.migrate()
    store.start_run("r", {}, "h", "0", None)
    run_collect(config, store, "r")
    run_explain(config, store, "r", session_of(config, store, "r"))
    assert Investigation(config, store, "r", session_of(config, store, "r")).investigate(feature_id) == "budget"
    experiments = store.experiments("r")
    assert {x["kind"] for x in experiments} == expected
    measured = [json.loads(x["measured"]) for x in experiments if x["kind"] == "minimal_pair"]
    assert measured and measured[0]["original_activation"] > 0  # the edited token was where it fired


def _score_row(explanation_id: str, metric: str, value: float) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "run_id": "r",
        "explanation_id": explanation_id,
        "scorer": "test",
        "scorer_model": "test",
        "metric": metric,
        "value": value,
        "details": "{}",
        "created_at": now(),
    }


@pytest.mark.parametrize(
    ("embedding", "on_disagreement", "selected"),
    [(0.4, True, [FEATURE]), (0.9, True, []), (0.4, False, [])],
)
def test_features_whose_scorers_disagree_are_investigated(
    collected_db: Path, tmp_path: Path, embedding: float, on_disagreement: bool, selected: list[str]
) -> None:
    """Simulation beats its distractor; embedding does (0.9 > 0.6) or does not (0.4): only the
    second is a disagreement. No score is below the threshold, so nothing else is picked."""
    config, store = _fresh(
        collected_db,
        tmp_path,
        "same",
        "experiments.score_threshold=-1.0",
        f"experiments.on_disagreement={str(on_disagreement).lower()}",
    )
    explanation = _chain(store)[0]["id"]
    rows = [_score_row(explanation, MAIN_METRIC, 0.3), _score_row(explanation, MAIN_METRIC + "_distractor", 0.1)]
    rows += [_score_row(explanation, "embedding_auroc", embedding)]
    rows += [_score_row(explanation, "embedding_auroc_distractor", 0.6)]
    store.write_results({"scores": rows})
    assert select_targets(config, store, "r") == selected


def test_a_revision_is_scored_alone_not_another_feature_s_unscored_explanation(
    tmp_path: Path, subject: SubjectModel
) -> None:
    """After a revision the investigation scores that feature's new explanation only: another feature whose
    scoring failed is the score stage's to redo (in a sharded run each experiment shard would score it, and
    the second copy of its rows stops the ingest)."""
    config = _config(tmp_path, "new", "features.indices=[5, 12]", "experiments.score_threshold=1.0")
    store = Store(config.store.path)
    store.migrate()
    store.start_run("r", {}, "h", "0", None)
    run_collect(config, store, "r")
    run_explain(config, store, "r", session_of(config, store, "r"))
    other = next(e for e in store.explanations("r") if e["feature_id"] != FEATURE)
    run_score(config, store, "r", session_of(config, store, "r"), feature_ids=[FEATURE])  # the other one failed
    assert Investigation(config, store, "r", session_of(config, store, "r")).investigate(FEATURE) == "budget"
    scored = {s["explanation_id"] for s in store.scores("r", MAIN_METRIC)}
    assert {e["id"] for e in _chain(store)} <= scored  # the revision was scored
    assert other["id"] not in scored
