"""The planted benchmark's experiment rounds: measured on planted features, judged by rule, reported.

The explainer is a scripted chat backend registered through the real registry: it always says the
feature fires on the word "of", proposes "A cup of tea." as a sentence that should fire, and revises
to the word "is". On the planted feature `is` that first explanation is wrong and the input
experiment must refute it; on `of` it is right and the experiment must support it.
"""

from autointerp.bench import BenchSettings, render_report, run_bench
from autointerp.llm import ChatBackend, ChatRequest, ChatResponse, register_backend
from autointerp.planted import load_planted_features


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


def test_experiments_refute_a_wrong_first_explanation_and_the_report_counts_it() -> None:
    features = [f for f in load_planted_features() if f.name in ("is", "of")]
    settings = BenchSettings(
        explainers=["scripted-bench:x"], methods=["embedding"], max_windows=300, distractors=1, rounds=1
    )
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
