"""Interventions on the real subject model change exactly what their hook affects."""

import torch

from autointerp.subject import SubjectModel, mlp_neuron_activations
from autointerp.subject.hooks import capture, mlp_down_proj
from autointerp.subject.interventions import (
    NeuronEdit,
    _Positions,
    applied,
    edit_neuron,
    generate_with_edit,
    next_token_logprobs,
)
from autointerp.subject.planted import load_planted_features
from autointerp.subject.sae import SparseAutoencoder
from autointerp.subject.sources import (
    DirectionSource,
    MlpNeuronSource,
    PlantedSource,
    SaeLatentSource,
    skip_first_tokens,
)

LAYER, INDEX = 6, 123


def _residual_streams(subject: SubjectModel, ids: torch.Tensor, edit: NeuronEdit | None) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        if edit is None:
            return subject.model(input_ids=ids, output_hidden_states=True).hidden_states  # type: ignore[no-any-return]
        with edit_neuron(subject, edit):
            return subject.model(input_ids=ids, output_hidden_states=True).hidden_states  # type: ignore[no-any-return]


def test_zero_ablation_changes_the_block_output_by_exactly_the_neurons_contribution(subject: SubjectModel) -> None:
    ids = subject.tokenizer("The cat sat on the mat because it was warm.", return_tensors="pt")["input_ids"]
    clean = _residual_streams(subject, ids, None)
    ablated = _residual_streams(subject, ids, NeuronEdit(LAYER, INDEX, set_to=0.0))
    # hidden_states[i] is the residual stream entering block i; blocks before LAYER are untouched
    for i in range(LAYER + 1):
        assert torch.equal(clean[i], ablated[i])
    activation = mlp_neuron_activations(subject, ids, LAYER, [INDEX])[0, :, 0]
    weight = mlp_down_proj(subject, LAYER).weight
    assert isinstance(weight, torch.Tensor)
    column = weight[:, INDEX]
    expected = -activation[:, None] * column[None, :]
    assert torch.allclose(ablated[LAYER + 1][0] - clean[LAYER + 1][0], expected, atol=1e-4)
    assert not torch.allclose(clean[-1], ablated[-1])


def test_steering_with_strength_zero_is_a_no_op(subject: SubjectModel) -> None:
    ids = subject.tokenizer("Hello there, general", return_tensors="pt")["input_ids"]
    clean = next_token_logprobs(subject, ids)
    assert torch.equal(clean, next_token_logprobs(subject, ids, NeuronEdit(LAYER, INDEX, add=0.0)))
    assert not torch.allclose(clean, next_token_logprobs(subject, ids, NeuronEdit(LAYER, INDEX, add=20.0)))
    assert generate_with_edit(subject, "The", None, 5) == generate_with_edit(
        subject, "The", NeuronEdit(LAYER, INDEX), 5
    )


def test_the_hook_is_removed_after_the_edit(subject: SubjectModel) -> None:
    ids = subject.tokenizer("Numbers like 12 and 34", return_tensors="pt")["input_ids"]
    before = next_token_logprobs(subject, ids)
    next_token_logprobs(subject, ids, NeuronEdit(LAYER, INDEX, add=50.0))
    assert torch.equal(before, next_token_logprobs(subject, ids))


def _residual_after_block(subject: SubjectModel, ids: torch.Tensor, layer: int, edit: object) -> torch.Tensor:
    """The residual stream block `layer + 1` reads, under `edit`."""
    if edit is None:
        return capture(subject, ids, [f"blocks.{layer + 1}.hook_resid_pre"])[0][0]
    with applied(subject, edit):  # type: ignore[arg-type]
        return capture(subject, ids, [f"blocks.{layer + 1}.hook_resid_pre"])[0][0]


