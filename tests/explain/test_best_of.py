"""Explainer options: the few-shot simulation prompt, best-of-k explanations chosen by simulation on the
explanation-split windows, and the contrastive explainer's section of non-activating windows.

The explainer and simulator are scripted backends registered through the real registry that know the
answer: feature `synthetic/mlp.0/<i>` fires on the word `word<i>`; the simulator predicts 10 on the
tokens its description names, so the right description simulates best.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from autointerp.config import LLMConfig, RunConfig, load_config
from autointerp.explain.best_of import BestOf, explanation_windows, weighs_top_tokens
from autointerp.explain.contrastive import split_for_contrast
from autointerp.explain.explainer import build_explainer_prompt, explain_template
from autointerp.explain.stage import run_explain
from autointerp.explain.top_tokens import SOURCE as TOP_TOKENS
from autointerp.llm import CallRecorder, ChatBackend, ChatRequest, ChatResponse, LLMSession, register_backend
from autointerp.llm.base import BackendCapabilities, ValueReadout
from autointerp.prompts import load_prompt
from autointerp.score.scorers import score_candidates
from autointerp.score.simulation import SIMULATION_TEMPLATES, SimulationOptions, parse_simulation_lines
from autointerp.score.windows import HeldOutWindow
from autointerp.store.database import Store
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES
from tests.conftest import session_of
from tests.llm.synthetic import write_synthetic_run


class WordSimulator(ChatBackend):
    """Reads probabilities like a local model: predicts 10 on the tokens equal to the word its description
    names ("the word X"), 0 elsewhere; remembers every window it was shown."""

    backend = "word-simulator"
    max_concurrency: ClassVar[int | None] = 1
    seen: ClassVar[list[list[str]]] = []
    prompts: ClassVar[list[str]] = []

    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(prompt_logprobs=True)

    def generate(self, request: ChatRequest) -> ChatResponse:
        raise AssertionError("all-at-once simulation reads values, it does not generate")

    def read_values(self, items: Sequence[tuple[ChatRequest, list[str]]], batch_size: int = 8) -> list[ValueReadout]:
        readouts = []
        for request, tokens in items:
            WordSimulator.seen.append(list(tokens))
            WordSimulator.prompts.append(request.messages[1].content)
            found = re.findall(r"fires on the word (\S+?)\.", request.messages[1].content)
            named = found[-1].strip('"') if found else None  # "nothing in particular" (the prior): 0 everywhere
            readouts.append(ValueReadout(values=[10.0 if t.strip() == named else 0.0 for t in tokens]))
        return readouts


class SamplingExplainer(ChatBackend):
    """Greedy: a wrong word (`fence0`); sampled: `quick` (wrong), then the feature's word (right)."""

    backend = "sampling-explainer"
    sampled: ClassVar[dict[str, int]] = {}

    def generate(self, request: ChatRequest) -> ChatResponse:
        word = re.search(r"<<\s*(word\d+)>>", request.messages[1].content)
        name = word.group(1) if word else "nothing"
        if request.temperature == 0:
            return ChatResponse(text=" the word fence0.", input_tokens=10, output_tokens=4)
        count = SamplingExplainer.sampled.get(name, 0)
        SamplingExplainer.sampled[name] = count + 1
        return ChatResponse(text=" the word quick." if count % 2 == 0 else f" the word {name}.", output_tokens=4)


register_backend("word-simulator", WordSimulator)
register_backend("sampling-explainer", SamplingExplainer)


def config_for(tmp_path: Path, *overrides: str) -> RunConfig:
    return load_config(
        None,
        [
            f"store.path='{tmp_path / 'e.duckdb'}'",
            "explainer.model='sampling-explainer:x'",
            "score.simulator.model='word-simulator:x'",
            "llm.cache=false",
            *overrides,
        ],
    )


# few-shot simulation prompt --------------------------------------------------------------------------


