"""The intruder scorer in a run, through the CLI: every feature gets a number, explained or not.

Planted features on a corpus of three kinds of line (with "the", with numbers, with "of"): two coherent
features, a mixed one (the union of "of" and digits, `mixed_of_digits`) and one that fires once (skipped).
The judge is a loopback server that knows the planted truth (`tests.bench.test_hard.knowing_judge`): it names
the one text lacking the most specific known feature the others share. So the coherent features must score
about 1.0, the mixed one near chance, the skipped one NULL with its reason, and a rerun adds no rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.testclient import TestClient
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.review import ReviewSettings, create_app
from autointerp.store.database import Store
from tests.bench.test_hard import knowing_judge
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion

PLANTED_FILE = """
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES, PlantedFeature
from autointerp.subject.planted_families import MIXED_PLANTED_FEATURES

BUILTIN = {f.name: f for f in BUILTIN_PLANTED_FEATURES}
PLANTED_FEATURES = [
    BUILTIN["the"],
    BUILTIN["digits"],
    next(f for f in MIXED_PLANTED_FEATURES if f.name == "mixed_of_digits"),
    PlantedFeature("rare", "the word Zanzibar", lambda tokens: [1.0 if "anz" in t else 0.0 for t in tokens]),
]
"""

LINES = [
    "Then the cat and the dog saw the bird near the tree by the house on the hill",
    "She spoke of rain, of wind, of snow, of cold nights, of long roads and of home again",
    "We counted 1987 boxes and 2041 crates and 35 sacks and 12 barrels in 1999 and 2003",
]


def test_the_intruder_scorer_scores_every_feature_of_a_run(tmp_path: Path, prefect_harness: None) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED_FILE)
    corpus = tmp_path / "corpus.txt"
    lines = [LINES[i % 3] for i in range(90)]
    lines[40] = "Once a ship sailed from Zanzibar to a far coast and back with some tea"
    corpus.write_text("\n".join(lines) + "\n")
    db = tmp_path / "run.duckdb"
    with LoopbackServer([], respond=knowing_judge) as server:
        spec = f"openai-compatible:{server.url}/v1#judge"
        settings = [
            "features.kind=planted",
            f"features.path='{planted}'",
            f"corpus.source='{corpus}'",
            f"store.path='{db}'",
            "corpus.max_windows=150",
            "corpus.window_tokens=8",
            "collect.top_k=6",
            "collect.random_windows=6",
            f"explainer.model='{spec}'",
            f"score.judge.model='{spec}'",
            "score.methods=['intruder']",
            "score.intruder_prompts=8",
            "experiments.lowest_n=0",
            "experiments.on_disagreement=false",
        ]
        args = [a for s in settings for a in ("-s", s)]
        ran = CliRunner().invoke(app, ["run", *args])
        assert ran.exit_code == 0, ran.output
        again = CliRunner().invoke(app, ["run", *args])
        assert again.exit_code == 0, again.output
    store = Store(db)
    run_id = store.runs()[0]["id"]
    scores = store.feature_scores(run_id, "intruder_accuracy")
    assert set(scores) == {f.id for f in store.features(run_id)}  # every feature, explained or not
    assert len(store.query("SELECT id FROM feature_scores")) == 4  # the rerun added none
    the, digits = scores["planted/the"], scores["planted/digits"]
    mixed, rare = scores["planted/mixed_of_digits"], scores["planted/rare"]
    assert the[0] is not None and the[0] >= 0.9 and digits[0] is not None and digits[0] >= 0.9
    assert the[1]["answered"] == 8 and the[1]["negatives"] == "random" and the[1]["chance"] == 0.25
    assert the[1]["interval"][0] > 0.25  # above chance, interval and all
    assert mixed[0] is not None and mixed[0] <= 0.6
    assert rare[0] is None and "fires in 1 window" in rare[1]["undefined"]
    shown = CliRunner().invoke(app, ["show", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if "planted/the" in line)
    assert re.search(r"1\.00 \[0\.\d\d, 1\.00\] \(0\.25\)", row), shown.output
    listed = TestClient(create_app(ReviewSettings(db=db)), base_url="http://127.0.0.1")
    order = re.findall(r'feature-link" href="[^"]*">([^<]+)<', listed.get("/", params={"sort": "intruder"}).text)
    assert order[2:] == ["planted/mixed_of_digits", "planted/rare"]  # the review list sorts by it, best first


HARD_FILE = """
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES
from autointerp.subject.planted_families import FAMILY_PLANTED_FEATURES

