"""Dictionary formats: sparsify TopK SAEs and transcoders, SAELens JumpReLU / TopK / transcoders,
read on the real model from folders the tests write."""

import contextlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autointerp.config import load_config
from autointerp.errors import FeatureError
from autointerp.subject import SubjectModel, build_feature_source
from autointerp.subject.hooks import capture
from autointerp.subject.interventions import applied
from autointerp.subject.kinds import feature_source_for
from autointerp.subject.sae import SparseAutoencoder, load_sae
from autointerp.subject.sources import SaeLatentSource
from autointerp.subject.sparsify import dense_latents, load_sparsify, save_sparsify

WIDTH = 576
TEXT = "Transcoders read the MLP input and write its output, 42 times."


def _dictionary(d_in: int = WIDTH, d_sae: int = 32, seed: int = 0, **extra: object) -> SparseAutoencoder:
    generator = torch.Generator().manual_seed(seed)
    return SparseAutoencoder(
        W_enc=torch.randn(d_in, d_sae, generator=generator) * 0.05,
        b_enc=torch.randn(d_sae, generator=generator),
        W_dec=torch.randn(d_sae, d_in, generator=generator),
        b_dec=torch.randn(d_in, generator=generator) * 0.01,
        hook_name="blocks.3.hook_resid_post",
        **extra,  # type: ignore[arg-type]
    )


def _source(subject: SubjectModel, *overrides: str):  # type: ignore[no-untyped-def]
    """Returns the source the settings build, reading every token: these tests compare it with the model read
    independently (each window's first token, skipped by default, has its own test in test_sources.py)."""
    return build_feature_source(load_config(None, ["features.skip_first_tokens=0", *overrides]).features, subject)


def _ids(subject: SubjectModel) -> torch.Tensor:
    return subject.tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"]


def test_topk_keeps_k_latents_per_token() -> None:
    sae = _dictionary(k=3)
    x = torch.randn(7, WIDTH)
    latents = sae.encode(x)
    assert ((latents > 0).sum(dim=-1) <= 3).all() and (latents > 0).any()
    assert torch.equal(sae.encode(x, torch.tensor([4, 9])), latents[:, [4, 9]])


def test_own_sparsify_reader_agrees_with_the_sparsify_package(tmp_path: Path) -> None:
    sparsify = pytest.importorskip("sparsify")
    for transcode, folder in ((False, "layers.3"), (True, "layers.3.mlp")):
        cfg = sparsify.SparseCoderConfig(num_latents=48, k=5, transcode=transcode)
        coder = sparsify.SparseCoder(WIDTH, cfg)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for parameter in coder.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        coder.save_to_disk(tmp_path / folder)
        ours = load_sparsify(tmp_path / folder)
        assert ours.k == 5 and ours.d_sae == 48 and ours.is_transcoder == transcode
        x = torch.randn(6, WIDTH, generator=generator)
        with torch.no_grad():
            theirs = coder.encode(x)
        expected = dense_latents(theirs.top_acts, theirs.top_indices, 48)
        assert torch.allclose(ours.encode(x), expected, atol=1e-5)
        # and the reverse: what we write, sparsify reads to the same latents
        save_sparsify(ours, tmp_path / "again" / folder)
        back = sparsify.SparseCoder.load_from_disk(tmp_path / "again" / folder)
        with torch.no_grad():
            again = back.encode(x)
        assert torch.allclose(dense_latents(again.top_acts, again.top_indices, 48), expected, atol=1e-5)
    assert load_sparsify(tmp_path / "layers.3").hook_name == "blocks.3.hook_resid_post"
    transcoder = load_sparsify(tmp_path / "layers.3.mlp")
    assert (transcoder.hook_name, transcoder.hook_name_out) == ("blocks.3.mlp.hook_in", "blocks.3.hook_mlp_out")


