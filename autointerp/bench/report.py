"""The planted-feature benchmark's Markdown report: scorers against distractors, explainers side by
side, batched judging, experiment rounds, one row per feature."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from autointerp.bench.results import BenchResult
from autointerp.bench.settings import BenchSettings, explainer_variants, score_columns
from autointerp.config import ExplainerConfig
from autointerp.score.simulation import NULL_DESCRIPTION


def pair_auroc(per_feature: dict[str, dict[str, float | None]], positive: str) -> tuple[float | None, int]:
    """Returns (share of (positive, distractor) pairs of the same feature that the positive wins, ties 1/2;
    pairs counted). A pair with an undefined value is left out."""
    wins, pairs = 0.0, 0
    for values in per_feature.values():
        mine = values.get(positive)
        if mine is None:
            continue
        for label, other in values.items():
            if label.startswith("distractor:") and other is not None:
                wins += 1.0 if mine > other else 0.5 if mine == other else 0.0
                pairs += 1
    return (wins / pairs if pairs else None), pairs


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _row(cells: Sequence[str]) -> str:
    """Returns one Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _top_tokens_line(s: BenchSettings) -> str:
    """Returns the header line that says whether the top-token list was weighed, as a run weighs it, or why not."""
    line = "- top-token list (`explainer.top_tokens_candidate`): "
    if s.weighs_top_tokens:
        explainer = ExplainerConfig()
        return (
            line + f"{explainer.top_tokens_named} tokens ranked `{explainer.top_tokens_rank}` (a run's defaults), "
            "weighed against each explainer's answer by simulation on the windows it saw; the better is kept"
        )
    if not s.top_tokens:
        return line + "off: each explainer's answer as written (--no-top-tokens)"
    if "simulation" not in s.methods:
        return line + "off: each explainer's answer as written (no simulation method: a run weighs it only then)"
    return line + "off: each explainer's answer as written"


