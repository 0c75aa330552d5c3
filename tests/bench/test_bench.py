"""The planted benchmark's experiment rounds: measured on planted features, judged by rule, reported.

The explainer is a scripted chat backend registered through the real registry: it always says the
feature fires on the word "of", proposes "A cup of tea." as a sentence that should fire, and revises
to the word "is". On the planted feature `is` that first explanation is wrong and the input
experiment must refute it; on `of` it is right and the experiment must support it.
"""

import re
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from autointerp.bench import BenchSettings, feature_set, render_report, run_bench
from autointerp.cli.app import app
from autointerp.config import ExplainerConfig
from autointerp.llm import ChatBackend, ChatRequest, ChatResponse, register_backend
from autointerp.subject.planted import PlantedFeature, load_planted_features


class ScriptedExplainer(ChatBackend):
    backend = "scripted-bench"

    def generate(self, request: ChatRequest) -> ChatResponse:
        system, user = request.messages[0].content, request.messages[1].content
        if "revise explanations" in system:
            text = ' the word "is".'
        elif "minimal-pair" in system:
            text = 'dog" is the word'
        elif "design experiments" in system:
            text = 'A cup of tea."' if "should make the neuron fire" in user else 'The dog runs fast."'
        else:
            text = ' the word "of".'
        return ChatResponse(text=text, input_tokens=10, output_tokens=3)


register_backend("scripted-bench", ScriptedExplainer)


def test_bench_weighs_the_top_token_list_against_the_explainers_answer_as_a_run_does(tmp_path: Path) -> None:
    """The explainer always answers `the word "of"`; the simulator knows the answer (10 on the word a
    description names). On planted `is` the list of the strongest tokens (`the word "is"`) simulates better on
    the explanation windows and is kept, so its held-out score is the truth's; `--no-top-tokens` reports the
    explainer's answer alone."""
    from tests.explain.test_best_of import WordSimulator  # registers word-simulator

    def bench(*extra: str) -> str:
        output = tmp_path / f"planted{len(extra)}.md"
        args = ["bench", "--explainer", "scripted-bench:x", "--scorer", "word-simulator:x", "--method", "simulation"]
        args += ["--rounds", "0", "--feature", "is", "--feature", "of", "--max-windows", "300", "--distractors", "1"]
        result = CliRunner().invoke(app, [*args, "--output", str(output), *extra])
        assert result.exit_code == 0, result.output
        return output.read_text()

    WordSimulator.seen.clear()
    weighed = bench()
    assert "| kept the top-token list, not the explainer's answer | 1/2 |" in weighed
    assert "| simulation: AUROC vs distractors | 1.00 |" in weighed  # both kept texts name the feature's word
    assert "| truth is the nearest planted description | 2/2 |" in weighed
    assert 'the word "is"' in weighed and "weighed against each explainer's answer" in weighed
    defaults = ExplainerConfig()
    assert f"{defaults.top_tokens_named} tokens ranked `{defaults.top_tokens_rank}` (a run's defaults)" in weighed
    assert not BenchSettings(explainers=["scripted-bench:x"], methods=["embedding"]).weighs_top_tokens  # as a run
    alone = bench("--no-top-tokens")
    assert "kept the top-token list" not in alone and "as written (--no-top-tokens)" in alone
    # right on `of`; on `is` it names the distractor's word, a tie (1/2)
    assert "| simulation: AUROC vs distractors | 0.75 |" in alone
    assert "| truth is the nearest planted description | 1/2 |" in alone


def test_experiments_refute_a_wrong_first_explanation_and_the_report_counts_it() -> None:
    features = [f for f in load_planted_features() if f.name in ("is", "of")]
    settings = BenchSettings(
        explainers=["scripted-bench:x"], methods=["embedding"], max_windows=300, distractors=1, rounds=1,
        top_tokens=False,  # the rounds are measured on the explainer's own (wrong) answer
    )  # fmt: skip
    result = run_bench(features, settings)
    done = result.investigated["scripted-bench:x"]
    assert ("input", "refutes") in done["is"].verdicts
    assert ("input", "supports") in done["of"].verdicts
    assert {kind for kind, _ in done["is"].verdicts} == {"input", "minimal_pair"}  # no model direction
    assert done["is"].revised == 'the word "is"'
    assert result.revised_similarity["scripted-bench:x"]["is"][1]  # the revision is nearest to the truth
    assert result.scores["embedding"]["is"]["revised:scripted-bench:x"] is not None
    report = render_report(result)
    assert "| wrong first explanations refuted by an experiment | 1/1 |" in report
    assert "| right first explanations refuted (false alarms) | 0/1 |" in report
    assert "| wrong first explanations whose revision is right | 1/1 |" in report


