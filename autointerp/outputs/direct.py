"""The direct path of features to the logits: which tokens a feature's write direction promotes and
suppresses (Neuronpedia's positive / negative logits), for every feature in one blocked matrix product.

A feature that adds w (its `WriteDirections` row) to the residual stream changes the logits, along the
direct path that skips every later block, by W_U (g * w): g is the final norm's gain (for a LayerNorm
family w is centred first, as the norm centres the stream) and W_U the unembedding. The norm's
division by the stream's scale is left out: it rescales every token of a feature alike, so the ranking
and the signs hold. Features are taken `block` at a time, so memory stays at block x vocab floats
however many features there are (46,080 MLP neurons of SmolLM2-135M: 90 blocks of 512).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autointerp.outputs.planted import unembedding_and_gain
from autointerp.outputs.records import TokenEffect
from autointerp.subject.model import SubjectModel

DEFAULT_BLOCK = 512
"""Features per matrix product: 512 x 49,152 float32 logits is 100 MB."""


@dataclass(frozen=True)
class DirectPath:
    """Top tokens of the direct path of n features: values and token ids, [n, k] each."""

    promoted_values: torch.Tensor
    """[n, k] logit change per unit of activation, highest first."""
    promoted_ids: torch.Tensor
    suppressed_values: torch.Tensor
    """[n, k] most negative first."""
    suppressed_ids: torch.Tensor


@torch.inference_mode()
def direct_path_topk(
    unembed: torch.Tensor,
    gain: torch.Tensor,
    vectors: torch.Tensor,
    top_k: int,
    block: int = DEFAULT_BLOCK,
    centre: bool = False,
) -> DirectPath:
    """Returns the top-k promoted and suppressed tokens of W_U (g * w) for each row w of `vectors` [n, d],
    computed `block` rows at a time on `unembed`'s device (`centre`: subtract each row's mean first)."""
    device = unembed.device
    folded = (unembed * gain.to(device)).T.contiguous()  # [d, vocab]: the gain folded into the unembedding
    k = min(top_k, unembed.shape[0])
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, vectors.shape[0], block):
        rows = vectors[start : start + block].to(device=device, dtype=torch.float32)
        if centre:
            rows = rows - rows.mean(dim=-1, keepdim=True)
        logits = rows @ folded  # [block, vocab]
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
        parts.append((top.values.cpu(), top.indices.cpu(), bottom.values.cpu(), bottom.indices.cpu()))
    if not parts:
        empty = torch.zeros(0, k)
        return DirectPath(empty, empty.long(), empty, empty.long())
    return DirectPath(*(torch.cat([p[i] for p in parts]) for i in range(4)))


def direct_path(subject: SubjectModel, vectors: torch.Tensor, top_k: int, block: int = DEFAULT_BLOCK) -> DirectPath:
    """Returns the direct-path top tokens of write directions `vectors` [n, d_model] in `subject`."""
    unembed, gain = unembedding_and_gain(subject)
    return direct_path_topk(unembed, gain, vectors, top_k, block, centre=subject.architecture.norm == "layernorm")


class TokenText:
    """Token id -> its decoded text, decoding each id once."""

    def __init__(self, subject: SubjectModel) -> None:
        self.subject = subject
        self._text: dict[int, str] = {}

    def effects(self, ids: torch.Tensor, values: torch.Tensor) -> tuple[TokenEffect, ...]:
        """Returns TokenEffects of parallel 1-d tensors of token ids and values."""
        id_list = [int(i) for i in ids.tolist()]
        missing = [i for i in id_list if i not in self._text]
        for token_id, text in zip(missing, self.subject.decode_tokens(missing), strict=True):
            self._text[token_id] = text
        return tuple(TokenEffect(self._text[i], i, float(v)) for i, v in zip(id_list, values.tolist(), strict=True))
