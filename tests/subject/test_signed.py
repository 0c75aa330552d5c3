"""features.sign: the negative pole of gated-MLP neurons, and both poles as two features."""

from pathlib import Path

import torch

from autointerp.collect.stage import run_collect
from autointerp.config import load_config
from autointerp.store.database import Store
from autointerp.subject import SubjectModel, build_feature_source, mlp_neuron_activations
from autointerp.subject.interventions import NeuronEdit
from autointerp.subject.kinds import feature_source_for
from tests.conftest import tiny_config


def _ids(subject: SubjectModel) -> torch.Tensor:
    text = "Gated MLP neurons swing both ways, 12 times a day."
    return subject.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def test_both_poles_are_two_features_and_edits_flip_sign(subject: SubjectModel) -> None:
    settings = ["features.layer=4", "features.indices=[7, 300]", "features.sign=both", "features.skip_first_tokens=0"]
    config = load_config(None, settings).features  # every token read, to compare with the model's
    source = build_feature_source(config, subject)
    assert source.feature_ids == [f"smollm2-135m/mlp.4/{i}{p}" for i in (7, 300) for p in "+-"]
    assert source.indices == [7, 7, 300, 300] and source.kind == "neuron"
    ids = _ids(subject)
    raw = mlp_neuron_activations(subject, ids, 4, [7, 300])
    acts = source.activations(ids)
    assert torch.allclose(acts[..., 0], raw[..., 0].relu()) and torch.allclose(acts[..., 1], (-raw[..., 0]).relu())
    assert (acts[..., 1] > 0).any()  # SiLU-gated neurons do go negative
    assert torch.cat(source.activation_chunks(ids), dim=-1).shape[-1] == 4
    assert source.edit(1, set_to=2.0, add=1.0) == NeuronEdit(layer=4, index=7, set_to=-2.0, add=-1.0)
    assert source.edit(2, add=3.0) == NeuronEdit(layer=4, index=300, add=3.0)
    negative = build_feature_source(config.model_copy(update={"sign": "negative"}), subject)
    assert negative.feature_ids == ["smollm2-135m/mlp.4/7-", "smollm2-135m/mlp.4/300-"]
    row = {"id": "smollm2-135m/mlp.4/300-", "kind": "neuron", "idx": 300, "hook": "mlp.4"}
    alone = feature_source_for(config, subject, row)
    assert alone.feature_ids == ["smollm2-135m/mlp.4/300-"]
    assert torch.allclose(alone.activations(ids)[..., 0], (-raw[..., 1]).relu())


def test_collecting_both_poles_stores_them_apart(subject: SubjectModel, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "features.sign=both", "features.indices=[5]", "corpus.max_windows=16")
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, {}, config.config_hash(), "test", None)
    assert run_collect(config, store, run_id) == 2
    features = {f.id: f for f in store.features(run_id)}
    assert set(features) == {"smollm2-135m/mlp.15/5+", "smollm2-135m/mlp.15/5-"}
    assert all(f.max_activation > 0 and f.idx == 5 for f in features.values())
    exemplars = store.exemplars(run_id, "smollm2-135m/mlp.15/5-")
    assert exemplars and all(min(e.activations) >= 0 for e in exemplars)
    assert run_id != tiny_config(tmp_path, "features.indices=[5]", "corpus.max_windows=16").resolved_run_id()
