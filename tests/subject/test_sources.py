"""Each feature source on the real model, against activations read independently."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from autointerp.config import load_config
from autointerp.corpus.sources import corpus_windows
from autointerp.errors import ConfigError, FeatureError
from autointerp.experiments.context import FeatureTarget
from autointerp.subject import SubjectModel, build_feature_source, mlp_neuron_activations
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS, feature_source_for, skipped_tokens
from autointerp.subject.sae import load_sae
from autointerp.subject.sae_train import SaeTrainingConfig, train_and_save_sae
from autointerp.subject.sources import PlantedSource

TEXT = "The 3 cats sat on the mat in 1999, said Marie."


def _source(subject: SubjectModel, *overrides: str):  # type: ignore[no-untyped-def]
    """Returns the source the settings build, reading every token: these tests compare it with the model read
    independently (each window's first token, skipped by default, has its own test in test_sources.py)."""
    return build_feature_source(load_config(None, ["features.skip_first_tokens=0", *overrides]).features, subject)


def _ids(subject: SubjectModel) -> torch.Tensor:
    return subject.tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _hidden_states(subject: SubjectModel, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return subject.model(input_ids=ids, output_hidden_states=True).hidden_states  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def trained_sae(subject: SubjectModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SAE trained by the project's trainer (tiny: 240 tokens, 30 steps)."""
    folder = tmp_path_factory.mktemp("sae") / "sae"
    settings = SaeTrainingConfig(layer=3, tokens=240, window_tokens=16, expansion=1, steps=30, batch_size=64)
    train_and_save_sae(subject, settings, folder)
    return folder


def test_mlp_source_one_layer_several_layers_and_ids(subject: SubjectModel) -> None:
    ids = _ids(subject)
    one = _source(subject, "features.layer=4", "features.indices=[7, 300]")
    assert one.feature_ids == ["smollm2-135m/mlp.4/7", "smollm2-135m/mlp.4/300"]
    assert torch.equal(one.activations(ids), mlp_neuron_activations(subject, ids, 4, [7, 300]))
    several = _source(subject, "features.layers=[2, 5]", "features.indices=[7, 300]")
    assert several.hooks == ["mlp.2", "mlp.2", "mlp.5", "mlp.5"] and several.indices == [7, 300, 7, 300]
    acts = several.activations(ids)
    assert torch.allclose(acts[..., 2:], mlp_neuron_activations(subject, ids, 5, [7, 300]))
    every = _source(subject, "features.layers='all'", "features.count='all'")
    assert every.n_features == 30 * 1536 and every.feature_ids[-1] == "smollm2-135m/mlp.29/1535"


def test_sae_round_trip_is_exact_and_source_reads_resid_post(subject: SubjectModel, trained_sae: Path) -> None:
    cfg = json.loads((trained_sae / "cfg.json").read_text())
    metrics = json.loads((trained_sae / "metrics.json").read_text())
    assert cfg["hook_name"] == "blocks.3.hook_resid_post" and cfg["d_in"] == 576 and cfg["d_sae"] == 576
    assert cfg["autointerp_metrics"] == metrics and metrics["fvu"] > 0 and metrics["l0"] > 0
    sae = load_sae(trained_sae)
    sae.save(trained_sae.parent / "copy")
    again = load_sae(trained_sae.parent / "copy")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(again, name))
    ids = _ids(subject)
    source = _source(subject, "features.kind=sae", f"features.path='{trained_sae}'", "features.indices=[0, 9, 100]")
    assert source.feature_ids == [f"smollm2-135m/sae.3/{i}" for i in (0, 9, 100)]
    resid_post = _hidden_states(subject, ids)[4]  # hidden_states[L + 1] is the output of block L
    expected = torch.relu((resid_post - sae.b_dec) @ sae.W_enc + sae.b_enc)[..., [0, 9, 100]]
    assert torch.allclose(source.activations(ids), expected, atol=1e-5)


def test_jumprelu_threshold(subject: SubjectModel, trained_sae: Path) -> None:
    sae = load_sae(trained_sae)
    sae.threshold = torch.full((sae.d_sae,), 0.5)
    sae.save(trained_sae.parent / "jump")
    loaded = load_sae(trained_sae.parent / "jump")
    assert loaded.threshold is not None and json.loads((trained_sae.parent / "jump/cfg.json").read_text())[
        "architecture"
    ] == ("jumprelu")
    x = torch.randn(5, 576)
    latents = loaded.encode(x)
    assert ((latents == 0) | (latents > 0.5)).all()


def test_direction_source_is_a_projection(subject: SubjectModel, tmp_path: Path) -> None:
    matrix = torch.randn(3, 576, generator=torch.Generator().manual_seed(0))
    save_file({"directions": matrix}, str(tmp_path / "d.safetensors"))
    np.save(tmp_path / "d.npy", matrix.numpy())
    ids = _ids(subject)
    resid_post = _hidden_states(subject, ids)[6]
    for name in ("d.safetensors", "d.npy"):
        source = _source(subject, "features.kind=direction", f"features.path='{tmp_path / name}'", "features.layer=5")
        assert source.feature_ids == [f"smollm2-135m/direction.5/{i}" for i in range(3)]
        assert torch.allclose(source.activations(ids), resid_post @ matrix.T, atol=1e-4)
    pre = _source(
        subject,
        "features.kind=direction",
        f"features.path='{tmp_path / 'd.npy'}'",
        "features.hook='blocks.5.hook_resid_pre'",
        "features.indices=[1]",
    )
    assert torch.allclose(pre.activations(ids), _hidden_states(subject, ids)[5] @ matrix[1:2].T, atol=1e-4)


def test_planted_source_builtin_and_user_file(subject: SubjectModel, tmp_path: Path) -> None:
    source = _source(subject, "features.kind=planted")
    assert isinstance(source, PlantedSource) and "planted/digits" in source.feature_ids
    ids = _ids(subject)
    acts = source.activations(ids)
    digits = source.feature_ids.index("planted/digits")
    tokens = subject.decode_tokens(ids[0].tolist())
    assert acts[0, :, digits].tolist() == [1.0 if t.strip().isdigit() else 0.0 for t in tokens]
    user = tmp_path / "mine.py"
    user.write_text(
        "from autointerp.subject.planted import PlantedFeature\n"
        "PLANTED_FEATURES = [PlantedFeature('comma', 'commas', lambda ts: [2.0 * (',' in t) for t in ts])]\n"
    )
    mine = _source(subject, "features.kind=planted", f"features.path='{user}'")
    assert mine.feature_ids == ["planted/comma"]
    assert mine.activations(ids)[0].sum() == 2.0 * sum("," in t for t in tokens)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["features.layer=30"], FeatureError, r"layer 30 does not exist: smollm2-135m has layers 0\.\.29"),
        (["features.layers=[1, 31]"], FeatureError, r"layer 31 does not exist"),
        (["features.indices=[1536]"], FeatureError, r"neuron index 1536 does not exist: neurons are 0\.\.1535"),
        (["features.kind=sae"], FeatureError, r"needs features.path"),
        (["features.kind=sae", "features.path='/nope'"], FeatureError, r"folder /nope does not exist"),
        (["features.kind=direction", "features.path='/nope.npy'"], FeatureError, r"direction file /nope\.npy"),
        (["features.kind=planted", "features.path='/nope.py'"], ConfigError, r"planted-feature file /nope\.py"),
        (["features.kind=neurons"], ConfigError, r"features\.kind"),
        (["features.count=0"], ConfigError, r"features\.count"),
    ],
)
def test_bad_feature_config_is_one_clear_line(
    subject: SubjectModel, overrides: list[str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        _source(subject, *overrides)
    assert "\n" not in str(caught.value)


def test_bad_direction_width_hook_and_sae_index(subject: SubjectModel, tmp_path: Path, trained_sae: Path) -> None:
    np.save(tmp_path / "narrow.npy", np.ones((2, 10), dtype=np.float32))
    with pytest.raises(FeatureError, match=r"directions are 10-wide .* must be \[n, 576\]"):
        _source(subject, "features.kind=direction", f"features.path='{tmp_path / 'narrow.npy'}'")
    np.save(tmp_path / "d.npy", np.ones((2, 576), dtype=np.float32))
    for hook, message in [("blocks.3.hook_attn", "not supported"), ("layer3", "not understood")]:
        with pytest.raises(FeatureError, match=message):
            _source(
                subject, "features.kind=direction", f"features.path='{tmp_path / 'd.npy'}'", f"features.hook={hook}"
            )
    with pytest.raises(FeatureError, match=r"SAE latent index 576 does not exist"):
        _source(subject, "features.kind=sae", f"features.path='{trained_sae}'", "features.indices=[576]")


def test_each_windows_first_tokens_are_not_read_by_default(subject: SubjectModel, tmp_path: Path) -> None:
    """Residual-stream directions on the built-in corpus: read at every token, several of them peak in most
    windows at the first one (the attention sink); by default the first two tokens are given as 0, in the run's
    source and in one rebuilt from a stored row, and the rest is unchanged. Planted features read every token."""
    path = tmp_path / "directions.npy"
    np.save(path, torch.randn(8, 576, generator=torch.Generator().manual_seed(0)).numpy())
    settings = ["features.kind=direction", f"features.path='{path}'", "features.layer=6", "features.count=8"]
    config = load_config(None, settings)
    windows = list(corpus_windows(subject.tokenizer, config.corpus.model_copy(update={"max_windows": 16})))
    ids = torch.tensor([w.token_ids for w in windows])
    every = _source(subject, *settings).activations(ids)  # every token read
    peaks_first = (every.abs().argmax(dim=1) == 0).float().mean(dim=0)  # per direction: share of windows
    assert int((peaks_first >= 0.5).sum()) >= 3, peaks_first  # 4 of 8 here
    source = build_feature_source(config.features, subject)
    assert skipped_tokens(config.features) == source.skipped_tokens == AUTO_SKIPPED_TOKENS == 2
    skipped = source.activations(ids)
    assert torch.equal(skipped[:, :2], torch.zeros_like(skipped[:, :2])) and torch.equal(skipped[:, 2:], every[:, 2:])
    row = {"id": source.feature_ids[2], "kind": "direction", "idx": source.indices[2], "hook": source.hooks[2]}
    alone = feature_source_for(config.features, subject, row)
    alone_acts = alone.activations(ids)[..., 0]
    assert float(alone_acts[:, :2].abs().sum()) == 0.0 and torch.allclose(alone_acts, skipped[..., 2], atol=1e-3)
    with torch.inference_mode():  # collection reads under inference mode; the chunks are blanked the same
        assert torch.equal(torch.cat(source.activation_chunks(ids), dim=-1), skipped)
    assert skipped_tokens(load_config(None, ["features.kind=planted"]).features) == 0
    assert skipped_tokens(load_config(None, ["features.kind=planted", "features.skip_first_tokens=2"]).features) == 2


def test_an_sae_source_skips_its_first_token_outside_inference_mode(subject: SubjectModel, trained_sae: Path) -> None:
    """The SAE encodes under inference mode; blanking its result after that must not fail (experiments read
    activations with gradients off, not under inference mode)."""
    settings = ["features.kind=sae", f"features.path='{trained_sae}'", "features.count=4"]
    acts = build_feature_source(load_config(None, settings).features, subject).activations(_ids(subject))
    assert acts.is_inference() and float(acts[:, :2].abs().sum()) == 0.0 and float(acts[:, 2:].abs().sum()) > 0


def test_an_experiment_text_is_read_at_every_token_after_a_start_token(subject: SubjectModel, tmp_path: Path) -> None:
    """A proposer's text is its own sequence: a source that skips the first token would miss a text's first word
    (a one-word text would read 0), so the text goes after as many start tokens and every token is read."""
    path = tmp_path / "directions.npy"
    np.save(path, torch.randn(2, 576, generator=torch.Generator().manual_seed(1)).numpy())
    config = load_config(None, ["features.kind=direction", f"features.path='{path}'", "features.indices=[1]"])
    source = build_feature_source(config.features, subject)
    target = FeatureTarget({"id": source.feature_ids[0], "max_activation": 1.0}, source)
    every = _source(subject, "features.kind=direction", f"features.path='{path}'", "features.indices=[1]")
    ids = subject.tokenizer(" Monday morning", add_special_tokens=False)["input_ids"]
    start = [subject.start_token_id] * 2
    read = every.activations(torch.tensor([[*start, *ids]]))[0, 2:, 0]
    assert subject.start_token_id == subject.tokenizer.bos_token_id
    assert target.max_activation_of(subject, " Monday morning") == pytest.approx(float(read.max()), rel=1e-5)
    [word] = subject.tokenizer(" Monday", add_special_tokens=False)["input_ids"]
    alone = every.activations(torch.tensor([[*start, word]]))[0, 2, 0]
    assert target.max_activation_of(subject, " Monday") == pytest.approx(float(alone), rel=1e-5) != 0.0


def test_the_sae_trainer_reads_no_token_a_run_leaves_unread(subject: SubjectModel) -> None:
    """`train-sae` trains on the tokens a run reads: each window's first `AUTO_SKIPPED_TOKENS` (the attention
    sink, whose residual norm is many times any other's) are left out of its training rows."""
    from autointerp.corpus.sources import iter_windows
    from autointerp.subject.sae_train import residual_activations

    settings = SaeTrainingConfig(layer=3, tokens=28, window_tokens=16)
    rows = residual_activations(subject, settings)
    ids = torch.tensor(
        [w.token_ids for w in iter_windows(subject.tokenizer, settings.corpus, window_tokens=16, max_windows=2)]
    )
    hidden = _hidden_states(subject, ids)[4]  # block 3's output
    expected = hidden[:, AUTO_SKIPPED_TOKENS:].reshape(-1, hidden.shape[-1])
    assert rows.shape == (28, hidden.shape[-1])  # two windows of 14 read tokens
    assert torch.allclose(rows, expected, atol=1e-4)
