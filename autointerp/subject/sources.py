"""Feature sources behind one interface: MLP neurons, SAE and transcoder latents, user directions,
planted features, and the poles of any of them (`SignedSource`).

A `FeatureSource` maps token ids [batch, tokens] to activations [batch, tokens, features]
(float32, on the model's device) and names each feature with a stable id. The collector
only sees that interface; which source a run uses is chosen by its kind (`kinds`).

Hook points use TransformerLens names: `blocks.L.hook_resid_pre` (input of block L),
`blocks.L.hook_resid_post` (output of block L), `blocks.L.hook_mlp_out` (output of its MLP);
`mlp.L` is the MLP's neurons (the input of its down projection).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from autointerp.errors import FeatureError
from autointerp.subject.hooks import capture, check_layer, hook_target, mlp_down_proj, parse_hook
from autointerp.subject.interventions import DirectionEdit, Edit, NeuronEdit
from autointerp.subject.model import SubjectModel
from autointerp.subject.planted import PlantedFeature
from autointerp.subject.sae import SparseAutoencoder, hook_layer

RESIDUAL_WRITE_HOOKS = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out")
"""Hook kinds whose value is (a term of) the residual stream: a vector added there reaches the logits."""


@dataclass(frozen=True)
class WriteDirections:
    """What one unit of each feature's activation adds to the residual stream (the output side).

    MLP neurons: the down projection's column, at `blocks.L.hook_mlp_out`; SAE and transcoder latents:
    the decoder row, at the hook point the dictionary writes; directions v: v / |v|^2 (the edit that
    moves h . v by one), at their hook point. Signed poles: the base's vector, negated for `-`.
    """

    hooks: tuple[str, ...]
    """Per feature: the residual-stream hook point the vector is added at."""
    vectors: torch.Tensor
    """[n_features, d_model] float32, in the source's feature order."""


def writes_residual(hook: str) -> bool:
    """Returns True when hook point `hook` is in the residual stream (a vector added there reaches the logits)."""
    try:
        return parse_hook(hook)[1] in RESIDUAL_WRITE_HOOKS
    except FeatureError:
        return False


