"""Planted OUTPUT features: directions whose effect on the model's output is known.

Each `PlantedOutput` is a set of words (weekday names, digits, closing brackets, ...) and its true
description ("makes the model say names of weekdays"). Its direction is built from the unembedding
rows of the words' tokens: the least-squares x whose logits W_U x (rows centred on the vocabulary's
mean) are closest to 1 on the set's tokens and 0 on every other token, divided by the final norm's gain
(so that after the gain it is x), made unit length. (The plain mean of the set's rows is dominated by
frequent tokens such as " " and " and", whose rows are long.) Written
into the residual stream at a late block (`PLANTED_OUTPUT_LAYER`), steering along it makes the model say
those tokens, and its direct path to the logits promotes exactly them: a ground truth for the output
side, as planted input features (`autointerp.subject.planted`) are for the input side.

API (small on purpose):

- `PLANTED_OUTPUTS`: the built-in sets, in feature-index order.
- `planted_output_set(subject, layer=None) -> PlantedOutputSet`: the [n, d_model] matrix (rows usable
  as a `DirectionSource` matrix), the hook point, names, true descriptions and each set's token ids.
- `features.kind = "planted_output"` (`PlantedOutputs`): runs them as a run's feature source, a
  `DirectionSource` over that matrix at that hook (stored kind `direction`; feature `idx` i is
  `PLANTED_OUTPUTS[i]`). `features.layer` picks the block when set to a late one; by default
  `PLANTED_OUTPUT_LAYER` (or the model's last block when it has fewer).
- `planted_output_description(idx)`: the true description of feature index `idx`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autointerp.errors import FeatureError
from autointerp.subject.kinds import FeatureSourceKind, choose_indices
from autointerp.subject.model import SubjectModel
from autointerp.subject.sources import DirectionSource, FeatureSource

if TYPE_CHECKING:
    from autointerp.config import FeaturesConfig
    from autointerp.subject.shape import ModelShape


@dataclass(frozen=True)
class PlantedOutput:
    """A set of words the planted direction makes the model say, and its true description."""

    name: str
    description: str
    words: tuple[str, ...]
    """Each word is tried as a token with and without a leading space; only single tokens are kept."""


PLANTED_OUTPUTS: tuple[PlantedOutput, ...] = (
    PlantedOutput(
        "weekdays",
        "makes the model say names of weekdays",
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    ),
    PlantedOutput(
        "months",
        "makes the model say names of months",
        (
            "January",
            "February",
            "March",
            "April",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ),
    ),
    PlantedOutput("digits", "makes the model say digits", tuple("0123456789")),
    PlantedOutput(
        "closing_brackets", "makes the model say closing brackets", (")", "]", "}", "))", ");", "),", ").", "]]")
    ),
    PlantedOutput(
        "colours",
        "makes the model say names of colours",
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"),
    ),
    PlantedOutput(
        "animals",
        "makes the model say names of animals",
        ("dog", "cat", "horse", "cow", "sheep", "bird", "fish", "lion", "tiger", "rabbit", "mouse"),
    ),
    PlantedOutput(
        "number_words",
        "makes the model say numbers written as words",
        ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    ),
)
"""The built-in planted output features; feature index i is PLANTED_OUTPUTS[i]."""

PLANTED_OUTPUT_LAYER = 27
"""The block whose residual output the planted directions are written at (SmolLM2-135M has 30)."""


@dataclass(frozen=True)
class PlantedOutputSet:
    """The planted output directions of one subject model."""

    matrix: torch.Tensor
    """[n, d_model] float32 unit rows, in `PLANTED_OUTPUTS` order."""
    hook: str
    """Where they are read and written: `blocks.L.hook_resid_post`."""
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    """Per feature: the single tokens of its words (the tokens it should make the model say)."""


def set_token_ids(subject: SubjectModel, planted: PlantedOutput) -> tuple[int, ...]:
    """Returns the ids of the single tokens among `planted`'s words, with and without a leading space."""
    found: list[int] = []
    for word in planted.words:
        for text in (word, " " + word):
            ids = subject.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in found:
                found.append(int(ids[0]))
    if not found:
        raise FeatureError(f"planted output {planted.name!r}: none of its words is a single token of {subject.slug}")
    return tuple(found)


