"""Every dictionary format read exactly as its own library reads it: the folders in
tests/fixtures/dictionaries were written by sae-lens 6.54.12 and eai-sparsify 1.3.3 (their own save
functions; make_fixtures.py there), each with the latents the library's own loader + `encode` gives
for fixed inputs. Our latents must equal them; the preflight (`autointerp check`) must accept every
folder and refuse broken ones with one line. No subject model is loaded here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.cli.preflight import check_features
from autointerp.config import FeaturesConfig
from autointerp.errors import FeatureError
from autointerp.subject.kinds import FEATURE_SOURCES, FeatureSourceKind
from autointerp.subject.sae import SparseAutoencoder, load_sae
from autointerp.subject.shape import HOOK_KINDS, ModelShape
from autointerp.subject.sources import FeatureSource
from autointerp.subject.sparsify import load_sparsify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dictionaries"

# fixture -> (features.kind, folder under FIXTURES)
FOLDERS = {
    "saelens_standard": ("sae", "saelens_standard"),
    "saelens_jumprelu": ("sae", "saelens_jumprelu"),
    "saelens_topk": ("sae", "saelens_topk"),
    "saelens_topk_rescale": ("sae", "saelens_topk_rescale"),
    "saelens_topk_training": ("sae", "saelens_topk_training"),
    "saelens_topk_inference": ("sae", "saelens_topk_inference"),
    "saelens_transcoder": ("transcoder", "saelens_transcoder"),
    "saelens_jumprelu_transcoder": ("transcoder", "saelens_jumprelu_transcoder"),
    "sparsify_layers.3": ("sparsify", "sparsify/layers.3"),
    "sparsify_layers.3.mlp": ("transcoder", "sparsify/layers.3.mlp"),
}


def _load(name: str) -> SparseAutoencoder:
    kind, folder = FOLDERS[name]
    path = FIXTURES / folder
    return load_sparsify(path) if folder.startswith("sparsify/") else load_sae(path, kind.upper())


def _expected(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / f"{name}.expected.safetensors"))


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_latents_equal_the_library_encode(name: str) -> None:
    expected = _expected(name)
    sae = _load(name)
    latents = sae.encode(expected["inputs"])
    assert latents.shape == expected["latents"].shape
    assert (latents - expected["latents"]).abs().max().item() <= 1e-5
    assert (expected["latents"] > 0).any()
    # a subset of columns reads the same values as the full encode (TopK ranks over every latent)
    columns = torch.tensor([0, 5, 17, 47])
    assert torch.allclose(sae.encode(expected["inputs"], columns), latents[:, columns], atol=1e-6)


def test_the_fixtures_exercise_what_they_claim() -> None:
    """Without SAELens's rescale flag or its ReLU before the JumpReLU mask, the latents would differ."""
    rescaled = _load("saelens_topk_rescale")
    inputs, expected = _expected("saelens_topk_rescale")["inputs"], _expected("saelens_topk_rescale")["latents"]
    rescaled.rescale_acts_by_decoder_norm = False
    assert not torch.allclose(rescaled.encode(inputs), expected, atol=1e-3)
    norms = rescaled.W_dec.norm(dim=-1)
    assert norms.min() < 0.8 and norms.max() > 3  # non-unit decoder rows

    jump = _load("saelens_jumprelu")
    assert jump.threshold is not None and (jump.threshold < 0).any()
    x = _expected("saelens_jumprelu")["inputs"]
    pre = (x - jump.b_dec) @ jump.W_enc + jump.b_enc
    assert ((pre < 0) & (pre > jump.threshold)).any()  # where a mask without ReLU would pass a negative value

    training, inference = _load("saelens_topk_training"), _load("saelens_topk_inference")
    assert training.rescale_acts_by_decoder_norm and not torch.allclose(training.W_dec, inference.W_dec)
    sparsify_tc = _load("sparsify_layers.3.mlp")
    assert sparsify_tc.is_transcoder and not sparsify_tc.apply_b_dec_to_input


def test_decoding_follows_the_rescale_flag() -> None:
    """A rescaled TopK SAE decodes with unit rows, so an edit along a latent moves the output by its value."""
    sae = _load("saelens_topk_rescale")
    rows = sae.decoder_rows()
    assert torch.allclose(rows.norm(dim=-1), torch.ones(sae.d_sae), atol=1e-5)
    latents = sae.encode(_expected("saelens_topk_rescale")["inputs"])
    assert torch.allclose(sae.decode(latents), latents @ rows + sae.b_dec, atol=1e-5)


# the preflight, through the CLI -------------------------------------------------------------------------