PLANTED_FEATURES = [next(f for f in BUILTIN_PLANTED_FEATURES if f.name == "the"), FAMILY_PLANTED_FEATURES[0]]
"""

VAGUE = 'articles such as "the" and "a"'


def vague_for_the(request: Received) -> Reply:
    """Explains `the` vaguely (its family's description) and `a` truly; judges like `knowing_judge`."""
    prompt = "\n".join(str(m["content"]) for m in request.body["messages"])
    marked = {t.strip().lower() for t in re.findall(r"<<(.+?)>>", prompt)}
    if marked and "Text: " not in prompt:
        return Reply(openai_completion(VAGUE if "the" in marked else 'the word "a"'))
    return knowing_judge(request)


def test_hard_negatives_in_a_run_lower_a_vague_explanation_and_not_a_true_one(
    tmp_path: Path, prefect_harness: None
) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(HARD_FILE)
    corpus = tmp_path / "corpus.txt"
    lines = [
        "Then the cat and the dog saw the bird near the tree by the house on the hill today",
        "Once a cat and a dog saw a bird near a tree by a house on a hill and a lake today",
        "The cat saw a bird and the dog saw a tree near a house by the hill and a lake",
        "We counted boxes and crates and sacks and barrels in rooms and halls all day long",
    ]
    lines += [lines[3], lines[3]]  # random windows mostly without articles; hard ones from the `a` lines
    corpus.write_text("\n".join(lines[i % 6] for i in range(180)) + "\n")
    db = tmp_path / "hard.duckdb"
    with LoopbackServer([], respond=vague_for_the) as server:
        spec = f"openai-compatible:{server.url}/v1#judge"
        settings = [
            "features.kind=planted",
            f"features.path='{planted}'",
            f"corpus.source='{corpus}'",
            f"store.path='{db}'",
            "corpus.max_windows=200",
            "corpus.window_tokens=8",
            "collect.top_k=6",
            "collect.random_windows=6",
            f"explainer.model='{spec}'",
            f"score.judge.model='{spec}'",
            "score.methods=['detection']",
            "explainer.top_tokens_candidate=false",  # the scripted explainer's vague and true texts, as written
            "score.negatives=both",
            "score.distractor_from=neighbour",
            "experiments.lowest_n=0",
            "experiments.on_disagreement=false",
        ]
        ran = CliRunner().invoke(app, ["run", *[a for s in settings for a in ("-s", s)]])
        assert ran.exit_code == 0, ran.output
    store = Store(db)
    run_id = store.runs()[0]["id"]
    texts = {e["id"]: e["text"] for e in store.explanations(run_id)}
    values = {
        (texts[s["explanation_id"]], s["metric"]): s
        for metric in ("detection_balanced_accuracy", "detection_balanced_accuracy_hard")
        for s in store.scores(run_id, metric)
    }
    easy, hard = values[(VAGUE, "detection_balanced_accuracy")], values[(VAGUE, "detection_balanced_accuracy_hard")]
    assert easy["value"] == 1.0 and hard["value"] == 0.5  # the vague one passes random negatives only
    true_easy = values[('the word "a"', "detection_balanced_accuracy")]["value"]
    true_hard = values[('the word "a"', "detection_balanced_accuracy_hard")]["value"]
    assert true_easy == 1.0 and true_hard == 1.0  # the true one keeps its score on hard negatives
    details = json.loads(hard["details"]) if isinstance(hard["details"], str) else hard["details"]
    assert details["negatives"] == "neighbour" and details["distractor_from"] == "neighbour"
    assert {w["kind"] for w in details["windows"] if not w["activating"]} == {"neighbour"}
    distractor = store.scores(run_id, "detection_balanced_accuracy_distractor")
    assert any(json.loads(s["details"])["distractor_text"] == 'the word "a"' for s in distractor)
    shown = CliRunner().invoke(app, ["show", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "hard negatives" in shown.output and "0.50 (distractor" in shown.output  # easy and hard side by side
    page = TestClient(create_app(ReviewSettings(db=db)), base_url="http://127.0.0.1")
    html = page.get("/feature", params={"id": "planted/the"}).text
    harder = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[html.index('id="harder"') :]))
    assert "detection_balanced_accuracy 1.00 (distractor" in harder and " 0.50 (distractor" in harder
