"""The output side of features: what a feature writes into the model, as evidence.

- `records`: `OutputEvidence` / `TokenEffect` (torch-free; the store reads and writes them).
- `direct`: the direct path of every feature's write direction to the logits, in one blocked pass.
- `steering`: token changes when features are steered on neutral prompts, batched over prompts and features.
- `planted`: planted OUTPUT features (directions from unembedding rows of known token sets) with their
  true descriptions, and the `planted_output` feature-source kind that runs them.
- `stage`: the outputs stage of a run (after collect), resumable.

Only the torch-free records are imported here.
"""

from autointerp.outputs.records import PLANTED_NO_OUTPUT, OutputEvidence, TokenEffect

__all__ = ["PLANTED_NO_OUTPUT", "OutputEvidence", "TokenEffect"]
