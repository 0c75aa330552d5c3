"""Experiment kinds as plugins: one class per kind, registered under `autointerp.experiment_kinds`.

A kind declares its name in `experiments.kinds`, whether it needs the feature to be a direction in
the model (ablation and steering edit one; planted features are not) and whether it needs the
proposer's predicted output words, and implements `run(context)`: it reads the feature, the subject
model and the round's explanation from an `ExperimentContext`, asks its proposer, and records its
`Experiment` rows and the lines for the reviser there. It may check the config before a run (`check`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch

from autointerp.activations import normalize_activations
from autointerp.experiments.context import ExperimentContext
from autointerp.experiments.proposals import (
    INPUT_PREDICTION,
    minimal_pair_verdict,
    output_verdict,
    propose_inputs,
    replacement_parser,
    replacement_shape,
    run_input_experiment,
)
from autointerp.explain.explainer import marked_text
from autointerp.plugins import Registry
from autointerp.subject.interventions import (
    Edit,
    generate_with_edit,
    kl_divergence,
    next_token_logprobs,
    top_changed_tokens,
)

if TYPE_CHECKING:
    from autointerp.config import RunConfig


STEERING_PROMPTS = ("The", "In this section,", "I think that")
"""Neutral prompts whose next-token distribution steering is measured on."""


class ExperimentKind(ABC):
    """A kind of experiment run in each round on a feature's current explanation."""

    name: ClassVar[str]
    """Its name in `experiments.kinds`."""
    needs_direction: ClassVar[bool] = False
    """Runs only on features that are a direction in the model (it edits the model)."""
    needs_output_prediction: ClassVar[bool] = False
    """Reads the proposer's predicted output words (`ExperimentContext.predicted_words`)."""

    @abstractmethod
    def run(self, context: ExperimentContext) -> None:
        """Runs the experiment; records its rows and lines for the reviser in `context`."""

    def check(self, config: RunConfig) -> list[str]:
        """The preflight's check of what the kind needs beyond the proposer's model (which its backend
        checks): raises a one-line AutointerpError saying what to change, returns warnings. Must be fast
        and load no model. The default checks nothing: the `experiments` section's own validation covers
        the built-in kinds' settings."""
        return []


class InputExperiment(ExperimentKind):
    """Texts the proposer predicts will and will not activate the feature, run on the subject model."""

    name: ClassVar[str] = "input"

    def run(self, context: ExperimentContext) -> None:
        """Runs the experiment on the round's explanation."""
        target, subject = context.target, context.subject
        per_side = context.settings.texts_per_side
        text, max_activation = context.explanation["text"], target.feature["max_activation"]
        proposal = propose_inputs(context.proposer, text, context.exemplars, max_activation, per_side)
        if proposal is None:
            return
        measured, verdict = run_input_experiment(
            proposal, lambda text: target.max_activation_of(subject, text), max_activation
        )
        context.record("input", proposal.model_dump(), dict(INPUT_PREDICTION), measured, verdict)
        for side, should in (("activating", "should fire"), ("non_activating", "should not fire")):
            for item in measured[side]:
                context.results.append(f'"{item["text"]}" ({should}): {item["level"]:.0f}/10')


class MinimalPair(ExperimentKind):
    """An exemplar with its strongest token replaced by a word the proposer predicts will not fire."""

    name: ClassVar[str] = "minimal_pair"

    def run(self, context: ExperimentContext) -> None:
        """Runs the experiment on the round's explanation."""
        target, explanation, exemplars, subject = (
            context.target,
            context.explanation,
            context.exemplars,
            context.subject,
        )
        if not exemplars:
            return
        window = exemplars[0]
        position = max(range(len(window["activations"])), key=lambda i: window["activations"][i])
        token = window["tokens"][position]
        levels = normalize_activations(window["activations"], target.feature["max_activation"])
        values = {
            "explanation": explanation["text"],
            "marked_text": marked_text(window["tokens"], [10 if i == position else 0 for i in range(len(levels))]),
            "token": repr(token.strip() or token),
        }
        word = context.proposer.ask("minimal_pair", values, replacement_parser(token), shape=replacement_shape(token))
        if word is None:
            return
        replacement = (" " if token.startswith(" ") else "") + word
        new_ids = subject.tokenizer(replacement, add_special_tokens=False)["input_ids"]
        ids = list(window["token_ids"])
        edited_ids = ids[:position] + new_ids + ids[position + 1 :]
        edited = target.activations(torch.tensor([edited_ids]))[0]
        original = float(target.activations(torch.tensor([ids]))[0, position])
        after = float(edited[position : position + len(new_ids)].max())
        verdict = minimal_pair_verdict(original, after)
        spec = {"window_rank": window["rank"], "position": position, "token": token, "replacement": replacement}
        measured = {
            "original_activation": original,
            "edited_activation": after,
            "edited_text": subject.tokenizer.decode(edited_ids),
        }
        context.record("minimal_pair", spec, {"activation": "drops by half or more"}, measured, verdict)
        context.results.append(
            f"replacing {token.strip()!r} by {replacement.strip()!r}: "
            f"{10 * original / target.feature['max_activation']:.0f} -> "
            f"{10 * max(after, 0.0) / target.feature['max_activation']:.0f}/10"
        )


