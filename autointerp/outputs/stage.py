"""The outputs stage: output evidence for every live feature of a run, right after collection.

One pass: the features' write directions (`FeatureSource.write_directions`) go through the direct path
to the logits together (`direct.direct_path`, blocked over features), then steering runs `chunk`
features at a time (`steering.steering_topk`, batched over prompts and features), and each chunk's
evidence is written in one transaction, so an interrupted run resumes where it stopped: features whose
evidence is stored are skipped. Planted input features are stored with `PLANTED_NO_OUTPUT`, and features
whose source writes no fixed vector into the residual stream with the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch

from autointerp.config import RunConfig
from autointerp.outputs.direct import TokenText, direct_path
from autointerp.outputs.records import PLANTED_NO_OUTPUT, OutputEvidence
from autointerp.outputs.steering import neutral_prompts, steering_topk
from autointerp.pipeline.common import load_subject
from autointerp.pipeline.pool import StageResult
from autointerp.store.database import Store
from autointerp.subject.kinds import build_feature_source
from autointerp.subject.sources import FeatureSource

log = logging.getLogger(__name__)

CHUNK_FEATURES = 256
"""Features steered (and written) per chunk: what an interrupted run loses at most."""


def no_output_reason(source: FeatureSource) -> str:
    """Returns why the features of `source` have no output evidence (its write_directions() is None)."""
    if source.kind == "planted":
        return PLANTED_NO_OUTPUT
    hooks = sorted(set(source.hooks))
    return (
        f"{source.kind} features at {', '.join(hooks[:3])} write no fixed vector into the residual stream "
        "(output evidence needs blocks.L.hook_resid_pre / hook_resid_post / hook_mlp_out, and a family "
        "without a norm after the MLP for neurons)"
    )


def run_outputs(config: RunConfig, store: Store, run_id: str) -> StageResult:
    """Computes and stores the output evidence of every live feature of the run still without any;
    returns the stage's tallies (features already stored count as done)."""
    result = StageResult("outputs")
    settings = config.outputs
    if not settings.enabled:
        return result
    features = [f for f in store.features(run_id) if f.live]
    stored = store.output_evidence_ids(run_id)
    todo = [f for f in features if f.id not in stored]
    result.total, result.done = len(features), len(features) - len(todo)
    if not todo:
        return result
    subject = load_subject(config)
    source = build_feature_source(config.features, subject)
    writes = source.write_directions()
    if writes is None:
        reason = no_output_reason(source)
        store.write_output_evidence(run_id, [OutputEvidence(f.id, no_output_reason=reason) for f in todo])
        result.done += len(todo)
        log.info("outputs: %d features have no output side (%s)", len(todo), reason)
        return result
    position = {feature_id: i for i, feature_id in enumerate(source.feature_ids)}
    missing = [f for f in todo if f.id not in position]
    for feature in missing:
        result.failed[feature.id] = "not a feature of the run's configured source"
    todo = [f for f in todo if f.id in position]
    rows = torch.tensor([position[f.id] for f in todo], dtype=torch.long)
    vectors = writes.vectors.index_select(0, rows.to(writes.vectors.device))
    hooks = [writes.hooks[int(r)] for r in rows]
    started = time.perf_counter()
    direct = direct_path(subject, vectors, settings.top_k, settings.direct_block)
    log.info("outputs: direct path of %d features in %.2f s", len(todo), time.perf_counter() - started)
    prompts = None
    if settings.steer_prompts:
        prompts = neutral_prompts(subject, config.corpus, settings.steer_prompts, settings.steer_tokens)
    text = TokenText(subject)
    steer_seconds = 0.0
    for start in range(0, len(todo), CHUNK_FEATURES):
        chunk = todo[start : start + CHUNK_FEATURES]
        span = slice(start, start + len(chunk))
        steered = None
        if prompts is not None:
            amounts = torch.tensor([settings.steer_scale * f.max_activation for f in chunk])
            steered = steering_topk(
                subject, prompts, hooks[span], vectors[span], amounts, settings.top_k, settings.steer_batch_rows
            )
            steer_seconds += steered.seconds
        items = []
        for j, feature in enumerate(chunk):
            i = start + j
            evidence = OutputEvidence(
                feature.id,
                promoted=text.effects(direct.promoted_ids[i], direct.promoted_values[i]),
                suppressed=text.effects(direct.suppressed_ids[i], direct.suppressed_values[i]),
            )
            if steered is not None:
                evidence = replace(
                    evidence,
                    steer_raised=text.effects(steered.raised_ids[j], steered.raised_values[j]),
                    steer_lowered=text.effects(steered.lowered_ids[j], steered.lowered_values[j]),
                    steer_scale=settings.steer_scale,
                    steer_prompts=settings.steer_prompts if prompts is None else int(prompts.shape[0]),
                )
            items.append(evidence)
        store.write_output_evidence(run_id, items)
        result.done += len(chunk)
    if prompts is not None:
        log.info(
            "outputs: steering %d features on %d prompts x %d tokens: %.3f s per feature",
            len(todo),
            prompts.shape[0],
            prompts.shape[1],
            steer_seconds / max(1, len(todo)),
        )
    return result
