"""Interventions on the real subject model change exactly what their hook affects."""

import torch

from autointerp.subject import SubjectModel, mlp_neuron_activations
from autointerp.subject.hooks import mlp_down_proj
from autointerp.subject.interventions import NeuronEdit, edit_neuron, generate_with_edit, next_token_logprobs

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
    column = mlp_down_proj(subject, LAYER).weight[:, INDEX]
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