def test_the_few_shot_prompt_teaches_the_token_tab_value_lines_the_simulation_appends() -> None:
    template = load_prompt(SIMULATION_TEMPLATES["few-shot"])
    messages, prefill = template.render(explanation="the word cat")
    user = messages[1].content
    assert prefill == ""  # the token lines follow the assistant turn directly, as in the zero-shot prompt
    assert user.rstrip().endswith("Most tokens are 0.") and "The neuron fires on the word cat." in user
    examples = re.findall(r"Example \d\. The neuron fires on (.+?)\.\n((?:.*\t\d+\n?)+)", user)
    assert len(examples) == 3
    planted = {f.description.lower() for f in BUILTIN_PLANTED_FEATURES}
    for description, block in examples:
        assert description.lower() not in planted
        lines = block.strip("\n").split("\n")
        tokens = [line.split("\t")[0] for line in lines]
        values, matched = parse_simulation_lines(block, tokens)
        assert matched == len(tokens) and max(values) >= 8 and values.count(0.0) >= len(values) // 2
        assert all(re.fullmatch(r"[^\t]+\t\d+", line) for line in lines)
    zero = load_prompt(SIMULATION_TEMPLATES["zero-shot"])
    assert zero.hash != template.hash and "Example" not in zero.render(explanation="x")[0][1].content


def test_the_simulation_scorer_uses_the_configured_prompt_and_records_its_hash() -> None:
    windows = [HeldOutWindow(["A", " cat", "."], [0, 10, 0], "top"), HeldOutWindow(["A", " dog"], [0, 0], "random")]
    recorder = CallRecorder("t", LLMSession.from_settings(LLMConfig(cache=False)))
    for prompt in ("zero-shot", "few-shot"):
        WordSimulator.prompts.clear()
        outcome = score_candidates(
            "simulation", ["the word cat"], windows, backend=WordSimulator("x"), recorder=recorder,
            feature_id="f", options=SimulationOptions(prompt=prompt),  # type: ignore[arg-type]
        )[0]  # fmt: skip
        assert outcome.values["correlation_all"] == 1.0
        assert recorder.rows[-1].prompt_hash == load_prompt(SIMULATION_TEMPLATES[prompt]).hash
        assert ("Example 1." in WordSimulator.prompts[0]) == (prompt == "few-shot")
    config = load_config(None, ["score.simulation_prompt=few-shot"])
    assert config.score.simulation_prompt == "few-shot"
    assert load_config(None, []).config_hash() == RunConfig().config_hash()  # the default keeps run ids


# best-of-k ----------------------------------------------------------------------------------------------


def test_best_of_k_keeps_the_candidate_the_simulator_scores_best_and_records_all(tmp_path: Path) -> None:
    config = config_for(tmp_path, "explainer.best_of=3", "explainer.top_tokens_candidate=false")
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 2, score_windows=4)
    SamplingExplainer.sampled.clear()
    result = run_explain(config, store, "r", session_of(config, store, "r"))
    assert (result.done, result.complete) == (2, True)
    rows = {e["feature_id"]: e for e in store.explanations("r")}
    assert [rows[f"synthetic/mlp.0/{i}"]["text"] for i in range(2)] == ["the word word0", "the word word1"]
    chosen = json.loads(rows["synthetic/mlp.0/1"]["details"])["best_of"]
    assert chosen["chosen"] == 2 and chosen["k"] == 3 and chosen["split"] == "explain"
    assert [c["text"] for c in chosen["candidates"]] == ["the word fence0", "the word quick", "the word word1"]
    scores = [c["score"] for c in chosen["candidates"]]
    assert scores[2] > 0.9 and scores[0] < scores[2] and scores[1] < scores[2]
    calls = store.query(
        "SELECT role, count(*) AS n FROM llm_calls WHERE feature_id = 'synthetic/mlp.0/1' GROUP BY role"
    )
    # every candidate's calls recorded, and the prior's (one, shared by the candidates)
    assert {c["role"]: c["n"] for c in calls} == {"explain": 3, "simulate": 4}
    explain_calls = {c["id"] for c in store.query("SELECT id FROM llm_calls WHERE role = 'explain'")}
    assert {c["llm_call_id"] for c in chosen["candidates"]} <= explain_calls


