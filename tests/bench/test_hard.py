"""The harder tests of `autointerp bench --hard`, with a judge that knows the planted truth.

The judge is a loopback OpenAI-compatible server that reads each prompt and answers from the planted
functions themselves: detection says yes when the described feature fires on the text (a vague description
is the union of its family); the intruder judge names the one text that lacks the most specific known
feature all the others share, and guesses text 1 when no such feature exists. So hard negatives must take
a vague description down to chance while the true one keeps its score, and the intruder test must find
coherent planted features (~1.0) and not mixed ones (near chance).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.subject.planted import PlantedFeature
from autointerp.subject.planted_families import PLANTED_FAMILIES, hard_planted_features
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion, split_tokens

FEATURES = {f.name: f for f in hard_planted_features()}
PURE = [FEATURES[n] for n in ("the", "a", "digits", "colon_numbers", "of", "is", "closing_brackets")]
"""What the intruder judge knows: unmixed features, most specific first (the first that fits wins)."""
PURE = sorted(PURE, key=lambda f: ["colon_numbers", "a", "of", "is", "closing_brackets", "digits", "the"].index(f.name))
SHOWN = ["the", "a", "digits", "colon_numbers", "mixed_of_digits", "mixed_is_brackets"]


def _fires(features: Sequence[PlantedFeature], text: str) -> bool:
    tokens = split_tokens(text.replace("\\n", "\n"))
    return any(max(f.activations(tokens), default=0.0) > 0 for f in features)


def _described(explanation: str) -> list[PlantedFeature]:
    """Returns the planted features a description names (a family's vague description: all its members)."""
    for family in PLANTED_FAMILIES:
        if explanation == family.vague:
            return [FEATURES[m] for m in family.members]
    return [f for f in FEATURES.values() if f.description == explanation]


def knowing_judge(request: Received) -> Reply:
    """Answers detection, intruder and explanation prompts from the planted truth."""
    prompt = "\n".join(str(m["content"]) for m in request.body["messages"])
    texts = re.findall(r"^Text \d+: (.*)$", prompt, re.MULTILINE)
    if "odd one out" in prompt:
        answer = "1"
        for feature in PURE:
            lacking = [i for i, t in enumerate(texts) if not _fires([feature], t)]
            if len(lacking) == 1:
                answer = str(lacking[0] + 1)
                break
        return Reply(openai_completion(answer))
    if "Text: " in prompt:
        explanation = re.search(r"The neuron fires on (.*)\.\n", prompt)
        text = prompt.split("Text: ", 1)[1].split("\n")[0]
        fires = explanation is not None and _fires(_described(explanation.group(1)), text)
        return Reply(openai_completion("yes" if fires else "no"))
    return Reply(openai_completion("some words"))  # the explainer's turn: not measured here


def test_hard_negatives_and_the_intruder_test_with_a_judge_that_knows_the_truth(tmp_path: Path) -> None:
    output = tmp_path / "planted.md"
    with LoopbackServer([], respond=knowing_judge) as server:
        spec = f"openai-compatible:{server.url}/v1#judge"
        args = ["bench", "--hard", "--scorer", spec, "--explainer", spec, "--rounds", "0", "--max-windows", "2048"]
        args += ["--no-top-tokens"]  # the explainer is not measured here
        args += ["--method", "detection", "--method", "intruder", "--intruder-prompts", "12", "--distractors", "1"]
        args += [a for name in SHOWN for a in ("--feature", name)] + ["--output", str(output)]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = output.read_text()
    rows = {
        tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line
        for line in report.splitlines()
        if line.startswith("| detection |")
    }

    def easy_hard(label: str) -> tuple[float, float]:
        cells = [c.strip() for c in rows[("detection", label)].strip("|").split("|")]
        return float(cells[2]), float(cells[3])

    truth, vague = easy_hard("truth"), easy_hard("vague")
    assert truth[0] >= 0.95 and truth[1] >= 0.95  # the true description keeps its score on hard negatives
    assert vague[1] <= 0.6 and vague[0] - vague[1] >= 0.2  # a vague one passes the easy test, not the hard one
    groups = {
        line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith(("| coherent", "| mixed"))
    }
    coherent = float(groups["coherent"].split("|")[4].split()[0])
    mixed = float(groups["mixed"].split("|")[4].split()[0])
    assert coherent >= 0.9, report
    assert mixed <= 0.6, report
