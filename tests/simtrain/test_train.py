"""Training a simulator adapter on the real model (tiny), loading it the way the scorer does, distilling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.errors import ConfigError, SubjectModelError
from autointerp.llm import get_backend
from autointerp.llm.adapter import save_adapter
from autointerp.llm.adapter_spec import AdapterConfig, read_adapter_config, resolve_local_model
from autointerp.llm.base import ChatRequest
from autointerp.llm.local import LocalChatBackend, simulation_line
from autointerp.prompts import load_prompt
from autointerp.simtrain.command import SimulatorTrainingPlan, train_simulator
from autointerp.simtrain.distill import distill_examples
from autointerp.simtrain.examples import SimExample
from autointerp.simtrain.train import SimulatorTrainer, TrainSettings
from autointerp.store.database import Store
from autointerp.subject.model import SubjectModel
from tests.simtrain.tiny_plan import TINY_PLAN

WINDOW = [" the", " cat", " sat", " on", " the", " mat"]
EXAMPLES = [
    SimExample('the word "cat"', WINDOW, [0, 10, 0, 0, 0, 0], "cat"),
    SimExample('the word "sat"', WINDOW, [0, 0, 10, 0, 0, 0], "sat"),
    SimExample('the word "mat"', WINDOW, [0, 0, 0, 0, 0, 10], "mat"),
    SimExample('the word "dog"', WINDOW, [0, 0, 0, 0, 0, 0], "dog"),
]


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_tiny_training_learns_and_the_scorer_reads_what_was_trained(tmp_path: Path, subject: SubjectModel) -> None:
    before = _checksum(subject.model)
    backend = get_backend("local:smollm2-135m")
    assert isinstance(backend, LocalChatBackend)
    config = AdapterConfig(base_model="smollm2-135m", rank=4, alpha=8.0, blocks=[28, 29])
    trainer = SimulatorTrainer(backend, load_prompt("simulate"), config)
    encoded = [trainer.encode(e) for e in EXAMPLES]
    assert [len(e.positions) for e in encoded] == [len(WINDOW)] * 4
    settings = TrainSettings(epochs=8, batch_size=4, learning_rate=3e-3, warmup_steps=1)
    report = trainer.train(encoded, encoded, settings)
    assert report.steps == 8 and report.heldout_loss_before and report.heldout_loss_after
    assert report.heldout_loss_after < 0.7 * report.heldout_loss_before

    folder = save_adapter(tmp_path / "sim", config, trainer.adapted)
    assert json.loads((folder / "adapter.json").read_text())["base_model"] == "smollm2-135m"
    assert _checksum(subject.model) == before  # training used a private copy of the shared model

    # the scorer's all-at-once read of the adapted model gives what the trainer computes
    adapted = LocalChatBackend(str(folder))
    messages, prefill = load_prompt("simulate").render(explanation='the word "cat"')
    [readout] = adapted.read_values([(ChatRequest(messages=messages, prefill=prefill, max_tokens=1), WINDOW)])
    with torch.no_grad():
        logits = trainer.digit_logits([encoded[0]])[0]
    expected = torch.softmax(logits.float(), dim=-1) @ torch.tensor(trainer.digit_values, dtype=torch.float32)
    assert readout.values == pytest.approx(expected.tolist(), abs=1e-3)
    assert readout.values[1] == max(readout.values)  # it learned where "cat" is
    assert _checksum(subject.model) == before  # merging the adapter left the shared model alone
    assert resolve_local_model(f"smollm2-135m+adapter={folder}") == ("smollm2-135m", folder)

    # an adapter trained on lines that show the previous token is prompted with them
    config_path = folder / "adapter.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "lines": "previous-and-token"}))
    with_previous = LocalChatBackend(str(folder))
    ids, positions = with_previous.simulation_prompt(ChatRequest(messages=messages, prefill=prefill), WINDOW)
    text = str(with_previous.subject.tokenizer.decode(ids))
    assert text.endswith("\n -> the\t0\n the -> cat\t0\n cat -> sat\t0\n sat -> on\t0\n on -> the\t0\n the -> mat\t0\n")
    assert len(positions) == len(WINDOW)


def test_the_command_records_base_prompt_lines_and_heldout_members(tmp_path: Path, subject: SubjectModel) -> None:
    plan = SimulatorTrainingPlan(
        out=tmp_path / "adapter",
        lines="previous-and-token",
        active_per_member=1,
        quiet_per_member=1,
        cross_per_member=0,
        **TINY_PLAN,
    )
    said: list[str] = []
    training = train_simulator(plan, echo=said.append)
    config = read_adapter_config(plan.out)
    assert config.base_model == "smollm2-135m" and config.prompt == "simulate" and config.blocks == [29]
    assert config.lines == "previous-and-token" and LocalChatBackend(str(plan.out)).simulation_lines == config.lines
    shared = get_backend("local:smollm2-135m")  # the cached base model other scorers use is unchanged
    assert isinstance(shared, LocalChatBackend) and shared.simulation_lines == "token"
    assert training["prompt_hash"] == load_prompt("simulate").hash and training["window_sizes"] == [8]
    assert training["train_members"] == 4 and training["heldout_members"] and training["families"]
    assert training["report"]["steps"] >= 1 and training["benchmark_features_trained_on"] == 0
    assert (
        said[0].startswith("4 training and ")
        and said[-2] == f'wrote {plan.out}. Use it with score.simulator.model = "local:{plan.out}"'
    )


def test_bad_adapters_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SubjectModelError, match=r"has no adapter\.json"):
        resolve_local_model(f"smollm2-135m+adapter={tmp_path}")
    (tmp_path / "adapter.json").write_text("{}")
    with pytest.raises(SubjectModelError, match=r"has no adapter\.safetensors"):
        resolve_local_model(f"smollm2-135m+adapter={tmp_path}")
    assert resolve_local_model("smollm2-135m") == ("smollm2-135m", None)
    (tmp_path / "adapter.safetensors").write_bytes(b"")
    config = {"base_model": "smollm2-135m", "rank": 4, "alpha": 8.0, "blocks": [29], "lines": "both"}
    (tmp_path / "adapter.json").write_text(json.dumps(config))
    with pytest.raises(SubjectModelError, match=r"lines must be one of token, previous-and-token"):
        resolve_local_model(f"smollm2-135m+adapter={tmp_path}")


def test_simulation_lines_show_the_token_or_the_previous_token_too() -> None:
    tokens = [" of", " the", "\n", "x"]
    assert [simulation_line(tokens, i, "token") for i in range(4)] == [" of", " the", "\\n", "x"]
    assert [simulation_line(tokens, i, "previous-and-token") for i in range(4)] == [
        " -> of",
        " of -> the",
        " the ->\\n",
        "\\n ->x",
    ]


def _scored_store(path: Path) -> None:
    store = Store(path)
    store.migrate()
    details = {
        "windows": [
            {"kind": "top", "rank": 1, "true": [0, 10], "predicted": [0.2, 8.6]},
            {"kind": "random", "rank": 0, "true": [0, 0], "predicted": [1.4, 0.0]},
            {"kind": "top", "rank": 3, "true": [0, 9], "predicted": None},  # a failed call: left out
        ]
    }
    with store.transaction() as con:
        Store.insert_rows(
            con,
            "exemplars",
            [
                {
                    "run_id": "r1",
                    "feature_id": "f",
                    "kind": kind,
                    "rank": rank,
                    "doc_id": 0,
                    "token_offset": rank,
                    "token_ids": list(range(len(tokens))),
                    "activations": [0.0] * len(tokens),
                    "max_activation": 0.0,
                    "tokens": tokens,
                    "split": "score",
                }
                for kind, rank, tokens in (
                    ("top", 1, [" a", " cat"]),
                    ("random", 0, [" the", " mat"]),
                    ("top", 3, ["x", "y"]),
                )
            ],
        )
        Store.insert_rows(con, "explanations", [{"id": "e1", "run_id": "r1", "feature_id": "f", "text": "cats"}])
        Store.insert_rows(
            con,
            "scores",
            [
                {
                    "id": f"s{m}",
                    "run_id": "r1",
                    "explanation_id": "e1",
                    "scorer": "simulation-generated",
                    "scorer_model": "openai:big",
                    "metric": m,
                    "value": 0.9,
                    "details": json.dumps(details),
                }
                for m in ("correlation_all", "correlation_top")
            ],
        )


def test_distillation_reads_a_runs_simulator_predictions(tmp_path: Path) -> None:
    db = tmp_path / "run.duckdb"
    _scored_store(db)
    examples = distill_examples(db, "r1")
    assert [(e.description, e.tokens, e.levels) for e in examples] == [
        ("cats", [" a", " cat"], [0, 9]),
        ("cats", [" the", " mat"], [1, 0]),
    ]
    assert distill_examples(db, "r1", teacher="openai:big") == examples
    with pytest.raises(ConfigError, match="no simulation predictions by local:x to distil; its simulators: openai:big"):
        distill_examples(db, "r1", teacher="local:x")
    with pytest.raises(ConfigError, match="no simulation predictions"):
        distill_examples(db, "other-run")


def test_cli_rejects_a_bad_distill_source() -> None:
    result = CliRunner().invoke(app, ["train-simulator", "--distill", "no-run-id.duckdb"])
    assert result.exit_code == 1
    assert "FILE.duckdb#RUN_ID" in result.output