def test_best_of_k_never_simulates_a_held_out_window(tmp_path: Path) -> None:
    config = config_for(tmp_path, "explainer.best_of=2")
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 3, score_windows=4)
    held_out = [tuple(e.tokens) for es in store.exemplars_by_feature("r", "score").values() for e in es]
    explain = {tuple(e.tokens) for es in store.exemplars_by_feature("r", "explain").values() for e in es}
    assert held_out and not set(held_out) & explain
    WordSimulator.seen.clear()
    run_explain(config, store, "r", session_of(config, store, "r"))
    seen = {tuple(tokens) for tokens in WordSimulator.seen}
    assert seen == explain  # every window the explainer saw, and nothing else


def test_best_of_k_scores_no_token_the_source_did_not_read(tmp_path: Path) -> None:
    assert BestOf.from_config(config_for(tmp_path, "explainer.best_of=2")).unread == AUTO_SKIPPED_TOKENS
    assert BestOf.from_config(config_for(tmp_path, "features.skip_first_tokens=0")).unread == 0
    seen = [window(["The", " cat", " sat"], [0.0, 4.0, 0.0]), window(["A", " b"], [1.0, 0.0], "quantile-0", 1)]
    windows = explanation_windows(seen, 4.0, unread=2)
    assert [(w.unread, w.levels) for w in windows] == [(2, [0, 10, 0]), (2, [2, 0])]  # a 2-token window: none read


def test_the_list_of_strongest_tokens_is_kept_when_it_simulates_better(tmp_path: Path) -> None:
    """The greedy explainer names a word that never fires (`fence0`); the list of the strongest tokens names
    the feature's word, the simulator (which knows the answer) scores it 1.0 on the explanation windows, and it
    is kept, with no call behind it; the explainer's candidate and its call stay recorded."""
    config = config_for(tmp_path)
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 2, score_windows=4)
    WordSimulator.seen.clear()
    result = run_explain(config, store, "r", session_of(config, store, "r"))
    assert (result.done, result.complete) == (2, True)
    rows = {e["feature_id"]: e for e in store.explanations("r")}
    kept = rows["synthetic/mlp.0/1"]
    assert kept["text"] == 'the word "word1"' and kept["llm_call_id"] is None
    best_of = json.loads(kept["details"])["best_of"]
    assert [(c["text"], c["source"]) for c in best_of["candidates"]] == [
        ("the word fence0", "explainer"),
        ('the word "word1"', TOP_TOKENS),
    ]
    assert best_of["chosen"] == 1 and best_of["k"] == 1
    assert best_of["candidates"][1]["score"] > 0.9 > (best_of["candidates"][0]["score"] or 0.0)
    explain_calls = {c["id"] for c in store.query("SELECT id FROM llm_calls WHERE role = 'explain'")}
    assert best_of["candidates"][0]["llm_call_id"] in explain_calls
    held_out = {tuple(e.tokens) for es in store.exemplars_by_feature("r", "score").values() for e in es}
    assert not {tuple(tokens) for tokens in WordSimulator.seen} & held_out  # chosen on what the explainer saw


def test_the_list_names_as_many_tokens_as_the_run_asks(tmp_path: Path) -> None:
    assert BestOf.from_config(config_for(tmp_path)).top_tokens_named == 5
    assert BestOf.from_config(config_for(tmp_path, "explainer.top_tokens_named=3")).top_tokens_named == 3
    assert BestOf.from_config(config_for(tmp_path)).top_tokens_rank == "strongest"
    recurring = BestOf.from_config(config_for(tmp_path, "explainer.top_tokens_rank=recurring"))
    assert recurring.top_tokens_rank == "recurring"


def test_the_list_is_weighed_only_in_runs_that_simulate_from_input_windows(tmp_path: Path) -> None:
    assert weighs_top_tokens(config_for(tmp_path))
    assert not weighs_top_tokens(config_for(tmp_path, "score.methods=['embedding']"))
    assert not weighs_top_tokens(config_for(tmp_path, "explainer.evidence='output'"))
    assert weighs_top_tokens(config_for(tmp_path, "explainer.evidence='both'"))


