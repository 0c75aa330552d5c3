"""Planted output directions are their own ground truth: the direct path and steering of each one rank its
token set first, on the real SmolLM2-135M; a signed source's write directions follow its poles."""

from __future__ import annotations

import pytest
import torch

from autointerp.config import CorpusConfig
from autointerp.outputs.direct import direct_path, direct_path_topk
from autointerp.outputs.planted import PLANTED_OUTPUTS, planted_output_description, planted_output_set
from autointerp.outputs.steering import neutral_prompts, steering_topk
from autointerp.subject.interventions import next_token_logprobs
from autointerp.subject.model import SubjectModel
from autointerp.subject.planted import load_planted_features
from autointerp.subject.sources import DirectionSource, MlpNeuronSource, PlantedSource, signed

TOP = 5


def test_each_planted_output_has_a_true_description_and_single_tokens(subject: SubjectModel) -> None:
    planted = planted_output_set(subject)
    assert planted.matrix.shape == (len(PLANTED_OUTPUTS), subject.d_model)
    assert planted.hook == "blocks.27.hook_resid_post"
    assert torch.allclose(planted.matrix.norm(dim=1), torch.ones(len(PLANTED_OUTPUTS)), atol=1e-5)
    assert planted_output_description(0) == "makes the model say names of weekdays"
    assert all(len(ids) >= TOP for ids in planted.token_ids)


def test_the_direct_path_of_a_planted_output_direction_is_its_own_token_set(subject: SubjectModel) -> None:
    planted = planted_output_set(subject)
    source = DirectionSource(subject, planted.matrix, planted.hook, list(range(len(PLANTED_OUTPUTS))))
    writes = source.write_directions()
    assert writes is not None and set(writes.hooks) == {planted.hook}
    direct = direct_path(subject, writes.vectors, TOP)
    for i, name in enumerate(planted.names):
        top = direct.promoted_ids[i].tolist()
        assert set(top) <= set(planted.token_ids[i]), (name, subject.decode_tokens(top))
        assert not set(direct.suppressed_ids[i].tolist()) & set(planted.token_ids[i])
    # blocking over features changes nothing
    blocked = direct_path(subject, writes.vectors, TOP, block=2)
    assert torch.equal(blocked.promoted_ids, direct.promoted_ids)
    assert torch.allclose(blocked.suppressed_values, direct.suppressed_values)


def test_steering_a_planted_output_direction_raises_its_token_set_first(subject: SubjectModel) -> None:
    planted = planted_output_set(subject)
    source = DirectionSource(subject, planted.matrix, planted.hook, list(range(len(PLANTED_OUTPUTS))))
    writes = source.write_directions()
    assert writes is not None
    prompts = neutral_prompts(subject, CorpusConfig(), 2, 10)
    assert prompts.shape == (2, 10)
    amounts = torch.full((len(PLANTED_OUTPUTS),), 40.0)
    change = steering_topk(subject, prompts, writes.hooks, writes.vectors, amounts, TOP, batch_rows=8)
    for i, name in enumerate(planted.names):
        top = change.raised_ids[i].tolist()
        in_set = [t in planted.token_ids[i] for t in top]
        assert in_set[0] and sum(in_set) >= TOP - 1, (name, subject.decode_tokens(top))  # " animal" may slip in
        assert change.raised_values[i, 0] > 1.0 > change.lowered_values[i, 0]
    assert change.rows == 2 * (len(PLANTED_OUTPUTS) + 1)


def test_batched_steering_equals_the_features_own_edit(subject: SubjectModel) -> None:
    """Adding a neuron's down-projection column at hook_mlp_out, rows batched, is its NeuronEdit."""
    source = MlpNeuronSource(subject, [20], [3, 700])
    writes = source.write_directions()
    assert writes is not None and writes.hooks == ("blocks.20.hook_mlp_out",) * 2
    prompts = neutral_prompts(subject, CorpusConfig(), 2, 8)
    amounts = torch.tensor([3.0, 5.0])
    change = steering_topk(subject, prompts, writes.hooks, writes.vectors, amounts, 6)
    clean = next_token_logprobs(subject, prompts)
    for i in range(2):
        edited = next_token_logprobs(subject, prompts, source.edit(i, add=float(amounts[i])))
        mean = (edited - clean).mean(dim=(0, 1))
        assert torch.equal(mean.topk(6).indices, change.raised_ids[i])
        assert torch.allclose(mean.topk(6).values, change.raised_values[i], atol=1e-4)


def test_write_directions_of_each_source(subject: SubjectModel) -> None:
    neurons = MlpNeuronSource(subject, [3, 4], [0, 9])
    writes = neurons.write_directions()
    assert writes is not None
    down = subject.model.model.layers[4].mlp.down_proj.weight  # type: ignore[union-attr,index]
    assert torch.equal(writes.vectors[3], down[:, 9].float())
    both = signed(neurons, "both").write_directions()
    assert both is not None and both.vectors.shape == (8, subject.d_model)
    assert torch.equal(both.vectors[0], writes.vectors[0]) and torch.equal(both.vectors[1], -writes.vectors[0])
    assert both.hooks[:2] == ("blocks.3.hook_mlp_out",) * 2
    matrix = torch.randn(3, subject.d_model, generator=torch.Generator().manual_seed(0))
    directions = DirectionSource(subject, matrix, "blocks.6.hook_resid_post", [1]).write_directions()
    assert directions is not None
    assert torch.allclose(directions.vectors[0] @ matrix[1], torch.tensor(1.0), atol=1e-5)  # v / |v|^2
    assert DirectionSource(subject, matrix, "blocks.6.ln2.hook_normalized", [1]).write_directions() is None
    assert PlantedSource(subject, load_planted_features(None)[:2]).write_directions() is None


def test_direct_path_topk_on_a_known_unembedding() -> None:
    unembed = torch.eye(4) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]  # token t reads dimension t
    gain = torch.tensor([1.0, 1.0, -1.0, 0.5])
    vectors = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    result = direct_path_topk(unembed, gain, vectors, 2, block=1)
    assert result.promoted_ids.tolist() == [[3, 0]] and result.promoted_values.tolist() == [[2.0, 1.0]]
    assert result.suppressed_ids.tolist() == [[2, 1]] and result.suppressed_values.tolist() == [[-3.0, 0.0]]


@pytest.mark.parametrize("indices", [[], [2, 0]])
def test_planted_output_kind_builds_a_direction_source(subject: SubjectModel, indices: list[int]) -> None:
    from autointerp.config import load_config
    from autointerp.subject.kinds import build_feature_source

    config = load_config(None, ["features.kind=planted_output", f"features.indices={indices}"])
    source = build_feature_source(config.features, subject)
    assert source.kind == "direction" and source.indices == (indices or list(range(len(PLANTED_OUTPUTS))))
    assert set(source.hooks) == {"blocks.27.hook_resid_post"}