def _check(tmp_path: Path, kind: str, path: Path, *extra: str) -> tuple[int, str]:
    args = ["check", "-s", f"store.path='{tmp_path / 'fresh' / 'run.duckdb'}'", "-s", "subject.model=smollm2-135m"]
    for setting in (f"features.kind={kind}", f"features.path='{path}'", *extra):
        args += ["-s", setting]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_the_preflight_accepts_every_fixture(name: str, tmp_path: Path) -> None:
    kind, folder = FOLDERS[name]
    code, output = _check(tmp_path, kind, FIXTURES / folder, "features.indices=[0, 47]")
    assert code == 0, output
    assert output.startswith("ok:"), output


def _copy(tmp_path: Path, folder: str, edit: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Path:
    target = tmp_path / "dicts" / folder.replace("/", "_")
    if folder.startswith("sparsify/"):
        target = tmp_path / "dicts" / folder.split("/")[0] / folder.split("/")[1]
    shutil.copytree(FIXTURES / folder, target)
    cfg = json.loads((target / "cfg.json").read_text())
    for key in drop:
        cfg.pop(key, None)
        cfg.get("metadata", {}).pop(key, None)
    cfg.update(edit or {})
    (target / "cfg.json").write_text(json.dumps(cfg))
    return target


def _corrupt(target: Path, how: str) -> Path:
    weights = next(target.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00\x01not a safetensors file" * 3)
    return target


BAD = [
    (
        "no-hook-name",
        "sae",
        lambda t: _copy(t, "saelens_standard", drop=("hook_name",)),
        r"cfg\.json has no 'hook_name' \(neither at the top nor under 'metadata'\)",
    ),
    (
        "wrong-d-in",
        "sae",
        lambda t: _copy(t, "saelens_standard", {"d_in": 768}),
        r"the SAE reads 768-wide activations but smollm2-135m's residual stream is 576 wide",
    ),
    (
        "cfg-disagrees-with-weights",
        "sae",
        lambda t: _copy(t, "saelens_topk", {"d_sae": 64}),
        r"sae_weights\.safetensors: W_enc is \[576, 48\] but cfg\.json says d_in = 576, d_sae = 64",
    ),
    (
        "truncated-weights",
        "sae",
        lambda t: _corrupt(_copy(t, "saelens_jumprelu"), "truncate"),
        r"sae_weights\.safetensors is cut short .*; expected a safetensors file with W_enc \[576, 48\]",
    ),
    (
        "garbage-weights",
        "sparsify",
        lambda t: _corrupt(_copy(t, "sparsify/layers.3"), "garbage"),
        r"sae\.safetensors is cut short or not a safetensors file .*encoder\.weight \[48, 576\]",
    ),
    (
        "sparsify-as-sae",
        "sae",
        lambda t: _copy(t, "sparsify/layers.3"),
        r"is in the sparsify layout \(sae\.safetensors\); set features\.kind = 'sparsify'",
    ),
    (
        "sparsify-transcoder-as-sae",
        "sae",
        lambda t: _copy(t, "sparsify/layers.3.mlp"),
        r"set features\.kind = 'transcoder'",
    ),
    (
        "saelens-as-sparsify",
        "sparsify",
        lambda t: _copy(t, "saelens_topk"),
        r"is in the SAELens layout \(sae_weights\.safetensors\); set features\.kind = 'sae'",
    ),
    (
        "transcoder-as-sae",
        "sae",
        lambda t: _copy(t, "saelens_transcoder"),
        r"is a transcoder; set features\.kind = 'transcoder'",
    ),
    (
        "sae-as-transcoder",
        "transcoder",
        lambda t: _copy(t, "saelens_standard"),
        r"is an SAE, not a transcoder; set features\.kind = 'sae'",
    ),
    (
        "transcoder-without-out-hook",
        "transcoder",
        lambda t: _copy(t, "saelens_transcoder", drop=("hook_name_out",)),
        r"is a transcoder without 'hook_name_out'",
    ),
    (
        "normalized-activations",
        "sae",
        lambda t: _copy(t, "saelens_standard", {"normalize_activations": "layer_norm"}),
        r"normalize_activations is 'layer_norm'; autointerp reads only \"none\"",
    ),
    (
        "unknown-architecture",
        "sae",
        lambda t: _copy(t, "saelens_standard", {"architecture": "gated"}),
        r"architecture 'gated' is not read by autointerp; expected one of standard, jumprelu, topk",
    ),
    (
        "training-only-architecture",
        "sae",
        lambda t: _copy(t, "saelens_topk_training", {"architecture": "batchtopk"}),
        r"'batchtopk' is a SAELens training checkpoint.*save_inference_model",
    ),
    (
        "k-above-d-sae",
        "sparsify",
        lambda t: _copy(t, "sparsify/layers.3", {"k": 500}),
        r"k = 500 with 48 latents; expected k <= num_latents",
    ),
    (
        "sparsify-without-d-in",
        "sparsify",
        lambda t: _copy(t, "sparsify/layers.3", drop=("d_in",)),
        r"cfg\.json has no 'd_in'",
    ),
    (
        "cfg-not-json",
        "sae",
        lambda t: (_copy(t, "saelens_standard") / "cfg.json").write_text("{not json") and t / "dicts/saelens_standard",
        r"cannot read .*cfg\.json \(.*\); expected the JSON object of a SAELens cfg\.json",
    ),
]


@pytest.mark.parametrize(("case", "kind", "make", "message"), BAD, ids=[b[0] for b in BAD])
def test_the_preflight_refuses_bad_dictionaries_in_one_line(
    case: str, kind: str, make: Any, message: str, tmp_path: Path
) -> None:
    path = make(tmp_path)
    code, output = _check(tmp_path, kind, path)
    assert code == 1, output
    assert len(output.strip().splitlines()) == 1, output
    assert re.search(message, output), output
    assert not (tmp_path / "fresh").exists()


def test_the_loader_refuses_corrupt_tensor_data_in_one_line(tmp_path: Path) -> None:
    """A header that parses but tensor data that does not: the loader's error is one line too."""
    target = _copy(tmp_path, "saelens_standard")
    weights = target / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    save_file(tensors, str(weights))
    data = bytearray(weights.read_bytes())
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["W_enc"]["dtype"] = "F64"  # twice the bytes its offsets hold
    encoded = json.dumps(header).encode().ljust(length)
    weights.write_bytes(bytes(data[:8]) + encoded[:length] + bytes(data[8 + length :]))
    with pytest.raises(FeatureError) as caught:
        load_sae(target)
    assert "\n" not in str(caught.value) and str(weights) in str(caught.value)


def test_pre_6_saelens_cfg_with_top_level_hook_point_and_topk_activation(tmp_path: Path) -> None:
    target = _copy(tmp_path, "saelens_topk", drop=("hook_name", "architecture", "k", "sae_lens_version"))
    cfg = json.loads((target / "cfg.json").read_text())
    cfg.pop("metadata")
    cfg |= {"hook_point": "blocks.3.hook_resid_post", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 8}}
    (target / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(target)
    assert (sae.hook_name, sae.k) == ("blocks.3.hook_resid_post", 8)
    expected = _expected("saelens_topk")
    assert torch.allclose(sae.encode(expected["inputs"]), expected["latents"], atol=1e-5)


# registries that check themselves ---------------------------------------------------------------------


class _PluginKind(FeatureSourceKind):
    """A third-party kind that implements only build and rebuild."""

    name: ClassVar[str] = "test-plugin-kind"
    stored_kind: ClassVar[str] = "test-plugin-kind"

    def build(self, config: FeaturesConfig, subject: Any) -> FeatureSource:
        raise NotImplementedError

    def rebuild(self, config: FeaturesConfig, subject: Any, feature: dict[str, Any]) -> FeatureSource:
        raise NotImplementedError


def test_a_plugin_kind_without_its_own_check_passes_the_preflight() -> None:
    FEATURE_SOURCES.register(_PluginKind.name, _PluginKind)
    try:
        config = FeaturesConfig.model_construct(kind=_PluginKind.name, path=Path("anything"), indices=[])
        check_features(config, ModelShape(None, "smollm2-135m", 30, 1536, 576))
    finally:
        FEATURE_SOURCES._registered.pop(_PluginKind.name, None)


def test_every_built_in_kind_checks_itself() -> None:
    for name in ("mlp", "sae", "sparsify", "transcoder", "direction", "planted"):
        kind = FEATURE_SOURCES.get(name)
        assert "check" in vars(kind) or any("check" in vars(base) for base in kind.__mro__[1:-2]), name
    shape = ModelShape(None, "smollm2-135m", 30, 1536, 576)
    with pytest.raises(FeatureError, match="layer 40 does not exist"):
        check_features(FeaturesConfig(kind="mlp", layer=40), shape)
    with pytest.raises(FeatureError, match=r"needs features\.path"):
        check_features(FeaturesConfig(kind="sparsify"), shape)


def test_preflight_hook_kinds_are_the_readers() -> None:
    from autointerp.subject.hooks import _HOOK_KINDS

    assert set(HOOK_KINDS) == set(_HOOK_KINDS)
