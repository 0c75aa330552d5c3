"""Act stage: input experiments for the lowest-scoring explanations."""

from __future__ import annotations

from collections.abc import Callable

from autointerp.config import RunConfig
from autointerp.experiment import experiment_row, propose_inputs, run_input_experiment
from autointerp.llm import CallRecorder, get_backend
from autointerp.pipeline.common import MAIN_METRIC, attempted, load_subject
from autointerp.progress import progress_bar
from autointerp.store import Store
from autointerp.subject import SubjectModel, mlp_neuron_activations


def _max_activation_of(subject: SubjectModel, layer: int, index: int) -> Callable[[str], float]:
    def measure(text: str) -> float:
        ids = subject.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            return 0.0
        return float(mlp_neuron_activations(subject, ids, layer, [index]).max())

    return measure


def run_experiments(config: RunConfig, store: Store, run_id: str) -> int:
    """Act: proposes and runs input experiments for the lowest-scoring explanations; returns how many ran."""
    if config.experiments.lowest_n == 0:
        return 0
    scores = {s["explanation_id"]: s["value"] for s in store.scores(run_id, MAIN_METRIC)}
    candidates = sorted(
        (e for e in store.explanations(run_id) if e["id"] in scores),
        key=lambda e: (scores[e["id"]] is not None, scores[e["id"]] or 0.0),
    )[: config.experiments.lowest_n]
    done = attempted(store, run_id, "propose", "explanation_id")
    todo = [e for e in candidates if e["id"] not in done]
    if not todo:
        return 0
    proposer_cfg = config.experiments.proposer
    backend = get_backend(proposer_cfg.model)
    subject = load_subject(config)
    features = {f["id"]: f for f in store.features(run_id)}
    ran = 0
    with progress_bar("experiment", total=len(todo), unit="features") as advance:
        for explanation in todo:
            feature = features[explanation["feature_id"]]
            exemplars = [e for e in store.exemplars(run_id, feature["id"]) if e["split"] == "explain"][:3]
            recorder = CallRecorder(run_id)
            proposal = propose_inputs(
                backend,
                recorder,
                feature_id=feature["id"],
                explanation_id=explanation["id"],
                explanation=explanation["text"],
                exemplars=exemplars,
                max_activation=feature["max_activation"],
                per_side=config.experiments.texts_per_side,
                max_tokens=proposer_cfg.max_tokens,
                temperature=proposer_cfg.temperature,
                retries=proposer_cfg.retries,
            )
            rows = []
            if proposal is not None:
                layer = int(feature["hook"].split(".")[1])
                measured, verdict = run_input_experiment(
                    proposal, _max_activation_of(subject, layer, feature["idx"]), feature["max_activation"]
                )
                rows.append(experiment_row(run_id, explanation["id"], proposal, measured, verdict))
                ran += 1
            store.write_results({"experiments": rows, "llm_calls": recorder.take()})
            advance(1)
    return ran
