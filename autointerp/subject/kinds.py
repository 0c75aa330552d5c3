"""Kinds of feature source (`features.kind`), each a `FeatureSourceKind` in the
`autointerp.feature_sources` registry: MLP neurons, SAE, sparsify and transcoder latents, directions,
planted features. A kind builds the run's source, rebuilds one stored feature, and checks its own
configuration against the model's shape for the preflight.

`build_feature_source` picks the kind from `features.kind` and splits the source into the poles
`features.sign` asks for; `feature_source_for` rebuilds the source of one stored feature.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autointerp.errors import FeatureError
from autointerp.plugins import Registry
from autointerp.subject.dictionary_spec import DictionarySpec, check_finite_weights, check_weights
from autointerp.subject.hooks import check_layer
from autointerp.subject.model import SubjectModel
from autointerp.subject.planted import load_planted_features
from autointerp.subject.sae import WEIGHTS_FILE as SAELENS_WEIGHTS_FILE
from autointerp.subject.sae import SparseAutoencoder, load_sae, read_saelens_cfg
from autointerp.subject.sources import (
    DirectionSource,
    FeatureSource,
    MlpNeuronSource,
    PlantedSource,
    SaeLatentSource,
    SignedSource,
    load_directions,
    signed,
    skip_first_tokens,
)
from autointerp.subject.sparsify import is_sparsify_folder, load_sparsify, read_sparsify_cfg

if TYPE_CHECKING:
    from autointerp.config import FeaturesConfig
    from autointerp.subject.shape import ModelShape


def choose_indices(indices: list[int], count: int | str, width: int, seed: int, what: str) -> list[int]:
    """Returns `indices` checked against `width`, every index for count="all", or a seeded draw."""
    if indices:
        bad = [i for i in indices if not 0 <= i < width]
        if bad:
            raise FeatureError(f"{what} index {bad[0]} does not exist: {what}s are 0..{width - 1}")
        return list(indices)
    if count == "all":
        return list(range(width))
    if int(count) > width:  # the preflight refuses a count set above the width; the default 16 is kept
        import logging

        logging.getLogger(__name__).warning("features.count %s > the %d %ss: using all %d", count, width, what, width)
    return sorted(random.Random(seed).sample(range(width), min(int(count), width)))


class FeatureSourceKind(ABC):
    """A kind of feature source (`features.kind`): builds the run's source and rebuilds one feature.

    Registered under the `autointerp.feature_sources` entry-point group; a plugin package adds a
    kind the same way the built-ins are declared in autointerp's pyproject.
    """

    name: ClassVar[str]
    """The value of `features.kind` in a config."""
    stored_kind: ClassVar[str]
    """The value of `features.kind` in the store (e.g. `neuron` for `mlp`)."""
    reads_model: ClassVar[bool] = True
    """Whether its activations are read off the subject model: then `features.skip_first_tokens = "auto"`
    skips each window's first `AUTO_SKIPPED_TOKENS` tokens (the attention sink)."""

    @abstractmethod
    def build(self, config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
        """Returns the source of every feature the config chooses, with every index checked."""

    @abstractmethod
    def rebuild(self, config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
        """Returns a source of the one feature in `feature` (a row of the features table)."""

    def check(self, config: FeaturesConfig, shape: ModelShape) -> None:
        """The preflight's check of `config` against the model's shape (known without loading the model;
        None fields are unknown): raises a one-line FeatureError / ConfigError saying what to change.
        Must be fast and must not load the subject model. The default checks nothing: a plugin kind
        that does not override it is first checked when `build` runs."""
        return None


class MlpNeurons(FeatureSourceKind):
    """MLP neurons: the input of each chosen block's down projection."""

    name: ClassVar[str] = "mlp"
    stored_kind: ClassVar[str] = "neuron"

    def build(self, config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
        """Returns the neurons of `features.layer` (or `layers`) chosen by `indices` / `count`."""
        if not config.layers:
            layers = [config.layer]
        elif config.layers == "all":
            layers = list(range(subject.n_layers))
        else:
            layers = list(config.layers)
        for layer in layers:
            check_layer(subject, layer)
        indices = choose_indices(config.indices, config.count, subject.d_mlp, config.seed, "neuron")
        return MlpNeuronSource(subject, layers, indices)

    def rebuild(self, config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
        """Returns the one neuron of the row."""
        return MlpNeuronSource(subject, [int(str(feature["hook"]).split(".")[1])], [int(feature["idx"])])

    def check(self, config: FeaturesConfig, shape: ModelShape) -> None:
        """Checks the layers and neuron indices against the model's shape."""
        from autointerp.subject.shape import check_indices, check_layer

        if config.layers == "all":
            layers: list[int] = []
        elif config.layers:
            layers = list(config.layers)
        else:
            layers = [config.layer]
        for layer in layers:
            check_layer(layer, shape)
        check_indices(config.indices, shape.d_mlp, "neuron")


class _DictionaryKind(FeatureSourceKind):
    """A kind whose features are the latents of a dictionary folder at `features.path`: one reader per
    layout gives the spec (cfg.json alone, for the preflight) and the dictionary (for the run)."""

    layout: ClassVar[str]
    """How the folder is described in messages."""
    what: ClassVar[str] = "SAE"
    transcoder: ClassVar[bool] = False

    @abstractmethod
    def spec(self, config: FeaturesConfig, path: Path) -> DictionarySpec:
        """Returns what the cfg.json in `path` says (no weights read)."""

    @abstractmethod
    def load(self, config: FeaturesConfig, path: Path) -> SparseAutoencoder:
        """Returns the dictionary in `path`."""

    def _path(self, config: FeaturesConfig) -> Path:
        if config.path is None:
            raise FeatureError(
                f"features.kind = {self.name!r} needs features.path, {self.layout} (see `autointerp train-sae`)"
            )
        path = Path(config.path).expanduser()
        if not path.exists():
            raise FeatureError(f"{self.what} folder {path} does not exist; set features.path")
        if not path.is_dir():
            raise FeatureError(f"{self.what} path {path} is a file; expected a folder, {self.layout}")
        return path

    def _check_role(self, path: Path, is_transcoder: bool) -> None:
        if is_transcoder and not self.transcoder:
            raise FeatureError(f"{path} is a transcoder; set features.kind = 'transcoder'")
        if self.transcoder and not is_transcoder:
            raise FeatureError(
                f"{path} is an SAE, not a transcoder; set features.kind = "
                f"'{'sparsify' if is_sparsify_folder(path) else 'sae'}'"
            )

    def _load_checked(self, config: FeaturesConfig) -> SparseAutoencoder:
        path = self._path(config)
        self.spec(config, path)  # the layout checks, with the messages that name the right kind
        sae = self.load(config, path)
        self._check_role(path, sae.is_transcoder)
        return sae

    def check(self, config: FeaturesConfig, shape: ModelShape) -> None:
        """Checks the folder from its cfg.json and its weights: the layout, the hook points, the widths
        against the model's, the latent indices, every tensor's shape (from the header) and that the
        weights are finite (read one tensor at a time)."""
        from autointerp.subject.shape import check_hook, check_indices, hook_width

        path = self._path(config)
        spec = self.spec(config, path)
        self._check_role(path, spec.is_transcoder)
        check_hook(spec.hook_name, shape)
        if spec.hook_name_out is not None:
            check_hook(spec.hook_name_out, shape)
        what, article = ("transcoder", "a") if spec.is_transcoder else ("SAE", "an")
        width = hook_width(spec.hook_name, shape)
        if width is not None and spec.d_in != width:
            where = (
                f"{shape.slug}'s residual stream" if "resid" in spec.hook_name else f"{spec.hook_name} of {shape.slug}"
            )
            raise FeatureError(
                f"the {what} reads {spec.d_in}-wide activations but {where} is {width} wide "
                f"({spec.cfg_file} says d_in = {spec.d_in}); train or pick {article} {what} for this model"
            )
        check_indices(config.indices, spec.d_sae, f"{what} latent")
        spec = check_weights(spec)
        check_finite_weights(spec)
        out_width = None if spec.hook_name_out is None else hook_width(spec.hook_name_out, shape)
        if out_width is not None and spec.d_out is not None and spec.d_out != out_width:
            raise FeatureError(
                f"the transcoder writes {spec.d_out}-wide activations but {spec.hook_name_out} of {shape.slug} is "
                f"{out_width} wide ({spec.weights_file.name}: W_dec [{spec.d_sae}, {spec.d_out}])"
            )

    def build(self, config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
        """Returns the latents of `features.path` chosen by `indices` / `count`."""
        sae = self._load_checked(config)
        what = "transcoder latent" if sae.is_transcoder else "SAE latent"
        return SaeLatentSource(subject, sae, choose_indices(config.indices, config.count, sae.d_sae, config.seed, what))

    def rebuild(self, config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
        """Returns the one latent of the row, from the config's dictionary folder."""
        if config.path is None:
            raise FeatureError(f"cannot rebuild {feature['id']}: features.path names no dictionary folder")
        return SaeLatentSource(subject, self._load_checked(config), [int(feature["idx"])])


class SaeLatents(_DictionaryKind):
    """Latents of a sparse autoencoder in a SAELens folder (standard, JumpReLU or TopK)."""

    name: ClassVar[str] = "sae"
    stored_kind: ClassVar[str] = "sae"
    layout: ClassVar[str] = "a SAELens folder (cfg.json + sae_weights.safetensors)"

    def spec(self, config: FeaturesConfig, path: Path) -> DictionarySpec:
        """Returns the cfg.json of a SAELens folder; a sparsify folder names its kind."""
        if is_sparsify_folder(path):
            kind = "transcoder" if read_sparsify_cfg(path, config.hook).is_transcoder else "sparsify"
            raise FeatureError(f"{path} is in the sparsify layout (sae.safetensors); set features.kind = '{kind}'")
        return read_saelens_cfg(path, "SAE")

    def load(self, config: FeaturesConfig, path: Path) -> SparseAutoencoder:
        """Returns the SAE in a SAELens folder."""
        return load_sae(path)


class SparsifyLatents(_DictionaryKind):
    """Latents of a TopK sparse autoencoder in EleutherAI sparsify's layout."""

    name: ClassVar[str] = "sparsify"
    stored_kind: ClassVar[str] = "sae"
    what: ClassVar[str] = "sparsify"
    layout: ClassVar[str] = "a sparsify folder named for its hook point (cfg.json + sae.safetensors)"

    def spec(self, config: FeaturesConfig, path: Path) -> DictionarySpec:
        """Returns the cfg.json of a sparsify folder; a SAELens folder names its kind."""
        if (path / SAELENS_WEIGHTS_FILE).is_file() and not is_sparsify_folder(path):
            kind = "transcoder" if read_saelens_cfg(path).is_transcoder else "sae"
            raise FeatureError(
                f"{path} is in the SAELens layout ({SAELENS_WEIGHTS_FILE}); set features.kind = '{kind}'"
            )
        return read_sparsify_cfg(path, config.hook)

    def load(self, config: FeaturesConfig, path: Path) -> SparseAutoencoder:
        """Returns the SAE in a sparsify folder (hook point from the folder name, or `features.hook`)."""
        return load_sparsify(path, config.hook)


class TranscoderLatents(_DictionaryKind):
    """Latents of a transcoder (SAELens or sparsify layout): read from the MLP input, written to the
    MLP output; ablation and steering edit the MLP output along the latent's decoder row."""

    name: ClassVar[str] = "transcoder"
    stored_kind: ClassVar[str] = "transcoder"
    what: ClassVar[str] = "transcoder"
    layout: ClassVar[str] = "a SAELens or sparsify transcoder folder"
    transcoder: ClassVar[bool] = True

    def spec(self, config: FeaturesConfig, path: Path) -> DictionarySpec:
        """Returns the cfg.json of a sparsify folder (sae.safetensors) or a SAELens one."""
        return (
            read_sparsify_cfg(path, config.hook) if is_sparsify_folder(path) else read_saelens_cfg(path, "transcoder")
        )

    def load(self, config: FeaturesConfig, path: Path) -> SparseAutoencoder:
        """Returns the transcoder in a sparsify folder (sae.safetensors) or a SAELens one."""
        return load_sparsify(path, config.hook) if is_sparsify_folder(path) else load_sae(path, "transcoder")


class Directions(FeatureSourceKind):
    """User directions in the residual stream: rows of a [n, d] matrix."""

    name: ClassVar[str] = "direction"
    stored_kind: ClassVar[str] = "direction"

    def build(self, config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
        """Returns the rows of `features.path` chosen by `indices` / `count`, read at `features.hook`."""
        if config.path is None:
            raise FeatureError("features.kind = 'direction' needs features.path, a .safetensors or .npy [n, d] matrix")
        matrix = load_directions(config.path)
        hook = config.hook or f"blocks.{config.layer}.hook_resid_post"
        indices = choose_indices(config.indices, config.count, matrix.shape[0], config.seed, "direction")
        return DirectionSource(subject, matrix, hook, indices)

    def rebuild(self, config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
        """Returns the one direction of the row, from the config's matrix."""
        if config.path is None:
            raise FeatureError(f"cannot rebuild {feature['id']}: features.path names no direction matrix")
        return DirectionSource(subject, load_directions(config.path), str(feature["hook"]), [int(feature["idx"])])

    def check(self, config: FeaturesConfig, shape: ModelShape) -> None:
        """Checks the hook point, the matrix (readable, [n, d] with the model's width) and that the chosen
        rows hold no NaN or infinite value."""
        from autointerp.subject.shape import check_hook, hook_width

        if config.path is None:
            raise FeatureError("features.kind = 'direction' needs features.path, a .safetensors or .npy [n, d] matrix")
        hook = config.hook or f"blocks.{config.layer}.hook_resid_post"
        check_hook(hook, shape)
        matrix = load_directions(Path(config.path))
        width = hook_width(hook, shape)
        if width is not None and matrix.shape[1] != width:
            where = "the residual stream" if "resid" in hook else hook
            raise FeatureError(
                f"directions in {config.path} are {matrix.shape[1]}-wide but {where} is "
                f"{width}-wide; the matrix must be [n, {width}]"
            )
        rows = choose_indices(config.indices, config.count, matrix.shape[0], config.seed, "direction")
        finite = torch.isfinite(matrix[rows]).all(dim=1)
        if not bool(finite.all()):
            row = rows[int((~finite).nonzero()[0, 0])]
            raise FeatureError(
                f"direction row {row} of {config.path} holds NaN or infinite values; fix the matrix or leave "
                "that row out of features.indices"
            )


class Planted(FeatureSourceKind):
    """Planted features with known descriptions (built-in, or a user's .py file)."""

    name: ClassVar[str] = "planted"
    stored_kind: ClassVar[str] = "planted"
    reads_model: ClassVar[bool] = False

    def build(self, config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
        """Returns the planted features of `features.path` (default: the built-in ones), by `indices`."""
        planted = load_planted_features(config.path)
        if config.indices:
            planted = [planted[i] for i in choose_indices(config.indices, "all", len(planted), 0, "planted feature")]
        return PlantedSource(subject, planted)

    def rebuild(self, config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
        """Returns the one planted feature of the row, found by name."""
        name = str(feature["id"]).removeprefix("planted/")
        planted = [p for p in load_planted_features(config.path) if p.name == name]
        if not planted:
            raise FeatureError(f"cannot rebuild {feature['id']}: no planted feature {name!r} in {config.path}")
        return PlantedSource(subject, planted)

    def check(self, config: FeaturesConfig, shape: ModelShape) -> None:
        """Checks that the planted functions load, run on a sample window and return finite values, and the
        indices against their number."""
        from autointerp.subject.planted import check_planted_features
        from autointerp.subject.shape import check_indices

        planted = load_planted_features(config.path)
        check_indices(config.indices, len(planted), "planted feature")
        check_planted_features([planted[i] for i in config.indices] if config.indices else planted)


FEATURE_SOURCES: Registry[type[FeatureSourceKind]] = Registry("autointerp.feature_sources", "feature source")
"""Every kind of feature source, by `features.kind`."""


AUTO_SKIPPED_TOKENS = 2
"""Leading tokens of each window that `features.skip_first_tokens = "auto"` leaves unread for features read off
the model. The first position is an attention sink, whose residual norm is many times any other's; in a window
that starts with a newline the sink is on the second token too (SmolLM2, blocks 15-25: 1.8 % of the built-in
corpus's windows, and they set the max of 4 of 8 random directions at block 15, 11-60x their 99.9th percentile)."""


def skipped_tokens(config: FeaturesConfig, kind: type[FeatureSourceKind] | None = None) -> int:
    """Returns how many leading tokens of each window the features of `kind` (default: `features.kind`) do
    not read: `skip_first_tokens`, where "auto" is `AUTO_SKIPPED_TOKENS` for a kind read off the model and 0
    for planted features."""
    if config.skip_first_tokens != "auto":
        return int(config.skip_first_tokens)
    return AUTO_SKIPPED_TOKENS if (kind or FEATURE_SOURCES.get(config.kind)).reads_model else 0


def build_feature_source(config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
    """Returns the feature source that `features.kind` names, with every index checked, split into
    the poles `features.sign` asks for, reading no activation of the tokens `skipped_tokens` leaves out."""
    source = signed(FEATURE_SOURCES.get(config.kind)().build(config, subject), config.sign)
    return skip_first_tokens(source, skipped_tokens(config))


def feature_source_for(config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
    """Returns a source of the one feature in `feature` (a row of the features table), built
    from the run's features config (the SAE, direction or planted file it names)."""
    pole = str(feature["id"])[-1]
    poles = (pole,) if pole in ("+", "-") else ()
    configured = FEATURE_SOURCES.get(config.kind)
    if configured.stored_kind == feature["kind"]:  # several kinds may store the same one (sae, sparsify)
        source = _poles(configured().rebuild(config, subject, feature), poles)
        return skip_first_tokens(source, skipped_tokens(config, configured))
    for name in FEATURE_SOURCES.names():
        kind = FEATURE_SOURCES.get(name)
        if kind.stored_kind == feature["kind"]:
            source = _poles(kind().rebuild(config, subject, feature), poles)
            return skip_first_tokens(source, skipped_tokens(config, kind))
    raise FeatureError(f"cannot rebuild feature {feature['id']}: no feature source stores kind {feature['kind']!r}")


def _poles(source: FeatureSource, poles: tuple[str, ...]) -> FeatureSource:
    return SignedSource(source, poles) if poles else source