def test_best_of_one_is_the_single_explanation_with_no_simulation(tmp_path: Path) -> None:
    config = config_for(tmp_path, "explainer.top_tokens_candidate=false")
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 1, score_windows=2)
    run_explain(config, store, "r", session_of(config, store, "r"))
    assert [(e["text"], e["details"]) for e in store.explanations("r")] == [("the word fence0", None)]
    assert [c["role"] for c in store.query("SELECT role FROM llm_calls")] == ["explain"]


# contrastive ----------------------------------------------------------------------------------------------


def window(tokens: list[str], acts: list[float], kind: str = "top", rank: int = 0, split: str = "explain") -> dict:
    return {"tokens": tokens, "activations": acts, "kind": kind, "rank": rank, "split": split}


def test_contrast_windows_are_explain_split_non_activating_and_ranked_by_similarity() -> None:
    exemplars = [
        window(["The", " cat", " sat"], [0.0, 4.0, 0.0]),
        window(["A", " cat", " ran"], [0.0, 3.0, 0.0], rank=1),
        window(["A", " cat", " slept"], [0.0, 0.0, 0.0], "quantile-0", 2),  # the peak word, not firing
        window(["Some", " dog", " sat"], [0.0, 0.0, 0.0], "quantile-0", 3),  # shares "sat" only
        window(["Nothing", " here"], [0.0, 0.0], "quantile-0", 4),
        window(["The", " cat", " sat"], [0.0, 0.0, 0.0], "random", 0, split="score"),  # held out: never used
    ]
    activating, contrast = split_for_contrast(exemplars, 4.0, 5)
    assert [w["rank"] for w in activating] == [0, 1]
    assert [w["tokens"][-1] for w in contrast.windows] == [" slept", " sat", " here"]
    assert all(w["split"] == "explain" for w in contrast.windows)
    messages, prefill = build_explainer_prompt(activating, 4.0, explain_template(contrast), contrast)
    user = messages[1].content
    assert prefill == "The neuron fires on"
    assert "These similar texts do NOT activate the neuron anywhere:" in user
    assert "Counter-example 1: A cat slept" in user and "Counter-example 3: Nothing here" in user
    assert "Only 3 similar texts that do not activate the neuron were found." in user
    assert user.index("Excerpt 2: A<< cat>> ran") < user.index("Counter-example 1")
    assert explain_template(contrast).hash != load_prompt("explain").hash


def test_the_contrastive_prompt_says_when_there_is_nothing_to_contrast_and_never_fails() -> None:
    activating, contrast = split_for_contrast([window(["The", " cat"], [0.0, 4.0])], 4.0, 3)
    user = build_explainer_prompt(activating, 4.0, explain_template(contrast), contrast)[0][1].content
    assert "No similar texts that do not activate the neuron were found, so none are shown." in user
    assert "Counter-example" not in user and "Excerpt 1: The<< cat>>" in user
    full = [window(["The", " cat"], [0.0, 4.0])] + [window(["A", f" w{i}"], [0.0, 0.0], "q", i) for i in range(3)]
    activating, contrast = split_for_contrast(full, 4.0, 3)
    user = build_explainer_prompt(activating, 4.0, explain_template(contrast), contrast)[0][1].content
    assert "Counter-example 3" in user and "Only" not in user and "No similar" not in user


def test_a_contrastive_run_shows_the_explainer_its_counter_examples(tmp_path: Path) -> None:
    config = config_for(tmp_path, "explainer.contrastive=true")
    store = Store(config.store.path)
    write_synthetic_run(store, "r", 1, score_windows=4)
    run_explain(config, store, "r", session_of(config, store, "r"))
    (call,) = store.query("SELECT request, prompt_hash FROM llm_calls WHERE role = 'explain'")
    assert call["prompt_hash"] == load_prompt("explain_contrastive").hash
    assert "No similar texts that do not activate the neuron were found" in str(call["request"])
    assert " here" not in str(call["request"])  # no held-out window
