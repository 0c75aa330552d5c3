"""What a feature writes into the model, as evidence: typed, torch-free records.

`OutputEvidence` holds, for one feature of a run, the tokens its write direction promotes and
suppresses on the direct path to the logits (through the final norm's gain and the unembedding:
Neuronpedia's positive / negative logits), and the tokens whose next-token log-probability rises and
falls most when the feature is steered on neutral prompts. A feature that writes nothing into the
model (a planted input feature) carries `no_output_reason` and empty token lists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenEffect:
    """One token and how much a feature moves it."""

    token: str
    """The token's text as it reads in decoded text (leading space included)."""
    token_id: int
    value: float
    """Direct path: the logit change per unit of activation. Steering: the mean change in next-token
    log-probability."""


@dataclass(frozen=True)
class OutputEvidence:
    """The output side of one feature of a run (`feature_id`: the features table's `id`)."""

    feature_id: str
    promoted: tuple[TokenEffect, ...] = ()
    """Direct path: the tokens whose logits the feature raises most, highest first."""
    suppressed: tuple[TokenEffect, ...] = ()
    """Direct path: the tokens whose logits the feature lowers most, lowest (most negative) first."""
    steer_raised: tuple[TokenEffect, ...] = ()
    """Steering: the tokens whose next-token log-probability rises most on average, largest first."""
    steer_lowered: tuple[TokenEffect, ...] = ()
    """Steering: the tokens whose next-token log-probability falls most on average, most negative first."""
    steer_scale: float = 0.0
    """Steering added `steer_scale` x the feature's max activation at every position."""
    steer_prompts: int = 0
    """How many neutral prompts the steering change is averaged over (0: no steering evidence)."""
    no_output_reason: str | None = None
    """Why the feature has no output side (then every token list is empty); None when it has one."""

    @property
    def has_output(self) -> bool:
        """Returns True when the feature writes into the model (no `no_output_reason`)."""
        return self.no_output_reason is None


PLANTED_NO_OUTPUT = "planted features are computed from tokens and write nothing into the model"
"""The `no_output_reason` of planted (input) features."""