def test_sparsify_source_reads_resid_post(subject: SubjectModel, tmp_path: Path) -> None:
    sae = _dictionary(k=4)
    save_sparsify(sae, tmp_path / "layers.3")
    source = _source(subject, "features.kind=sparsify", f"features.path='{tmp_path / 'layers.3'}'", "features.count=5")
    assert source.kind == "sae" and all(f.startswith("smollm2-135m/sae.3/") for f in source.feature_ids)
    ids = _ids(subject)
    (resid_post,) = capture(subject, ids, ["blocks.3.hook_resid_post"])
    expected = sae.encode(resid_post)[..., source.indices]
    assert torch.allclose(source.activations(ids), expected, atol=1e-5)
    # the run's features config rebuilds one latent from its row
    row = {"id": source.feature_ids[0], "kind": "sae", "idx": source.indices[0], "hook": source.hooks[0]}
    settings = ["features.kind=sparsify", f"features.path='{tmp_path / 'layers.3'}'", "features.skip_first_tokens=0"]
    config = load_config(None, settings).features
    alone = feature_source_for(config, subject, row)
    assert torch.allclose(alone.activations(ids)[..., 0], expected[..., 0], atol=1e-5)


def _mlp_io(subject: SubjectModel, ids: torch.Tensor, layer: int, edit: object = None) -> tuple[torch.Tensor, ...]:
    """Returns (MLP input, MLP output) of block `layer`, under `edit` (applied before these hooks run)."""
    seen: dict[str, torch.Tensor] = {}
    mlp = subject.model.model.layers[layer].mlp  # type: ignore[union-attr,index]
    with contextlib.ExitStack() as stack:
        if edit is not None:
            stack.enter_context(applied(subject, edit))  # type: ignore[arg-type]
        handles = [
            mlp.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0].detach().clone())),
            mlp.register_forward_hook(lambda _m, _a, out: seen.update(y=out.detach().clone())),
        ]
        try:
            with torch.inference_mode():
                subject.model(input_ids=ids)
        finally:
            for handle in handles:
                handle.remove()
    return seen["x"], seen["y"]


