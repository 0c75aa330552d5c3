from pathlib import Path

import pytest
import torch

from autointerp.errors import FeatureError, SubjectModelError
from autointerp.subject import SubjectModel, check_neuron_indices, load_subject_model, mlp_neuron_activations
from autointerp.subject.hooks import mlp_down_proj


def test_embedded_model_shape(subject: SubjectModel) -> None:
    assert subject.slug == "smollm2-135m"
    assert (subject.n_layers, subject.d_mlp, subject.d_model) == (30, 1536, 576)
    assert subject.architecture.name == "llama"  # SmolLM2 is a Llama


def test_neuron_activations_equal_the_mlp_input_of_a_full_forward(subject: SubjectModel) -> None:
    ids = subject.tokenizer("The cat sat on the mat.", return_tensors="pt")["input_ids"]
    seen: dict[str, torch.Tensor] = {}
    handle = mlp_down_proj(subject, 7).register_forward_pre_hook(lambda _m, inputs: seen.update(x=inputs[0]))
    try:
        with torch.inference_mode():
            subject.model(input_ids=ids)
    finally:
        handle.remove()
    early = mlp_neuron_activations(subject, ids, 7, [3, 1000])
    assert early.shape == (1, ids.shape[1], 2)
    assert torch.allclose(early, seen["x"][..., [3, 1000]])


def test_bad_layer_and_index_are_clear_errors(subject: SubjectModel) -> None:
    with pytest.raises(FeatureError, match=r"layer 30 does not exist: smollm2-135m has layers 0..29"):
        mlp_down_proj(subject, 30)
    with pytest.raises(FeatureError, match=r"neuron index 1536 does not exist"):
        check_neuron_indices(subject, [0, 1536])


def test_unknown_model_names_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(SubjectModelError, match="cannot load subject model 'no-such-org/no-such-model'"):
        load_subject_model("no-such-org/no-such-model")
    with pytest.raises(SubjectModelError, match=r"GGUF file .* does not exist"):
        load_subject_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubjectModelError, match=r"has no config\.json"):
        load_subject_model(str(tmp_path / "empty"))


def test_threads_sharing_the_model_read_and_edit_only_their_own_forward_passes(subject: SubjectModel) -> None:
    """Two shards of a run in threads of one process share one model: a hook registered by one thread
    must not read, stop or edit another thread's forward pass."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from autointerp.subject.interventions import NeuronEdit, edit_neuron

    def ids_of(text: str) -> torch.Tensor:
        return subject.tokenizer(text, return_tensors="pt")["input_ids"]

    short, long = ids_of("The cat sat on the mat."), ids_of("Numbers such as 12, 345 and 6789 were read aloud twice.")
    expected_short = mlp_neuron_activations(subject, short, 2, [5, 9])
    expected_long = mlp_neuron_activations(subject, long, 25, [5, 9])
    start = Barrier(3)

    def read(ids: torch.Tensor, layer: int, expected: torch.Tensor) -> int:
        start.wait()
        # close, not bitwise equal: another thread's hook would be far off (the edit sets 1e4) or stop the pass
        return sum(
            torch.allclose(mlp_neuron_activations(subject, ids, layer, [5, 9]), expected, rtol=1e-4, atol=1e-4)
            for _ in range(25)
        )

    def edit() -> int:  # an ablation in a third thread: large edits the readers must never see
        start.wait()
        for _ in range(25):
            with edit_neuron(subject, NeuronEdit(layer=1, index=5, set_to=1e4)):
                mlp_neuron_activations(subject, long, 25, [5])
        return 0

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(read, short, 2, expected_short), pool.submit(read, long, 25, expected_long)]
        editing = pool.submit(edit)
        assert [f.result() for f in futures] == [25, 25]
        editing.result()