class DigitJudge(ChatBackend):
    """A judge without probabilities that says a text fits when it holds a digit, whatever the description:
    one-window prompts get yes / no, list prompts get [1, 0, ...]."""

    backend = "digit-judge"

    def generate(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        texts = re.findall(r"^Text \d+(?: with marked tokens)?: (.*)$", prompt, re.MULTILINE)
        if texts:
            answer = ", ".join("1" if re.search(r"\d", t) else "0" for t in texts) + "]"
            return ChatResponse(text=answer, input_tokens=10 * len(texts), output_tokens=2 * len(texts))
        text = re.split(r"Text(?: with marked tokens)?: ", prompt, maxsplit=1)[1].split("\n")[0]
        return ChatResponse(text="yes" if re.search(r"\d", text) else "no", input_tokens=10, output_tokens=1)


register_backend("digit-judge", DigitJudge)


def test_the_report_gives_the_agreement_of_batched_with_one_window_per_prompt_judging() -> None:
    features = [f for f in load_planted_features() if f.name in ("digits", "of")]
    settings = BenchSettings(
        scorer="digit-judge:x", explainers=[], methods=["detection"], max_windows=300, distractors=1, rounds=0,
        heldout_active=4, heldout_quiet=4, judge_windows_per_prompt=3,
    )  # fmt: skip
    result = run_bench(features, settings)
    done = result.agreement["detection"]
    assert done.windows == 2 * 2 * 8 and done.compared == done.windows and done.share == 1.0
    assert done.calls_single == 2 * 2 * 8 and done.calls_batched == 2 * 2 * 3  # 8 windows in lists of 3
    assert done.batched_scores["digits"]["truth"] == 1.0
    report = render_report(result)
    assert "## Batched judging: 3 windows per prompt vs one" in report
    assert "| detection | 32 | 1.00 (32/32) | 0 / 0 | 32 / 12 |" in report


def test_a_planted_feature_density_is_the_share_of_tokens_at_10_percent_of_its_max() -> None:
    def graded(tokens: Sequence[str]) -> list[float]:  # 10.0 on "a", 0.5 on "b" (5 %: does not fire), 1.0 on "c"
        return [{"a": 10.0, "b": 0.5, "c": 1.0}.get(t, 0.0) for t in tokens]

    windows = [["a", "b", "x", "x"], ["c", "b", "b", "x"], ["x", "x", "x", "x"]]
    result = feature_set(PlantedFeature("graded", "a, b or c", graded), windows, BenchSettings())
    assert result.max_activation == 10.0
    assert result.density == 2 / 12  # "a" and "c" fire; "b" is above 0 but below 10 % of the max


def test_a_planted_feature_does_not_read_the_unread_leading_tokens_as_a_run_does() -> None:
    def graded(tokens: Sequence[str]) -> list[float]:
        return [{"a": 10.0, "b": 0.5, "c": 1.0}.get(t, 0.0) for t in tokens]

    windows = [["x", "a", "b", "x"], ["a", "c", "b", "x"], ["x", "x", "x", "x"]]
    result = feature_set(PlantedFeature("graded", "a, b or c", graded), windows, BenchSettings(), unread=1)
    assert result.density == 2 / 9  # of the 9 tokens read, "a" (window 0) and "c" fire; window 1's "a" is not read
    assert [e["activations"] for e in result.explain] == [[0.0, 10.0, 0.5, 0.0]]  # the top window
    heldout = {tuple(w.tokens): (w.levels, w.unread) for w in result.heldout}
    assert heldout[("a", "c", "b", "x")] == ([0, 1, 0, 0], 1)  # its "a" is not read: level 0
