"""Records as table rows: the flat copy gives what `asdict` gave (JSON fields serialised, lists copied)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from autointerp.records import Exemplar, Explanation, Feature, LLMCall, Record, Score
from autointerp.score.confidence import Confidence


def _asdict_row(record: Record) -> dict[str, Any]:
    """The row as `to_row` made it before: a deep `asdict`, then the JSON fields dumped."""
    row = asdict(record)
    for name in record.JSON_FIELDS:
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name])
    return row


def test_rows_are_what_asdict_gave_and_share_no_list_with_the_record() -> None:
    messages = [{"role": "user", "content": "Which word?"}]
    call = LLMCall(run_id="r", role="explain", backend="b", model="m", prompt_hash="h",
                   request={"messages": messages, "max_tokens": 8}, response="the word zq")  # fmt: skip
    confidence = Confidence(low=0.5, high=0.9, half_width=0.2, p_vs_distractor=0.01, resamples=400)
    windows = [{"true": [0.0, 4.0], "predicted": [0.0, 10.0]}]
    score = Score(run_id="r", explanation_id="e", scorer="simulation", scorer_model="m", metric="corr", value=0.7,
                  details={"windows": windows, "confidence": confidence})  # fmt: skip
    explanation = Explanation(run_id="r", feature_id="f", text="t", explainer="b", prompt_hash="h", llm_call_id=None)
    for made in (call, score, explanation):
        assert made.to_row() == _asdict_row(made)
    assert json.loads(score.to_row()["details"])["confidence"]["resamples"] == 400  # a dataclass inside details
    exemplar = Exemplar(run_id="r", feature_id="f", kind="top", rank=0, doc_id=1, token_offset=0, token_ids=[5, 6],
                        tokens=[" a", " b"], activations=[0.0, 1.0], max_activation=1.0, split="explain")  # fmt: skip
    feature = Feature(run_id="r", id="f", model="m", hook="mlp.0", kind="neuron", idx=0, max_activation=1.0,
                      window_max_histogram=[3, 1])  # fmt: skip
    for kept in (exemplar, feature):
        row = kept.to_row()
        assert row == asdict(kept)
        for name, value in row.items():
            assert not isinstance(value, list) or value is not getattr(kept, name)