def render_report(result: BenchResult) -> str:
    """Returns the Markdown report."""
    s = result.settings
    live = [fs for fs in result.features if fs.skipped is None]
    methods = [label for label, _, _ in score_columns(s)]
    explainers = [v.label for v in explainer_variants(s)]
    lines = [
        "# Planted-feature benchmark",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- scorer models: simulation `{s.scorer_for('simulation')}`, judges `{s.scorer_for('detection')}`"
        + (
            " (one model for every scorer: --scorer)"
            if s.scorer
            else " (a run's defaults: score.simulator, score.judge)"
        )
        + "; embedding model: `all-MiniLM-L6-v2`",
        f"- simulation prior (`score.simulation_prior`): {s.simulation_prior}"
        + (
            f" (the simulator's prediction under {NULL_DESCRIPTION!r} taken off each prediction)"
            if s.simulation_prior == "subtract"
            else ""
        ),
        f"- explainers: {', '.join(f'`{e}`' for e in explainers) or 'none'}",
        _top_tokens_line(s),
        f"- corpus: `{s.corpus}`, {result.windows} windows of {s.window_tokens} tokens (tokenizer `{s.subject}`)",
        f"- per feature: {s.explain_windows} explanation windows; held out {s.heldout_active} activating + "
        f"{s.heldout_quiet} non-activating; {s.distractors} distractor descriptions",
        f"- planted features: {len(result.features)} ({len(live)} fire on this corpus)",
        "- time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
        "",
        "Each scorer's number per (description, feature): simulation = pooled correlation on all held-out",
        "windows; detection and fuzzing = AUROC of P(yes) (balanced accuracy for backends without",
        "probabilities); embedding = AUROC of similarity. *AUROC vs distractors* is the share of",
        "(true description, distractor description) pairs on the same feature that the truth wins",
        "(ties 1/2; 0.5 is chance). *undefined* counts features where the scorer could not give a number",
        "(for example a dense feature with no non-activating window, for detection).",
        "*simulation few-shot* is all-at-once simulation with worked examples in the prompt",
        "(`score.simulation_prompt`). Explainer variants: *best-of-k* keeps the best of k explanations by",
        "simulation on the windows the explainer saw; *contrastive* also shows it similar non-activating windows.",
        "",
        "## Scorers: true description vs distractors",
        "",
        "| scorer | mean on truth | mean on distractors | AUROC truth vs distractors | pairs | undefined |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method in methods:
        per = result.scores[method]
        truth = [v.get("truth") for v in per.values()]
        distractor = [x for v in per.values() for k, x in v.items() if k.startswith("distractor:")]
        value, pairs = pair_auroc(per, "truth")
        undefined = sum(v.get("truth") is None for v in per.values())
        lines.append(
            f"| {method} | {_fmt(_mean(truth))} | {_fmt(_mean(distractor))} | {_fmt(value)} | {pairs} | {undefined} |"
        )
    if result.agreement:
        lines += agreement_section(result)
    if explainers:
        lines += ["", "## Explainers side by side", ""]
        header = ["metric", *[f"`{e}`" for e in explainers]]
        lines += [_row(header), _row(["---"] * len(header))]
        rows: list[list[str]] = []
        rows.append(
            ["explanations written", *[str(sum(1 for t in result.explanations[e].values() if t)) for e in explainers]]
        )
        if s.weighs_top_tokens:
            rows.append(
                [
                    "kept the top-token list, not the explainer's answer",
                    *[
                        f"{len(result.kept_lists.get(e, set()))}/{sum(1 for t in result.explanations[e].values() if t)}"
                        for e in explainers
                    ],
                ]
            )
        for method in methods:
            per = result.scores[method]
            rows.append(
                [
                    f"{method}: mean score (truth {_fmt(_mean([v.get('truth') for v in per.values()]))})",
                    *[_fmt(_mean([v.get(f"explainer:{e}") for v in per.values()])) for e in explainers],
                ]
            )
            rows.append(
                [f"{method}: AUROC vs distractors", *[_fmt(pair_auroc(per, f"explainer:{e}")[0]) for e in explainers]]
            )
        rows.append(
            [
                "embedding similarity to the truth (mean cosine)",
                *[_fmt(_mean([v[0] for v in result.similarity[e].values()])) for e in explainers],
            ]
        )
        rows.append(
            [
                "truth is the nearest planted description",
                *[
                    f"{sum(v[1] for v in result.similarity[e].values())}/{len(result.similarity[e])}"
                    for e in explainers
                ],
            ]
        )
        lines += [_row(r) for r in rows]
    if result.investigated:
        lines += experiment_section(result)
    if result.hard is not None:
        lines += hard_section(result)
    lines += ["", "## Per feature", ""]
    header = ["feature", "kind", "density", *[f"{m} (truth)" for m in methods]]
    header += [f"`{e}` wrote" for e in explainers]
    lines += [_row(header), _row(["---"] * len(header))]
    for fs in result.features:
        name = fs.feature.name
        cells = [f"{name}: {fs.feature.description}", fs.feature.kind, f"{fs.density:.3f}"]
        if fs.skipped:
            cells += [f"skipped: {fs.skipped}"] + [""] * (len(methods) - 1 + len(explainers))
        else:
            cells += [_fmt(result.scores[m].get(name, {}).get("truth")) for m in methods]
            for e in explainers:
                text = result.explanations[e].get(name)
                cells.append("(failed)" if text is None else text.replace("|", "\\|"))
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def hard_section(result: BenchResult) -> list[str]:
    """Returns the report lines of the harder tests: easy vs hard scores of the truth, a vague description and
    two distractors on planted families, and the intruder accuracy of coherent vs mixed planted features."""
    from autointerp.bench.hard import CANDIDATES
    from autointerp.score.intruder import wilson_interval

    hard = result.hard
    if hard is None:
        return []
    s = result.settings
    lines: list[str] = []
    if hard.scores:
        lines += [
            "",
            "## Easy vs hard negatives, random vs neighbour distractors (planted families)",
            "",
            "Features with a planted family neighbour (`the`/`a`, `digits`/`colon_numbers`, `bracket_depth`/",
            "`closing_brackets`, `after_the`/`after_of`). Each description is scored on the same held-out activating",
            "windows with random non-firing windows (*easy*) and with hard negatives, windows where a family",
            'neighbour fires and the feature does not (*hard*). *vague* fits the whole family ("numbers");',
            "*neighbour distractor* is the neighbour's own description (a hard distractor), *random distractor*",
            "another feature's (the usual one). Mean over features; n = features with a value.",
            "",
            "| scorer | description | easy | hard | n |",
            "| --- | --- | --- | --- | --- |",
        ]
        for method, per in hard.scores.items():
            for label in CANDIDATES:
                pairs = [v[label] for v in per.values() if label in v]
                easy = _mean([e for e, _ in pairs])
                harder = _mean([h for _, h in pairs])
                n = sum(e is not None and h is not None for e, h in pairs)
                lines.append(_row([method, label, _fmt(easy), _fmt(harder), str(n)]))
    if hard.intruder or hard.intruder_skipped:
        kinds = {fs.feature.name: fs.feature.kind for fs in result.features}
        lines += [
            "",
            f"## Intruder test: coherent vs mixed planted features (k = {s.intruder_windows}, chance "
            f"{1 / s.intruder_windows:.2f})",
            "",
            f"{s.intruder_prompts} prompts per feature, each {s.intruder_windows - 1} activating windows drawn at",
            "random from all of the feature's activating windows and one random non-firing window; no explanation is",
            "shown and the judge names the intruder. *mixed* features are unions of two unrelated planted features.",
            "Accuracy pooled over the group's prompts, with a 95 % Wilson interval; *per feature* is the mean of the",
            "features' accuracies.",
            "",
            "| features | n | prompts answered | accuracy [95 % interval] | per feature |",
            "| --- | --- | --- | --- | --- |",
        ]
        for group, keep in (("coherent", lambda k: k != "mixed"), ("mixed", lambda k: k == "mixed")):
            chosen = {n: v for n, v in hard.intruder.items() if keep(kinds.get(n, ""))}
            correct, answered = sum(c for c, _ in chosen.values()), sum(a for _, a in chosen.values())
            low, high = wilson_interval(correct, answered)
            share = correct / answered if answered else None
            per_feature = _mean([c / a for c, a in chosen.values() if a])
            lines.append(
                _row(
                    [
                        group,
                        str(len(chosen)),
                        str(answered),
                        f"{_fmt(share)} [{low:.2f}, {high:.2f}]",
                        _fmt(per_feature),
                    ]
                )
            )
        if hard.intruder_skipped:
            lines += ["", "No intruder score: " + "; ".join(f"{n} ({why})" for n, why in hard.intruder_skipped.items())]
    return lines


def agreement_section(result: BenchResult) -> list[str]:
    """Returns the report lines comparing batched judging (several windows per prompt) with one per prompt."""
    k = result.settings.judge_windows_per_prompt
    lines = [
        "",
        f"## Batched judging: {k} windows per prompt vs one",
        "",
        f"Detection and fuzzing judged again with `score.judge_windows_per_prompt = {k}` (one prompt lists",
        "several windows; the judge answers with a list of 1 / 0) on the same candidates and windows.",
        "*agreement* is the share of items both modes answered on which they give the same yes / no (one per",
        'prompt: P("yes") > 0.5 where the backend gives probabilities). The batched mode has no probabilities,',
        "so its number is balanced accuracy.",
        "",
        "| method | items | agreement | failed: one per prompt / batched | calls: one per prompt / batched "
        "| batched balanced accuracy: truth / distractors / AUROC truth vs distractors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, done in result.agreement.items():
        per = done.batched_scores
        truth = _mean([v.get("truth") for v in per.values()])
        distractor = _mean([x for v in per.values() for key, x in v.items() if key.startswith("distractor:")])
        area, _ = pair_auroc(per, "truth")
        lines.append(
            f"| {method} | {done.windows} | {_fmt(done.share)} ({done.same}/{done.compared}) "
            f"| {done.failed_single} / {done.failed_batched} | {done.calls_single} / {done.calls_batched} "
            f"| {_fmt(truth)} / {_fmt(distractor)} / {_fmt(area)} |"
        )
    return lines


def experiment_section(result: BenchResult) -> list[str]:
    """Returns the report lines on the experiment rounds: what they refuted, what the revisions scored."""
    s = result.settings
    methods = [label for label, _, _ in score_columns(s)]
    main = methods[0]
    lines = [
        "",
        f"## Experiments on the first explanation ({s.rounds} round{'s' if s.rounds != 1 else ''})",
        "",
        "Each explainer proposes input and minimal-pair experiments on its own first explanation; they are",
        "measured on the planted feature itself and judged by rule (supports / refutes / inconclusive); the",
        "explainer then revises. A first explanation is *wrong* when the truth is not the planted description",
        "nearest to it (embedding). *final* is what the loop keeps: the revision when it scores higher than",
        f"the first explanation on `{main}` (scored on the same held-out windows, as in a run), else the first.",
        "",
    ]
    header = ["metric", *[f"`{e}`" for e in result.investigated]]
    lines += [_row(header), _row(["---"] * len(header))]
    columns: list[list[str]] = []
    for spec, done in result.investigated.items():
        verdicts = [v for d in done.values() for _, v in d.verdicts]
        refuted = {name for name, d in done.items() if any(v == "refutes" for _, v in d.verdicts)}
        nearest = result.similarity.get(spec, {})
        wrong = {name for name in done if name in nearest and not nearest[name][1]}
        right = {name for name in done if name in nearest and nearest[name][1]}
        revised = {name for name, d in done.items() if d.revised}
        fixed = {n for n in wrong & revised if result.revised_similarity.get(spec, {}).get(n, (0.0, False))[1]}
        column = [
            str(len(done)),
            ", ".join(
                f"{k} {sum(1 for d in done.values() for kind, _ in d.verdicts if kind == k)}"
                for k in ("input", "minimal_pair")
            ),
            " / ".join(str(verdicts.count(v)) for v in ("supports", "refutes", "inconclusive")),
            f"{len(wrong & refuted)}/{len(wrong)}",
            f"{len(right & refuted)}/{len(right)}",
            f"{len(revised)}/{len(done)}",
            f"{len(fixed)}/{len(wrong)}",
        ]
        first_cos = [nearest[n][0] for n in revised if n in nearest]
        revised_cos = [
            result.revised_similarity[spec][n][0] for n in revised if n in result.revised_similarity.get(spec, {})
        ]
        column.append(f"{_fmt(_mean(first_cos))} → {_fmt(_mean(revised_cos))}")
        for method in methods:
            per = result.scores[method]
            first = [per.get(n, {}).get(f"explainer:{spec}") for n in done]
            paired = [(per.get(n, {}).get(f"explainer:{spec}"), per.get(n, {}).get(f"revised:{spec}")) for n in revised]
            final = [_final(result.scores[main].get(n, {}), spec, per.get(n, {})) for n in done]
            column.append(
                f"{_fmt(_mean(first))} → {_fmt(_mean(final))} "
                f"(revised only: {_fmt(_mean([a for a, _ in paired]))} → {_fmt(_mean([b for _, b in paired]))})"
            )
        columns.append(column)
    names = [
        "features with experiments",
        "experiments run",
        "verdicts: supports / refutes / inconclusive",
        "wrong first explanations refuted by an experiment",
        "right first explanations refuted (false alarms)",
        "rounds that changed the explanation",
        "wrong first explanations whose revision is right",
        "cosine to the truth, first → revised (revised features)",
        *[f"{m}: mean first → final" for m in methods],
    ]
    for row, name in enumerate(names):
        lines.append(_row([name, *[c[row] for c in columns]]))
    return lines


def _final(main_scores: dict[str, float | None], spec: str, scores: dict[str, float | None]) -> float | None:
    """Returns the score of what the loop keeps: the revision when it beats the first explanation on the
    main method, else the first explanation."""
    first, revised = main_scores.get(f"explainer:{spec}"), main_scores.get(f"revised:{spec}")
    if revised is not None and (first is None or revised > first):
        return scores.get(f"revised:{spec}")
    return scores.get(f"explainer:{spec}")


def write_report(result: BenchResult, path: Path) -> Path:
    """Writes the Markdown report to `path` (creating folders); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path