class FeatureSource(ABC):
    """Something that gives per-token activations of a list of features."""

    kind: str
    """Stored in `features.kind`: neuron, sae, direction or planted."""
    skipped_tokens: int = 0
    """Leading tokens of each sequence whose activations are not read (given as 0): `SkipFirstTokens`."""

    def __init__(self, feature_ids: list[str], hooks: list[str], indices: list[int]) -> None:
        self.feature_ids = feature_ids
        self.hooks = hooks
        self.indices = indices

    @property
    def n_features(self) -> int:
        """Returns how many features the source yields."""
        return len(self.feature_ids)

    @abstractmethod
    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Returns activations [batch, tokens, features] (float32) of token ids [batch, tokens]."""

    def activation_chunks(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        """Returns `activations` split on the feature axis, in order, without concatenating.

        The collector reads chunks as they come (one per hooked layer for MLP neurons), which
        saves copying every activation of the batch into one tensor.
        """
        return [self.activations(token_ids)]

    def edit(self, position: int, set_to: float | None = None, add: float = 0.0) -> Edit | None:
        """Returns the intervention that sets (ablation) and/or adds to (steering) feature `position`
        in the model, or None when the feature is not a direction in the model (planted features)."""
        return None

    def write_directions(self) -> WriteDirections | None:
        """Returns what each feature writes into the residual stream per unit of activation, or None
        when its features write nothing there (planted features; a direction read off a non-residual hook)."""
        return None


class MlpNeuronSource(FeatureSource):
    """MLP neurons (the input of each block's down projection) of one or more layers."""

    kind = "neuron"

    def __init__(self, subject: SubjectModel, layers: list[int], indices: list[int]) -> None:
        for layer in layers:
            check_layer(subject, layer)
        ids = [f"{subject.slug}/mlp.{layer}/{i}" for layer in layers for i in indices]
        super().__init__(ids, [f"mlp.{layer}" for layer in layers for _ in indices], indices * len(layers))
        self.subject, self.layers = subject, layers
        self.every_neuron = indices == list(range(subject.d_mlp))
        self._index = torch.tensor(indices, dtype=torch.long, device=subject.device)

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        parts = self.activation_chunks(token_ids)
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).float()

    def edit(self, position: int, set_to: float | None = None, add: float = 0.0) -> NeuronEdit:
        """Returns the edit of the neuron at `position` (its input to the down projection)."""
        layer = self.layers[position // len(self._index)]
        return NeuronEdit(layer=layer, index=self.indices[position], set_to=set_to, add=add)

    def write_directions(self) -> WriteDirections | None:
        """Returns each neuron's down-projection column at `blocks.L.hook_mlp_out`; None for a family that
        normalises the MLP's output before the residual add (Gemma 2, 3), where no fixed vector is written."""
        if self.subject.architecture.mlp_out_norm is not None:
            return None
        columns = []
        for layer in self.layers:
            down = mlp_down_proj(self.subject, layer)
            weight = getattr(down, "weight").detach().float()  # noqa: B009
            # Linear: [d_model, d_mlp] (a neuron is a column); GPT-2's Conv1D: [d_mlp, d_model] (a row)
            by_neuron = weight.T if isinstance(down, torch.nn.Linear) else weight
            columns.append(by_neuron.index_select(0, self._index.to(by_neuron.device)))
        hooks = tuple(f"blocks.{layer}.hook_mlp_out" for layer in self.layers for _ in self._index)
        return WriteDirections(hooks, torch.cat(columns).contiguous())

    def activation_chunks(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        """Returns one [batch, tokens, neurons] tensor per layer, in the model's dtype."""
        parts = capture(self.subject, token_ids, [f"mlp.{layer}" for layer in self.layers])
        if not self.every_neuron:
            parts = [p.index_select(-1, self._index) for p in parts]
        return parts


class SaeLatentSource(FeatureSource):
    """Latents of a sparse dictionary: an SAE reading a hook point, or a transcoder reading one hook
    point (the MLP input) and writing another (the MLP output)."""

    kind = "sae"

    def __init__(self, subject: SubjectModel, sae: SparseAutoencoder, indices: list[int]) -> None:
        layer = hook_layer(sae.hook_name)
        hook_target(subject, sae.hook_name)
        width = subject.model.config.hidden_size
        what = "transcoder" if sae.is_transcoder else "SAE"
        if sae.d_in != width:
            raise FeatureError(
                f"the {what} reads {sae.d_in}-wide activations but {sae.hook_name} of {subject.slug} is "
                f"{width} wide; train or pick a dictionary for this model"
            )
        if sae.hook_name_out is not None:
            hook_target(subject, sae.hook_name_out)
            if sae.d_out != width:
                raise FeatureError(
                    f"the transcoder writes {sae.d_out}-wide activations but {sae.hook_name_out} of "
                    f"{subject.slug} is {width} wide"
                )
        self.kind = "transcoder" if sae.is_transcoder else "sae"
        ids = [f"{subject.slug}/{self.kind}.{layer}/{i}" for i in indices]
        super().__init__(ids, [sae.hook_name] * len(indices), indices)
        self.subject, self.sae = subject, sae.to(subject.device)
        self._columns = None if indices == list(range(sae.d_sae)) else torch.tensor(indices, device=subject.device)

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        (hidden,) = capture(self.subject, token_ids, [self.sae.hook_name])
        with torch.inference_mode():
            return self.sae.encode(hidden, self._columns)

    def edit(self, position: int, set_to: float | None = None, add: float = 0.0) -> DirectionEdit:
        """Returns the edit of the latent at `position` along its decoder row: at the SAE's hook point,
        or for a transcoder at the hook point it writes (the MLP output), read from the one it reads."""
        column = torch.tensor([self.indices[position]], device=self.subject.device)
        return DirectionEdit(
            hook=self.sae.hook_name_out or self.sae.hook_name,
            read=lambda hidden: self.sae.encode(hidden, column)[..., 0],
            direction=self.sae.decoder_rows()[self.indices[position]],
            set_to=set_to,
            add=add,
            read_from=self.sae.hook_name if self.sae.is_transcoder else None,
        )

    def write_directions(self) -> WriteDirections | None:
        """Returns each latent's decoder row at the hook point the dictionary writes (None: not the
        residual stream)."""
        hook = self.sae.hook_name_out or self.sae.hook_name
        if not writes_residual(hook):
            return None
        rows = self.sae.decoder_rows().detach().float()
        index = torch.tensor(self.indices, dtype=torch.long, device=rows.device)
        return WriteDirections((hook,) * len(self.indices), rows.index_select(0, index).contiguous())


def load_directions(path: Path) -> torch.Tensor:
    """Returns the [n, d] matrix in a .safetensors (one tensor, or one named `directions`) or .npy file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FeatureError(f"direction file {path} does not exist; set features.path")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
            if array.dtype.kind not in "fiu":  # complex values would lose their imaginary part unsaid
                raise TypeError(f"its values are {array.dtype}, not real numbers")
            matrix = torch.from_numpy(array).float()
        except (ValueError, OSError, EOFError, TypeError) as exc:  # not an array file, cut short, objects
            why = "not an array saved with numpy.save" if "pickle" in str(exc) else str(exc).split(". ")[0]
            raise FeatureError(
                f"direction file {path} cannot be read as a float [n, d] .npy array ({why}); set features.path"
            ) from None
    elif path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError for a bad header or a cut file
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FeatureError(
                f"direction file {path} cannot be read as safetensors ({why}); set features.path"
            ) from None
        if len(tensors) != 1 and "directions" not in tensors:
            raise FeatureError(f"{path} holds {len(tensors)} tensors; keep one, or name the matrix 'directions'")
        matrix = tensors["directions"] if "directions" in tensors else next(iter(tensors.values()))
        if matrix.is_complex():  # .float() would drop the imaginary part without a word
            raise FeatureError(
                f"direction file {path} holds {matrix.dtype} values, not real numbers; set features.path"
            )
        matrix = matrix.float()
    else:
        raise FeatureError(f"direction file {path} must be .safetensors or .npy")
    if matrix.ndim != 2:
        raise FeatureError(f"{path} holds a tensor of shape {tuple(matrix.shape)}; directions must be [n, d]")
    if matrix.shape[0] == 0:
        raise FeatureError(f"{path} holds no directions (shape {tuple(matrix.shape)}); it needs at least one row")
    return matrix


class DirectionSource(FeatureSource):
    """User directions at a hook point: each activation is the projection onto a vector."""

    kind = "direction"

    def __init__(self, subject: SubjectModel, matrix: torch.Tensor, hook: str, indices: list[int]) -> None:
        layer = hook_layer(hook)
        hook_target(subject, hook)
        width = subject.model.config.hidden_size
        if matrix.shape[1] != width:
            raise FeatureError(
                f"directions are {matrix.shape[1]}-wide but {hook} of {subject.slug} is {width}-wide; "
                f"the matrix must be [n, {width}]"
            )
        ids = [f"{subject.slug}/direction.{layer}/{i}" for i in indices]
        super().__init__(ids, [hook] * len(indices), indices)
        self.subject, self.hook = subject, hook
        self.vectors = matrix[indices].to(subject.device).T.contiguous()  # [d, features]

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        (hidden,) = capture(self.subject, token_ids, [self.hook])
        return hidden.float() @ self.vectors

    def edit(self, position: int, set_to: float | None = None, add: float = 0.0) -> DirectionEdit:
        """Returns the edit along direction v at `position` (moving h . v by exactly the change)."""
        vector = self.vectors[:, position]
        return DirectionEdit(
            hook=self.hook,
            read=lambda hidden: hidden.float() @ vector,
            direction=vector / vector.dot(vector).clamp(min=1e-12),
            set_to=set_to,
            add=add,
        )

    def write_directions(self) -> WriteDirections | None:
        """Returns v / |v|^2 per direction at its hook point (None: not the residual stream)."""
        if not writes_residual(self.hook):
            return None
        vectors = self.vectors.T.float()
        vectors = vectors / vectors.pow(2).sum(dim=1, keepdim=True).clamp(min=1e-12)
        return WriteDirections((self.hook,) * vectors.shape[0], vectors.contiguous())


class PlantedSource(FeatureSource):
    """Planted features: functions of the decoded tokens; no forward pass."""

    kind = "planted"

    def __init__(self, subject: SubjectModel, features: list[PlantedFeature]) -> None:
        super().__init__(
            [f"planted/{f.name}" for f in features], ["planted"] * len(features), list(range(len(features)))
        )
        self.subject, self.features = subject, features
        self._token_text: dict[int, str] = {}

    def _decode(self, token_ids: list[int]) -> list[str]:
        missing = [t for t in set(token_ids) if t not in self._token_text]
        for token_id in missing:
            self._token_text[token_id] = str(self.subject.tokenizer.decode([token_id]))
        return [self._token_text[t] for t in token_ids]

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        rows = []
        for ids in token_ids.tolist():
            tokens = self._decode(ids)
            columns = []
            for feature in self.features:
                values = feature.activations(tokens)
                if len(values) != len(tokens):
                    raise FeatureError(
                        f"planted feature {feature.name!r} returned {len(values)} values for {len(tokens)} tokens"
                    )
                columns.append(values)
            rows.append(list(zip(*columns, strict=True)))
        return torch.tensor(rows, dtype=torch.float32, device=self.subject.device)


SIGN_POLES: dict[str, tuple[str, ...]] = {"positive": (), "negative": ("-",), "both": ("+", "-")}
"""`features.sign` -> the poles each feature is split into (none: the activation as it is)."""


class SignedSource(FeatureSource):
    """The poles of another source's features: `+` is relu(a), `-` is relu(-a); ids end in the pole.

    For gated (GLU) MLP neurons and directions, whose activations are negative as often as positive:
    each pole is explained and scored as its own feature. Editing the `-` pole edits the underlying
    activation with the opposite sign (ablation sets it to minus the value, steering subtracts).
    """

    def __init__(self, base: FeatureSource, poles: tuple[str, ...]) -> None:
        count = len(poles)
        super().__init__(
            [f"{fid}{pole}" for fid in base.feature_ids for pole in poles],
            [hook for hook in base.hooks for _ in poles],
            [index for index in base.indices for _ in poles],
        )
        self.base, self.poles, self._count = base, poles, count
        self.kind = base.kind

    def _split(self, chunk: torch.Tensor) -> torch.Tensor:
        parts = [chunk.relu() if pole == "+" else (-chunk).relu() for pole in self.poles]
        return parts[0] if len(parts) == 1 else torch.stack(parts, dim=-1).flatten(-2)

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self._split(self.base.activations(token_ids)).float()

    def activation_chunks(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        """Returns the base source's chunks, each split into its poles (interleaved per feature)."""
        return [self._split(chunk) for chunk in self.base.activation_chunks(token_ids)]

    def edit(self, position: int, set_to: float | None = None, add: float = 0.0) -> Edit | None:
        """Returns the base feature's edit, with the sign flipped for the `-` pole."""
        base_position, pole = divmod(position, self._count)
        if self.poles[pole] == "+":
            return self.base.edit(base_position, set_to, add)
        return self.base.edit(base_position, None if set_to is None else -set_to, -add)

    def write_directions(self) -> WriteDirections | None:
        """Returns the base's directions per pole (negated for `-`), interleaved like the feature ids."""
        base = self.base.write_directions()
        if base is None:
            return None
        signs = torch.tensor([1.0 if pole == "+" else -1.0 for pole in self.poles], device=base.vectors.device)
        vectors = (base.vectors.unsqueeze(1) * signs[None, :, None]).flatten(0, 1)
        return WriteDirections(tuple(h for h in base.hooks for _ in self.poles), vectors.contiguous())


class SkipFirstTokens(FeatureSource):
    """Another source's features with the first `count` tokens of each sequence not read: their activations
    are given as 0 (`features.skip_first_tokens`). A window's first position is an attention sink (and after
    a leading newline, its second), so what a model computes there says more about the position than the token.

    Collection leaves those tokens out of the mean and density too (`ExemplarSampler(skipped_tokens=...)`).
    """

    def __init__(self, base: FeatureSource, count: int) -> None:
        super().__init__(base.feature_ids, base.hooks, base.indices)
        self.base, self.skipped_tokens, self.kind = base, count, base.kind

    def _blank(self, chunk: torch.Tensor) -> torch.Tensor:
        # in place: a chunk can be every neuron of a layer, and a copy per batch would cost collection time;
        # an inference tensor can only be written under inference mode
        with torch.inference_mode(chunk.is_inference()), torch.no_grad():
            chunk[:, : self.skipped_tokens] = 0
        return chunk

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self._blank(self.base.activations(token_ids))

    def activation_chunks(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        """Returns the base source's chunks with the skipped tokens set to 0."""
        return [self._blank(chunk) for chunk in self.base.activation_chunks(token_ids)]

    def edit(self, position: int, set_to: float | None = None, add: float = 0.0) -> Edit | None:
        """Returns the base feature's edit, leaving the skipped positions alone: ablating a residual direction
        at the attention sink, where it reads many times its value elsewhere, would move the sink's residual."""
        edit = self.base.edit(position, set_to, add)
        return None if edit is None else replace(edit, skip_positions=self.skipped_tokens)

    def write_directions(self) -> WriteDirections | None:
        """Returns the base source's write directions."""
        return self.base.write_directions()


def skip_first_tokens(source: FeatureSource, count: int) -> FeatureSource:
    """Returns `source` with the first `count` tokens of each sequence not read (unchanged for 0)."""
    return SkipFirstTokens(source, count) if count else source


def signed(source: FeatureSource, sign: str) -> FeatureSource:
    """Returns `source` split into the poles `features.sign` names (unchanged for "positive")."""
    poles = SIGN_POLES[sign]
    return SignedSource(source, poles) if poles else source