class Ablation(ExperimentKind):
    """Ablating the feature: which next tokens get less likely, against the predicted words."""

    name: ClassVar[str] = "ablation"
    needs_direction: ClassVar[bool] = True
    needs_output_prediction: ClassVar[bool] = True

    def run(self, context: ExperimentContext) -> None:
        """Runs the experiment on the round's explanation."""
        target, exemplars, subject, mode = context.target, context.exemplars, context.subject, context.settings.ablation
        if not exemplars:
            return
        ids = torch.tensor([e["token_ids"] for e in exemplars])
        value = 0.0 if mode == "zero" else float(target.feature["mean_activation"])
        edit = target.edit(set_to=value)
        clean = next_token_logprobs(subject, ids)
        ablated = next_token_logprobs(subject, ids, edit)
        kl = kl_divergence(clean, ablated)
        active = torch.tensor(
            [[a >= 0.1 * target.feature["max_activation"] for a in e["activations"]] for e in exemplars]
        )
        kl_active = float(kl[active].mean()) if active.any() else 0.0
        kl_inactive = float(kl[~active].mean()) if (~active).any() else 0.0
        promoted, suppressed = top_changed_tokens(subject, clean[active], ablated[active])
        verdict = output_verdict(kl_active, context.predicted_words, suppressed)
        spec = {"mode": mode, "value": value, "windows": [e["rank"] for e in exemplars]}
        measured = {"kl_active": kl_active, "kl_inactive": kl_inactive, "promoted": promoted, "suppressed": suppressed}
        context.record("ablation", spec, {"suppressed_words": context.predicted_words}, measured, verdict)
        context.results.append(
            f"ablating the feature makes these next tokens less likely: {', '.join(t.strip() for t in suppressed[:5])}"
        )


class Steering(ExperimentKind):
    """Steering the feature up: which next tokens get more likely, against the predicted words."""

    name: ClassVar[str] = "steering"
    needs_direction: ClassVar[bool] = True
    needs_output_prediction: ClassVar[bool] = True

    def run(self, context: ExperimentContext) -> None:
        """Runs the experiment on the round's explanation."""
        target, subject = context.target, context.subject
        prompts = [
            subject.tokenizer(p, add_special_tokens=False, return_tensors="pt")["input_ids"] for p in STEERING_PROMPTS
        ]

        def after_prompts(edit: Edit | None) -> torch.Tensor:
            """Next-token log-probs after each neutral prompt, [1, prompts, vocab]."""
            return torch.cat([next_token_logprobs(subject, ids, edit)[:, -1:] for ids in prompts], dim=1)

        clean = after_prompts(None)
        clean_generation = generate_with_edit(subject, STEERING_PROMPTS[0], None, max_new_tokens=10)
        for strength in context.settings.steering_strengths:
            added = strength * target.feature["max_activation"]
            edit = target.edit(add=added)
            steered = after_prompts(edit)
            promoted, suppressed = top_changed_tokens(subject, clean, steered)
            mean_kl = float(kl_divergence(clean, steered).mean())
            generations = {
                "clean": clean_generation,
                "steered": generate_with_edit(subject, STEERING_PROMPTS[0], edit, max_new_tokens=10),
            }
            verdict = output_verdict(mean_kl, context.predicted_words, promoted)
            spec = {"strength": strength, "added": added, "prompts": list(STEERING_PROMPTS)}
            measured = {"kl": mean_kl, "promoted": promoted, "suppressed": suppressed, "generations": generations}
            context.record("steering", spec, {"promoted_words": context.predicted_words}, measured, verdict)
            context.results.append(
                "steering the feature up makes these next tokens more likely: "
                + ", ".join(t.strip() for t in promoted[:5])
            )


EXPERIMENT_KINDS: Registry[type[ExperimentKind]] = Registry("autointerp.experiment_kinds", "experiment kind")
"""Every experiment kind, by its name in `experiments.kinds`."""