def unembedding_and_gain(subject: SubjectModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the unembedding [vocab, d_model] and the final norm's gain [d_model] (float32)."""
    arch = subject.architecture
    # the model's own accessor first: module names differ across transformers versions (gpt_neox)
    head = subject.model.get_output_embeddings() or _module(subject.model, arch.unembed)
    unembed = getattr(head, "weight").detach().float()  # noqa: B009
    norm = _module(subject.model, arch.final_norm)
    weight = getattr(norm, "weight", None)
    if weight is None:
        gain = torch.ones(unembed.shape[1], device=unembed.device)
    else:
        gain = arch.norm_gain_offset + weight.detach().float()
    return unembed, gain


def _module(root: Any, path: str) -> Any:
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def default_layer(subject: SubjectModel) -> int:
    """Returns PLANTED_OUTPUT_LAYER, or the model's last block when it has fewer blocks."""
    return min(PLANTED_OUTPUT_LAYER, subject.n_layers - 1)


def planted_output_set(subject: SubjectModel, layer: int | None = None) -> PlantedOutputSet:
    """Returns the planted output directions of `subject`, written at block `layer`'s residual output."""
    layer = default_layer(subject) if layer is None else layer
    unembed, gain = unembedding_and_gain(subject)
    centred = unembed - unembed.mean(dim=0)
    gram = centred.T @ centred  # [d, d]
    gram = gram + 1e-3 * gram.trace() / gram.shape[0] * torch.eye(gram.shape[0], device=gram.device)
    token_ids = tuple(set_token_ids(subject, p) for p in PLANTED_OUTPUTS)
    rows = []
    for ids in token_ids:
        # least squares: the logits W_U x closest to 1 on the set's tokens and 0 elsewhere (centred)
        target = torch.linalg.solve(gram, centred[list(ids)].sum(dim=0))
        vector = target / torch.where(gain.abs() < 1e-3, torch.full_like(gain, 1e-3), gain)  # g * v = target
        rows.append(vector / vector.norm())
    return PlantedOutputSet(
        matrix=torch.stack(rows).cpu(),
        hook=f"blocks.{layer}.hook_resid_post",
        names=tuple(p.name for p in PLANTED_OUTPUTS),
        descriptions=tuple(p.description for p in PLANTED_OUTPUTS),
        token_ids=token_ids,
    )


def planted_output_description(idx: int) -> str:
    """Returns the true description of planted output feature index `idx`."""
    if not 0 <= idx < len(PLANTED_OUTPUTS):
        raise FeatureError(f"planted output index {idx} does not exist: they are 0..{len(PLANTED_OUTPUTS) - 1}")
    return PLANTED_OUTPUTS[idx].description


class PlantedOutputs(FeatureSourceKind):
    """Planted output features (`features.kind = "planted_output"`): directions from unembedding rows of
    known token sets, read and written at a late block's residual output."""

    name: ClassVar[str] = "planted_output"
    stored_kind: ClassVar[str] = "direction"

    @staticmethod
    def _layer(config: FeaturesConfig, subject: SubjectModel) -> int | None:
        # features.layer defaults to 15 (a middle block, for neurons); a later block set on purpose is used
        return config.layer if config.layer > 15 else None

    def build(self, config: FeaturesConfig, subject: SubjectModel) -> FeatureSource:
        """Returns the planted output directions chosen by `features.indices` (default: all of them)."""
        planted = planted_output_set(subject, self._layer(config, subject))
        n = planted.matrix.shape[0]
        indices = choose_indices(config.indices, "all", n, 0, "planted output")
        return DirectionSource(subject, planted.matrix, planted.hook, indices)

    def rebuild(self, config: FeaturesConfig, subject: SubjectModel, feature: dict[str, Any]) -> FeatureSource:
        """Returns the one planted output direction of the row, at its stored hook point."""
        planted = planted_output_set(subject)
        return DirectionSource(subject, planted.matrix, str(feature["hook"]), [int(feature["idx"])])

    def check(self, config: FeaturesConfig, shape: ModelShape) -> None:
        """Checks the indices against the number of planted output features."""
        from autointerp.subject.shape import check_indices

        check_indices(config.indices, len(PLANTED_OUTPUTS), "planted output")
