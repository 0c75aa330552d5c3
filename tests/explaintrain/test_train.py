"""Training an explainer adapter on the real model (tiny), generating with it the way the explain stage
does, the command's adapter record, and the distillation filter (p < 0.05 against the distractor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import ExplainerConfig
from autointerp.errors import ConfigError
from autointerp.explain.explainer import explain_template, parse_explanation
from autointerp.explaintrain.command import ExplainerTrainingPlan, train_explainer
from autointerp.explaintrain.distill import beats_distractor, distill_explanations
from autointerp.explaintrain.examples import ExplainExample, build_explain_examples
from autointerp.explaintrain.train import ExplainerTrainer, answer_text
from autointerp.llm import get_backend
from autointerp.llm.adapter import save_adapter
from autointerp.llm.adapter_spec import AdapterConfig, read_adapter_config, resolve_local_model
from autointerp.llm.local import LocalChatBackend
from autointerp.simtrain.families import word_members, word_set_members
from autointerp.simtrain.lora import TrainSettings
from autointerp.store.database import Store
from autointerp.subject.model import SubjectModel
from tests.simtrain.tiny_plan import TINY_PLAN

CAT = [" the", " cat", " sat", " on", " the", " mat"]
DOG = [" a", " dog", " ran", " to", " a", " dog"]


def _example(tokens: list[str], word: str, description: str) -> ExplainExample:
    activations = [1.0 if t.strip() == word else 0.0 for t in tokens]
    return ExplainExample([{"tokens": tokens, "activations": activations}] * 2, 1.0, description, word)


EXAMPLES = [_example(CAT, "cat", "cats and kittens"), _example(DOG, "dog", "dogs and puppies")]


def test_tiny_training_learns_and_the_adapter_generates_it(tmp_path: Path, subject: SubjectModel) -> None:
    backend = get_backend("local:smollm2-135m")
    assert isinstance(backend, LocalChatBackend)
    config = AdapterConfig(base_model="smollm2-135m", rank=4, alpha=8.0, blocks=[28, 29], prompt="explain")
    trainer = ExplainerTrainer(backend, config)
    encoded = [trainer.encode(e) for e in EXAMPLES]
    answer = subject.tokenizer.decode(encoded[0].ids[encoded[0].start :])
    assert answer == answer_text("cats and kittens") + subject.tokenizer.eos_token  # the answer, then end of turn
    settings = TrainSettings(epochs=16, batch_size=2, learning_rate=5e-3, warmup_steps=1)
    report = trainer.train(encoded, encoded, settings)
    assert report.steps == 16 and report.heldout_loss_before and report.heldout_loss_after
    assert report.heldout_loss_after < 0.3 * report.heldout_loss_before

    folder = save_adapter(tmp_path / "explainer", config, trainer.adapted)
    adapted = LocalChatBackend(str(folder))  # an adapter folder as a `local:` model, merged on load
    for example in EXAMPLES:  # the explain stage's request, answered with what was trained
        reply = adapted.generate(example.request())
        assert parse_explanation(reply.text) == example.description
    assert [parse_explanation(r.text) for r in adapted.generate_many([e.request() for e in EXAMPLES])] == [
        e.description for e in EXAMPLES
    ]


def test_examples_show_firing_windows_strongest_first_and_fewer_for_words() -> None:
    windows = [[" the", " file", " is", " big"], [" a", " path", " of", " files"], [" x", " y", " z", " w"]] * 4
    members = [m for m in word_set_members() if m.name == "set:files"] + word_members(["big"])
    examples = build_explain_examples(members, [windows], per_member=3, per_word_member=1, shown=(2, 3))
    assert sorted(e.source for e in examples) == ["set:files"] * 3 + ["word:big"]
    for example in examples:
        assert 2 <= len(example.exemplars) <= 3
        assert all(max(w["activations"]) > 0 for w in example.exemplars)
        _, prefill = explain_template(None).render(exemplars=[], top_tokens="", patterns="")
        assert example.request().prefill == prefill  # the explain stage's own template


def test_the_command_records_base_prompt_families_and_heldout_members(tmp_path: Path, subject: SubjectModel) -> None:
    plan = ExplainerTrainingPlan(out=tmp_path / "adapter", per_member=1, shown=(2, 3), **TINY_PLAN)
    training = train_explainer(plan, echo=lambda line: None)
    config = read_adapter_config(plan.out)
    assert config.base_model == "smollm2-135m" and config.prompt == "explain" and config.blocks == [29]
    assert training["prompt_hash"] == explain_template(None).hash and training["evidence"] == "input"
    assert training["train_members"] == 4 and training["heldout_members"] and training["families"]
    assert training["report"]["steps"] >= 1 and training["benchmark_features_trained_on"] == 0
    assert json.loads((plan.out / "adapter.json").read_text())["training"]["window_sizes"] == [8]


def test_the_filter_keeps_scores_beating_their_distractor_at_p_below_005() -> None:
    assert beats_distractor(0.0, 0.4) and beats_distractor(0.049, 0.01)
    assert not beats_distractor(0.05, 0.4) and not beats_distractor(0.3, 0.4)
    assert not beats_distractor(None, 0.4) and not beats_distractor(float("nan"), 0.4)
    # a score at or below 0 beats nothing, whatever its distractor scored
    assert not beats_distractor(0.0, 0.0) and not beats_distractor(0.0, -0.06) and not beats_distractor(0.0, None)


def _run_store(path: Path) -> None:
    store = Store(path)
    store.migrate()
    explanations = {  # id -> (feature, explainer, p against the distractor; None: no test stored)
        "keep": ("f1", "openai:big", 0.01),
        "chance": ("f2", "openai:big", 0.4),
        "untested": ("f3", "openai:big", None),
        "other": ("f1", "local:small", 0.0),
        "listed": ("f2", "openai:big", 0.0),  # the list of the strongest tokens, kept over the teacher's answer
    }
    listed = {"best_of": {"k": 1, "chosen": 1, "candidates": [{"source": "explainer"}, {"source": "top tokens"}]}}
    with store.transaction() as con:
        Store.insert_rows(
            con,
            "features",
            [{"run_id": "r1", "id": f, "idx": i, "max_activation": 4.0} for i, f in enumerate(("f1", "f2", "f3"))],
        )
        Store.insert_rows(
            con,
            "exemplars",
            [
                {
                    "run_id": "r1",
                    "feature_id": f,
                    "kind": "top",
                    "rank": rank,
                    "doc_id": 0,
                    "token_offset": rank,
                    "max_activation": 4.0 - rank,
                    "token_ids": [264, 2644],
                    "tokens": [" a", " cat"],
                    "activations": [0.0, 4.0 - rank],
                    "split": "explain" if rank % 2 == 0 else "score",
                }
                for f in ("f1", "f2", "f3")
                for rank in range(4)
            ],
        )
        Store.insert_rows(
            con,
            "explanations",
            [
                {
                    "id": i,
                    "run_id": "r1",
                    "feature_id": f,
                    "text": f"text {i}",
                    "explainer": who,
                    "details": json.dumps(listed) if i == "listed" else None,
                }
                for i, (f, who, _) in explanations.items()
            ],
        )
        Store.insert_rows(
            con,
            "scores",
            [
                {
                    "id": f"s-{i}",
                    "run_id": "r1",
                    "explanation_id": i,
                    "scorer": "simulation",
                    "metric": "correlation_top_and_random",
                    "value": 0.5,
                    "details": json.dumps({} if p is None else {"confidence": {"p_vs_distractor": p}}),
                }
                for i, (_, _, p) in explanations.items()
            ],
        )


def test_distillation_keeps_only_explanations_that_beat_their_distractor(tmp_path: Path) -> None:
    db = tmp_path / "run.duckdb"
    _run_store(db)
    found = distill_explanations(db, "r1", teacher="openai:big")
    assert [e.description for e in found.examples] == ["text keep"]
    assert (found.dropped_chance, found.dropped_other) == (2, 2)  # another explainer's, and the kept list
    [example] = found.examples
    assert [w["activations"] for w in example.exemplars] == [[0.0, 4.0], [0.0, 2.0]]  # explanation windows only
    assert example.max_activation == 4.0
    assert [e.description for e in distill_explanations(db, "r1").examples] == ["text keep", "text other"]
    with pytest.raises(ConfigError, match=r"beats its distractor \(p < 0.05\).*its explainers: local:small, openai"):
        distill_explanations(db, "r1", teacher="local:none")
    with pytest.raises(ConfigError, match="no such DuckDB file"):
        distill_explanations(tmp_path / "missing.duckdb", "r1")


def test_cli_rejects_a_bad_distill_source() -> None:
    result = CliRunner().invoke(app, ["train-explainer", "--distill", "no-run-id.duckdb"])
    assert result.exit_code == 1
    assert "FILE.duckdb#RUN_ID" in result.output


def test_the_default_explainer_is_the_shipped_adapter_trained_on_the_stages_prompt() -> None:
    base, folder = resolve_local_model(ExplainerConfig().model.removeprefix("local:"))
    assert base == "smollm2-135m" and folder is not None and folder.parent.name == "explainers"
    config = read_adapter_config(folder)
    assert config.prompt == "explain" and config.training["prompt_hash"] == explain_template(None).hash
    assert config.training["benchmark_features_trained_on"] == 0 and config.training["heldout_members"]
    assert resolve_local_model("smollm2-135m") == ("smollm2-135m", None)  # the untrained model, one setting away