def test_direction_edits_move_the_projection_by_exactly_the_change(subject: SubjectModel) -> None:
    width = subject.model.config.hidden_size
    matrix = torch.randn(3, width, generator=torch.Generator().manual_seed(0))
    source = DirectionSource(subject, matrix, "blocks.4.hook_resid_post", [0, 2])
    ids = subject.tokenizer("Direction edits act on the residual stream.", return_tensors="pt")["input_ids"]
    vector = matrix[2]
    clean = _residual_after_block(subject, ids, 4, None)
    ablated = _residual_after_block(subject, ids, 4, source.edit(1, set_to=0.0))
    steered = _residual_after_block(subject, ids, 4, source.edit(1, add=3.0))
    assert torch.allclose(ablated @ vector, torch.zeros(ids.shape[1]), atol=1e-3)
    assert torch.allclose(steered @ vector - clean @ vector, torch.full((ids.shape[1],), 3.0), atol=1e-3)
    # the change is along the direction only
    change = ablated - clean
    assert torch.allclose(
        change - (change @ vector)[:, None] * vector / vector.dot(vector), torch.zeros_like(change), atol=1e-4
    )
    clean_logprobs = next_token_logprobs(subject, ids)
    assert torch.equal(clean_logprobs, next_token_logprobs(subject, ids, source.edit(1, add=0.0)))
    assert not torch.allclose(clean_logprobs, next_token_logprobs(subject, ids, source.edit(1, add=30.0)))


def test_sae_latent_ablation_removes_its_decoder_share(subject: SubjectModel) -> None:
    width = subject.model.config.hidden_size
    generator = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder(
        W_enc=torch.randn(width, 8, generator=generator) * 0.05,
        b_enc=torch.full((8,), 50.0),  # fires almost everywhere, by different amounts
        W_dec=torch.randn(8, width, generator=generator),
        b_dec=torch.zeros(width),
        hook_name="blocks.3.hook_resid_post",
    )
    source = SaeLatentSource(subject, sae, [5])
    ids = subject.tokenizer("Sparse latents have decoder rows.", return_tensors="pt")["input_ids"]
    latent = source.activations(ids)[0, :, 0]
    assert (latent > 0).any()
    clean = _residual_after_block(subject, ids, 3, None)
    ablated = _residual_after_block(subject, ids, 3, source.edit(0, set_to=0.0))
    expected = -latent[:, None] * sae.W_dec[5][None, :]
    assert torch.allclose(ablated - clean, expected, atol=1e-3)


def test_planted_features_have_no_model_edit(subject: SubjectModel) -> None:
    assert PlantedSource(subject, load_planted_features()[:1]).edit(0, set_to=0.0) is None


def test_edits_leave_the_positions_a_source_skips_alone(subject: SubjectModel) -> None:
    """A source that does not read a window's first two tokens (the attention sink) does not edit them either:
    ablating there would move the sink's residual, which reads many times the direction's value elsewhere."""
    width = subject.model.config.hidden_size
    matrix = torch.randn(3, width, generator=torch.Generator().manual_seed(0))
    source = skip_first_tokens(DirectionSource(subject, matrix, "blocks.4.hook_resid_post", [0, 2]), 2)
    ids = subject.tokenizer("Direction edits act on the residual stream.", return_tensors="pt")["input_ids"]
    vector = matrix[2]
    edit = source.edit(1, set_to=0.0)
    assert edit is not None and edit.skip_positions == 2
    clean = _residual_after_block(subject, ids, 4, None)
    ablated = _residual_after_block(subject, ids, 4, edit)
    assert torch.equal(ablated[:2], clean[:2])
    assert torch.allclose(ablated[2:] @ vector, torch.zeros(ids.shape[1] - 2), atol=1e-3)
    neuron = skip_first_tokens(MlpNeuronSource(subject, [LAYER], [INDEX]), 2).edit(0, set_to=0.0)
    assert neuron == NeuronEdit(LAYER, INDEX, set_to=0.0, skip_positions=2)
    clean_streams, ablated_streams = _residual_streams(subject, ids, None), _residual_streams(subject, ids, neuron)
    assert torch.equal(clean_streams[LAYER + 1][0, :2], ablated_streams[LAYER + 1][0, :2])
    assert not torch.allclose(clean_streams[LAYER + 1][0, 2:], ablated_streams[LAYER + 1][0, 2:])


def test_a_generation_counts_positions_across_its_steps() -> None:
    """Generating feeds the prompt, then one token at a time: the positions left alone are the sequence's first."""
    positions = _Positions(2)
    assert [positions.unedited(n) for n in (1, 1, 1, 1)] == [1, 1, 0, 0]
    positions = _Positions(2)
    assert [positions.unedited(n) for n in (5, 1)] == [2, 0]
