"""The smallest training plan both training commands' end-to-end tests share: 4 members, 8-token windows,
a rank-2 adapter on the last block, one step of 4 examples and no evaluation."""

from __future__ import annotations

from typing import Any

from autointerp.simtrain.lora import TrainSettings

TINY_PLAN: dict[str, Any] = dict(
    window_sizes=(8,),
    windows_per_size=96,
    words=4,
    heldout_examples=2,
    blocks=1,
    rank=2,
    alpha=4.0,
    train=TrainSettings(batch_size=4),
    evaluate=False,
    max_members=4,
)
"""Plan fields for `SimulatorTrainingPlan` and `ExplainerTrainingPlan` alike (add `out` and the command's own)."""
