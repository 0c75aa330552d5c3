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
from autointerp.llm.adapter_spec import AdapterConfig, resolve_local_model
from autointerp.llm.base import ChatRequest
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import load_prompt
from autointerp.simtrain.distill import distill_examples
from autointerp.simtrain.examples import SimExample
from autointerp.simtrain.train import SimulatorTrainer, TrainSettings
from autointerp.store.database import Store
from autointerp.subject.model import SubjectModel

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


def test_bad_adapters_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SubjectModelError, match=r"has no adapter\.json"):
        resolve_local_model(f"smollm2-135m+adapter={tmp_path}")
    (tmp_path / "adapter.json").write_text("{}")
    with pytest.raises(SubjectModelError, match=r"has no adapter\.safetensors"):
        resolve_local_model(f"smollm2-135m+adapter={tmp_path}")
    assert resolve_local_model("smollm2-135m") == ("smollm2-135m", None)


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