def test_transcoder_reads_mlp_input_and_edits_mlp_output(subject: SubjectModel, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(5)
    transcoder = _dictionary(k=6, hook_name_out="blocks.3.hook_mlp_out")
    transcoder.hook_name = "blocks.3.ln2.hook_normalized"
    transcoder.apply_b_dec_to_input = False
    transcoder.b_enc = torch.full((32,), 2.0) + torch.rand(32, generator=generator)  # fires on most tokens
    save_sparsify(transcoder, tmp_path / "layers.3.mlp")
    transcoder.save(tmp_path / "saelens")  # the SAELens layout of the same transcoder
    ids = _ids(subject)
    clean_in, clean_out = _mlp_io(subject, ids, 3)
    (normalized,) = capture(subject, ids, ["blocks.3.ln2.hook_normalized"])  # the MLP input before ln2's gain
    # sparsify reads the MLP module's input (after the gain); the SAELens folder names ln2.hook_normalized
    expected_by_path = {
        tmp_path / "layers.3.mlp": transcoder.encode(clean_in),
        tmp_path / "saelens": transcoder.encode(normalized),
    }
    for path, expected in expected_by_path.items():
        source = _source(subject, "features.kind=transcoder", f"features.path='{path}'", "features.indices=[2, 7]")
        assert isinstance(source, SaeLatentSource) and source.kind == "transcoder"
        assert source.feature_ids == ["smollm2-135m/transcoder.3/2", "smollm2-135m/transcoder.3/7"]
        acts = source.activations(ids)
        assert torch.allclose(acts, expected[..., [2, 7]], atol=1e-4)
        latent = acts[0, :, 0]
        assert (latent > 0).any()
        edited_in, ablated_out = _mlp_io(subject, ids, 3, source.edit(0, set_to=0.0))
        assert torch.equal(edited_in, clean_in)  # nothing upstream changes
        assert torch.allclose(ablated_out - clean_out, -latent[None, :, None] * transcoder.W_dec[2], atol=1e-3)
        _, steered_out = _mlp_io(subject, ids, 3, source.edit(0, add=2.0))
        assert torch.allclose(steered_out - clean_out, 2.0 * transcoder.W_dec[2].expand_as(clean_out), atol=1e-3)
    saelens_cfg = json.loads((tmp_path / "saelens" / "cfg.json").read_text())
    assert saelens_cfg["architecture"] == "topk_transcoder" and saelens_cfg["hook_name_out"] == "blocks.3.hook_mlp_out"


def test_saelens_v6_metadata_jumprelu_log_threshold_and_topk(tmp_path: Path) -> None:
    sae = _dictionary()
    folder = tmp_path / "v6"
    folder.mkdir()
    log_threshold = torch.full((32,), 0.2).log()
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    save_file({**tensors, "log_threshold": log_threshold}, str(folder / "sae_weights.safetensors"))
    metadata = {"hook_name": "blocks.3.hook_resid_post"}
    cfg = {"architecture": "jumprelu", "d_in": WIDTH, "d_sae": 32, "metadata": metadata}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_sae(folder)
    assert loaded.hook_name == "blocks.3.hook_resid_post" and loaded.threshold is not None
    latents = loaded.encode(torch.randn(9, WIDTH))
    assert ((latents == 0) | (latents > 0.2 - 1e-6)).all()
    topk_folder = tmp_path / "topk"
    _dictionary(k=2).save(topk_folder)
    assert load_sae(topk_folder).k == 2


@pytest.mark.parametrize(
    ("kind", "folder", "message"),
    [
        ("sparsify", "narrow/layers.3", r"SAE reads 100-wide activations but blocks\.3\.hook_resid_post .* 576 wide"),
        ("sae", "sparsify/layers.3", r"sparsify layout .* features\.kind = 'sparsify'"),
        ("sparsify", "tc/layers.3.mlp", r"is a transcoder; set features\.kind = 'transcoder'"),
        ("transcoder", "sparsify/layers.3", r"is an SAE, not a transcoder; set features\.kind = 'sparsify'"),
        ("sparsify", "sparsify", r"one sparsify dictionary per hook point; set features\.path to one: .*layers\.3"),
        ("sparsify", "odd/encoder", r"cannot tell the hook point from the sparsify folder name 'encoder'"),
    ],
)
def test_bad_dictionaries_are_one_clear_line(
    subject: SubjectModel, tmp_path: Path, kind: str, folder: str, message: str
) -> None:
    save_sparsify(_dictionary(d_in=100, k=2), tmp_path / "narrow/layers.3")
    save_sparsify(_dictionary(k=2), tmp_path / "sparsify/layers.3")
    save_sparsify(_dictionary(k=2, hook_name_out="blocks.3.hook_mlp_out"), tmp_path / "tc/layers.3.mlp")
    save_sparsify(_dictionary(k=2), tmp_path / "odd/encoder")
    with pytest.raises(FeatureError, match=message) as caught:
        _source(subject, f"features.kind={kind}", f"features.path='{tmp_path / folder}'")
    assert "\n" not in str(caught.value)


def test_trained_topk_sae_in_the_sparsify_layout(subject: SubjectModel, tmp_path: Path) -> None:
    from autointerp.subject.sae_train import SaeTrainingConfig, train_and_save_sae

    settings = SaeTrainingConfig(layer=3, tokens=240, window_tokens=16, expansion=1, steps=20, batch_size=64, k=8)
    metrics = train_and_save_sae(subject, settings, tmp_path / "layers.3", "sparsify")
    assert 0 < metrics.l0 <= 8
    cfg = json.loads((tmp_path / "layers.3" / "cfg.json").read_text())
    assert cfg["k"] == 8 and cfg["d_in"] == WIDTH and not cfg["transcode"]
    source = _source(subject, "features.kind=sparsify", f"features.path='{tmp_path / 'layers.3'}'", "features.count=3")
    assert source.activations(_ids(subject)).shape[-1] == 3
    with pytest.raises(FeatureError, match="pass --k"):
        train_and_save_sae(subject, SaeTrainingConfig(layer=3), tmp_path / "x", "sparsify")
