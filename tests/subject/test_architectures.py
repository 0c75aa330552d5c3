"""Every architecture family: hook points equal TransformerLens's, the preflight reads each family's
config, and a whole `autointerp run` completes on a tiny model of each.

The tiny models and their references are made by `tests/fixtures/architectures/make_fixtures.py`
(TransformerLens 3.9.0's HookedTransformer, loaded without weight processing, on a fixed text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.errors import FeatureError, SubjectModelError
from autointerp.llm import ChatBackend, ChatRequest, ChatResponse, register_backend
from autointerp.llm.base import BackendCapabilities, ValueReadout
from autointerp.subject import SubjectModel, load_subject_model, mlp_neuron_activations
from autointerp.subject.architectures import Architecture, architecture_for, register_architecture
from autointerp.subject.hooks import capture, hook_site, mlp_down_proj
from autointerp.subject.interventions import DirectionEdit, NeuronEdit, applied, next_token_logprobs
from autointerp.subject.locate import locate_model
from tests.evidence import assert_evidence_invariants

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "architectures"
FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "gemma2", "gemma3_text")
HOOKS = ("hook_resid_pre", "hook_mlp_in", "ln2.hook_normalized", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")


def _close(ours: torch.Tensor, reference: torch.Tensor) -> bool:
    """Within 1e-5 of the reference, relative to its largest value."""
    scale = float(reference.abs().max())
    return bool(torch.allclose(ours.float(), reference, rtol=1e-5, atol=1e-5 * scale))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> tuple[str, SubjectModel, dict[str, torch.Tensor]]:
    folder = FIXTURES / request.param
    reference = load_file(str(folder / "reference.safetensors"))
    return request.param, load_subject_model(str(folder)), reference


def test_every_hook_point_equals_transformerlens(family: tuple[str, SubjectModel, dict[str, torch.Tensor]]) -> None:
    name, subject, reference = family
    ids = reference["input_ids"][None]
    points = [f"blocks.{layer}.{hook}" for layer in range(subject.n_layers) for hook in HOOKS]
    assert set(points) == set(reference) - {"input_ids"}
    for point, ours in zip(points, capture(subject, ids, points), strict=True):
        assert ours.shape == (1, *reference[point].shape), point
        assert _close(ours[0], reference[point]), (
            f"{name} {point}: max error {(ours[0] - reference[point]).abs().max()}"
        )
    # one hook at a time (the forward pass stops early) reads the same values
    for point in ("blocks.0.hook_mlp_out", "blocks.1.ln2.hook_normalized", "blocks.1.hook_resid_post"):
        (alone,) = capture(subject, ids, [point])
        assert _close(alone[0], reference[point]), point
    # `mlp.L` is the MLP's neurons, the input of its output projection
    neurons = mlp_neuron_activations(subject, ids, 1, [0, 3, subject.d_mlp - 1])
    assert _close(neurons[0], reference["blocks.1.mlp.hook_post"][:, [0, 3, subject.d_mlp - 1]])


def test_widths_come_from_each_familys_config(family: tuple[str, SubjectModel, dict[str, torch.Tensor]]) -> None:
    name, subject, reference = family
    shape = locate_model(str(FIXTURES / name), hooks=True)
    assert (shape.n_layers, shape.hidden_size, shape.d_mlp) == (subject.n_layers, subject.d_model, subject.d_mlp)
    assert shape.model_type == name
    assert reference["blocks.0.mlp.hook_post"].shape[-1] == subject.d_mlp
    assert reference["blocks.0.hook_resid_pre"].shape[-1] == subject.d_model
    with pytest.raises(FeatureError, match=rf"layer 2 does not exist: {name} has layers 0\.\.1"):
        capture(subject, reference["input_ids"][None], ["blocks.2.hook_resid_post"])


def test_neuron_and_direction_edits_change_only_what_follows(
    family: tuple[str, SubjectModel, dict[str, torch.Tensor]],
) -> None:
    name, subject, reference = family
    ids = reference["input_ids"][None]
    points = ["blocks.1.hook_mlp_in", "blocks.1.mlp.hook_in", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"]
    clean = capture(subject, ids, points)
    with applied(subject, NeuronEdit(layer=1, index=3, set_to=0.0)):
        edited = capture(subject, ids, points)
    assert torch.equal(edited[0], clean[0])  # nothing upstream changes
    assert torch.equal(edited[2][..., 3], torch.zeros_like(edited[2][..., 3]))  # the captured input is the edited one
    projection = mlp_down_proj(subject, 1)
    assert not torch.allclose(edited[3], clean[3]), name
    with torch.inference_mode():
        column = projection(torch.nn.functional.one_hot(torch.tensor(3), subject.d_mlp).float()[None])
        column = column - projection(torch.zeros(1, subject.d_mlp))
    if subject.architecture.mlp_out_norm is None:  # the MLP's output moves along the neuron's output weights
        expected = clean[3] - clean[2][..., 3:4] * column
        assert torch.allclose(edited[3], expected, atol=1e-5), name
    # steering the normalised MLP input moves the MLP's input by the change times the norm's gain
    direction = torch.zeros(subject.d_model)
    direction[1] = 1.0
    edit = DirectionEdit(hook="blocks.1.ln2.hook_normalized", read=lambda h: h[..., 1], direction=direction, add=0.5)
    with applied(subject, edit):
        steered = capture(subject, ids, points)
    gain = hook_site(subject, "blocks.1.ln2.hook_normalized").gain()
    assert torch.equal(steered[0], clean[0])
    assert torch.allclose(steered[1] - clean[1], 0.5 * direction * gain, atol=1e-5), name
    assert next_token_logprobs(subject, ids, edit).shape == (1, ids.shape[1], subject.model.config.vocab_size)


def test_smollm2_mlp_neurons_equal_transformerlens(subject: SubjectModel) -> None:
    reference = load_file(str(FIXTURES / "smollm2_mlp15.safetensors"))
    ours = mlp_neuron_activations(subject, reference["input_ids"][None], 15, reference["neurons"])
    (post,) = capture(subject, reference["input_ids"][None], ["blocks.15.mlp.hook_post"])
    assert _close(ours[0], reference["hook_post"])
    assert _close(post[0][:, reference["neurons"]], reference["hook_post"])


# registry and preflight -------------------------------------------------------------------------------


def _mamba(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-mamba"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "mamba", "architectures": ["MambaForCausalLM"]}')
    return folder


def test_an_unsupported_family_is_a_one_line_error_before_loading(tmp_path: Path) -> None:
    folder = _mamba(tmp_path)
    message = r"model_type 'mamba' in config.json is not a supported architecture; supported: .*gpt2, gpt_neox"
    with pytest.raises(SubjectModelError, match=message):
        locate_model(str(folder), hooks=True)
    assert locate_model(str(folder)).model_type == "mamba"  # a local LLM backend needs no adapter
    with pytest.raises(SubjectModelError, match=message):
        load_subject_model(str(folder))


def test_a_registered_adapter_serves_its_model_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from autointerp.plugins import Registry
    from autointerp.subject import architectures

    monkeypatch.setattr(architectures, "_PLUGINS", Registry("autointerp.architectures", "architecture"))
    custom = Architecture(
        name="custom",
        model_types=("custom-llama-test",),
        body="model",
        blocks="model.layers",
        mlp="mlp",
        mlp_norm="post_attention_layernorm",
        neurons="mlp.down_proj",
        final_norm="model.norm",
        unembed="lm_head",
        d_mlp_keys=("ffn_dim",),
    )
    register_architecture(custom)
    assert architecture_for("custom-llama-test") is custom
    assert "custom-llama-test" in architectures.supported_model_types()
    assert custom.shape({"num_hidden_layers": 3, "hidden_size": 8, "ffn_dim": 20}) == (3, 8, 20)
    assert architecture_for("gpt2").shape({"n_layer": 12, "n_embd": 768, "n_inner": None}) == (12, 768, 3072)


@pytest.mark.parametrize("name", FAMILIES)
def test_check_says_ok_for_each_family(name: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", *_settings(tmp_path, FIXTURES / name)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("ok: "), result.output


def test_check_names_an_unsupported_model_type_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", *_settings(tmp_path, _mamba(tmp_path))])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert re.match(
        r"error: subject\.model: model_type 'mamba' in config\.json is not a supported architecture; supported: "
        r"gemma, gemma2, gemma3_text, gpt2, gpt_neox, llama, mistral, qwen2, qwen3",
        result.output,
    ), result.output


# a whole run on each family ---------------------------------------------------------------------------


class MarkedTokenExplainer(ChatBackend):
    """Explains a feature as the token its prompt marks most often."""

    backend = "arch-explainer"

    def generate(self, request: ChatRequest) -> ChatResponse:
        from collections import Counter

        marked = Counter(t.strip() for t in re.findall(r"<<(.+?)>>", request.messages[-1].content))
        token = marked.most_common(1)[0][0] if marked else "nothing"
        return ChatResponse(text=f" the token {token}.", input_tokens=10, output_tokens=4)


class NamedTokenSimulator(ChatBackend):
    """Predicts 10 on the tokens the explanation names, 0 elsewhere (reads values, never generates)."""

    backend = "arch-simulator"
    max_concurrency: ClassVar[int | None] = 1

    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(prompt_logprobs=True)

    def generate(self, request: ChatRequest) -> ChatResponse:
        raise AssertionError("all-at-once simulation reads values")

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        readouts = []
        for request, tokens in items:
            named = re.findall(r"the token (.+?)\.", request.messages[1].content)
            word = named[-1].strip() if named else ""
            readouts.append(ValueReadout(values=[10.0 if t.strip() == word else 0.0 for t in tokens]))
        return readouts


register_backend("arch-explainer", MarkedTokenExplainer)
register_backend("arch-simulator", NamedTokenSimulator)


def _settings(tmp_path: Path, model: Path) -> list[str]:
    overrides = [
        f"subject.model='{model}'",
        f"store.path='{tmp_path / 'runs.duckdb'}'",
        "features.layer=1",
        "features.indices=[1, 5, 9]",
        "corpus.max_windows=16",
        "corpus.window_tokens=16",
        "collect.top_k=4",
        "collect.random_windows=2",
        "explainer.model='arch-explainer:x'",
        "explainer.max_tokens=16",
        "score.methods=['simulation']",
        "score.simulator.model='arch-simulator:x'",
        "experiments.lowest_n=0",
        "experiments.on_disagreement=false",
        "llm.cache=false",
    ]
    return [part for override in overrides for part in ("-s", override)]


@pytest.mark.slow  # a whole flow per family
@pytest.mark.parametrize("name", FAMILIES)
def test_a_run_completes_on_each_family(name: str, tmp_path: Path, prefect_harness: None) -> None:
    result = CliRunner().invoke(app, ["run", *_settings(tmp_path, FIXTURES / name)])
    assert result.exit_code == 0, result.output
    assert f"{name}/mlp.1/5" in result.output  # the features table names the model's features
    assert_evidence_invariants(tmp_path / "runs.duckdb")
