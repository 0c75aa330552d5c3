"""The feature list's index (issue 26): every sort, filter, search and neighbour read from it matches a plain
reading of the store, it follows review writes in place and rebuilds after pipeline writes or edits, and a
sort on another metric is one entry in FEATURE_SORTS."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from autointerp.metric_names import MAIN_METRIC
from autointerp.review import ReviewSettings, list_order
from autointerp.review.feature_list import FEATURE_SORTS, FeatureQuery, ListSort
from autointerp.review.list_index import ALL_RUNS, ListIndex
from autointerp.review.queries import ReviewQueries, refresh_index
from autointerp.score.confidence import CHANCE_P
from autointerp.store.database import Store, now
from benchmarks.scale_fixture import RUN_ID, build
from tests.review.test_review_app import Serve

FEATURES = 150
UNEXPLAINED = "smollm2-135m/res.0/zz-unexplained"


@pytest.fixture(scope="module")
def scale_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scale fixture of 150 features plus one feature without an explanation (a NULL score)."""
    path = tmp_path_factory.mktemp("index") / "scale.duckdb"
    build(path, FEATURES, corpus_windows=256, quiet=True)
    with Store(path).transaction() as con:
        con.execute(
            "INSERT INTO features (run_id, id, model, hook, kind, idx, max_activation, density, dead) "
            "VALUES (?, ?, 'smollm2-135m', 'res.0', 'sae', 999999, 1.0, NULL, false)",
            [RUN_ID, UNEXPLAINED],
        )
    return path


@pytest.fixture
def db(scale_db: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture (tests write to it)."""
    copy = tmp_path / "scale.duckdb"
    copy.write_bytes(scale_db.read_bytes())
    return copy


def _reference(store: Store) -> dict[str, dict[str, Any]]:
    """Returns feature id -> what the list should show, read plainly from the store's tables."""
    rows = store.query("SELECT id, hook, idx, density, run_id FROM features")
    ref = {r["id"]: {**r, "score": None, "status": "unreviewed", "p": None, "text": "", "run": None} for r in rows}
    current: dict[str, dict[str, Any]] = {}
    for e in store.query("SELECT * FROM explanations ORDER BY created_at, iteration"):
        current[e["feature_id"]] = e
    by_id = {e["id"]: f for f, e in current.items()}
    for s in store.query("SELECT explanation_id, value, details FROM scores WHERE metric = ?", [MAIN_METRIC]):
        if s["explanation_id"] in by_id:
            feature = ref[by_id[s["explanation_id"]]]
            feature["score"] = s["value"]
            feature["p"] = json.loads(s["details"])["confidence"]["p_vs_distractor"]
    decisions = "('accept', 'reject', 'edit', 'clear')"
    for r in store.query(f"SELECT * FROM reviews WHERE verdict IN {decisions} ORDER BY created_at"):
        if r["explanation_id"] in by_id:
            status = {"accept": "accepted", "reject": "rejected", "edit": "edited", "clear": "unreviewed"}
            ref[by_id[r["explanation_id"]]]["status"] = status[r["verdict"]]
            ref[by_id[r["explanation_id"]]]["edit"] = r["edited_text"] if r["verdict"] == "edit" else None
    for feature_id, e in current.items():
        ref[feature_id]["text"] = ref[feature_id].get("edit") or e["text"]
        ref[feature_id]["run"] = e["run_id"]
    return ref


def _whole_list(queries: ReviewQueries, **filters: Any) -> list[dict[str, Any]]:
    """Returns every row of the list, page by page (64 a page, so pages break inside runs of equal values)."""
    out: list[dict[str, Any]] = []
    while True:
        page = queries.feature_list(FeatureQuery(limit=64, offset=len(out), **filters))
        out += page.rows
        if not page.rows:
            assert len(out) == page.total
            return out


def _expected(ref: dict[str, dict[str, Any]], key: str, descending: bool, keep: Any = None) -> list[str]:
    rows = [r for r in ref.values() if keep is None or keep(r)]
    present = sorted((r for r in rows if r[key] is not None), key=lambda r: (r["hook"], r["idx"], r["id"]))
    present.sort(key=lambda r: r[key], reverse=descending)  # stable: ties keep (hook, idx, id) order
    missing = sorted((r for r in rows if r[key] is None), key=lambda r: (r["hook"], r["idx"], r["id"]))
    return [r["id"] for r in present + missing]


def words(text: str) -> list[str]:
    """Returns the words of a text as the list's search splits them."""
    return re.findall(r"[^\W_]+", text.lower())


def test_sorts_filters_and_search_match_the_store(db: Path) -> None:
    store = Store(db)
    queries = ReviewQueries(store)
    ref = _reference(store)
    columns = {"score": "score", "feature": "id", "index": "idx", "layer": "hook", "density": "density"}
    columns["status"] = "status"
    for sort, key in columns.items():
        for descending in (False, True):
            listed = [r["feature_id"] for r in _whole_list(queries, sort=sort, descending=descending)]
            assert listed == _expected(ref, key, descending), (sort, descending)
    for sort in ("disagreement", "run"):
        rows = _whole_list(queries, sort=sort, descending=True)
        values = [r[FEATURE_SORTS[sort].column] for r in rows if r[FEATURE_SORTS[sort].column] is not None]
        assert values == sorted(values, reverse=True) and len(rows) == len(ref)

    only = {r["feature_id"] for r in _whole_list(queries, chance="only")}
    hidden = {r["feature_id"] for r in _whole_list(queries, chance="hide")}
    assert only == {f for f, r in ref.items() if r["p"] is not None and r["p"] > CHANCE_P}
    assert only | hidden == set(ref) and not only & hidden and only and hidden
    assert [
        r["feature_id"] for r in _whole_list(queries, status="accepted", sort="density", descending=False)
    ] == _expected(ref, "density", False, keep=lambda r: r["status"] == "accepted")
    high = _whole_list(queries, min_score=0.4, sort="score")
    assert [r["feature_id"] for r in high] == _expected(ref, "score", True, keep=lambda r: (r["score"] or -9) >= 0.4)

    some = words(next(r["text"] for r in ref.values() if r["text"]))
    for search in ("comma", f"{some[1]} {some[4].upper()}", "punct", "the"):
        wanted = search.lower().split()
        found = {r["feature_id"] for r in _whole_list(queries, search=search)}
        expected = {f for f, r in ref.items() if all(any(w.startswith(q) for w in words(r["text"])) for q in wanted)}
        assert found == expected and found, search
    assert not _whole_list(queries, search="zzzz nothing")
    assert {r["feature_id"] for r in _whole_list(queries, search=", ")} == {
        f for f, r in ref.items() if ", " in r["text"]
    }


def test_neighbours_follow_the_list_order(db: Path) -> None:
    queries = ReviewQueries(Store(db))
    for filters in ({"sort": "score"}, {"sort": "density", "descending": False, "chance": "hide"}):
        order = [r["feature_id"] for r in _whole_list(queries, **filters)]
        statuses = {r["feature_id"]: r["status"] for r in _whole_list(queries, **filters)}
        for i in (0, 1, len(order) // 2, len(order) - 1):
            around = queries.feature_neighbours(FeatureQuery(**filters), order[i])
            assert around["prev"] == (order[i - 1] if i else None)
            assert around["next"] == (order[i + 1] if i + 1 < len(order) else None)
            later = [f for f in order[i + 1 :] if statuses[f] == "unreviewed"]
            earlier = [f for f in order if statuses[f] == "unreviewed" and f != order[i]]
            assert around["next_unreviewed"] == (later or earlier or [None])[0]
    unlisted = queries.feature_neighbours(FeatureQuery(status="accepted"), UNEXPLAINED)
    assert unlisted["prev"] is None and unlisted["next"] == _whole_list(queries, status="accepted")[0]["feature_id"]


def test_the_index_follows_reviews_in_place_and_rebuilds_after_other_writes(db: Path) -> None:
    store = Store(db)
    queries = ReviewQueries(store)
    first = queries.feature_list(FeatureQuery(sort="feature", descending=False, status="unreviewed")).rows[0]
    with store.connect(read_only=True) as con:
        stamp = queries.list_index._stamps(con)[(ALL_RUNS, MAIN_METRIC)]
    edit = {"id": str(uuid.uuid4()), "explanation_id": first["explanation_id"], "verdict": "edit"}
    queries.add_review({**edit, "edited_text": "xylophone chords", "reviewer": "t", "note": "", "created_at": now()})
    with store.connect(read_only=True) as con:  # updated in place: the stamp moved with the write, no rebuild
        assert queries.list_index.is_current(con, ALL_RUNS, MAIN_METRIC)
        assert queries.list_index._stamps(con)[(ALL_RUNS, MAIN_METRIC)]["fingerprint"] != stamp["fingerprint"]
    found = queries.feature_list(FeatureQuery(search="xylo"))
    assert [r["feature_id"] for r in found.rows] == [first["feature_id"]] and found.rows[0]["status"] == "edited"
    assert found.rows[0]["edited_text"] == "xylophone chords"

    explanation = {
        "id": str(uuid.uuid4()),
        "run_id": RUN_ID,
        "feature_id": first["feature_id"],
        "iteration": 2,
        "parent_id": None,
        "explainer": "x",
        "prompt_hash": "p",
        "text": "marimba glissando",
        "llm_call_id": None,
        "created_at": now(),
    }
    store.write_results({"explanations": [explanation]})  # a pipeline write: the next page rebuilds
    row = queries.feature_list(FeatureQuery(search="marimba")).rows[0]
    assert row["feature_id"] == first["feature_id"] and row["status"] == "unreviewed"
    assert row["earlier_status"] == "edited" and row["earlier_explanation_id"] == first["explanation_id"]

    with store.transaction() as con:  # edited in place: same counts, caught when the app opens
        con.execute("UPDATE explanations SET text = 'vibraphone' WHERE id = ?", [explanation["id"]])
    queries.check_index()
    assert [r["feature_id"] for r in queries.feature_list(FeatureQuery(search="vibraphone")).rows] == [
        first["feature_id"]
    ]


def test_a_sort_on_another_metric_is_one_entry(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        FEATURE_SORTS, "embedding", ListSort("embedding_auroc", descending_first=True, metric="embedding_auroc")
    )
    store = Store(db)
    rows = _whole_list(ReviewQueries(store), sort="embedding")
    auroc = {
        r["explanation_id"]: r["value"] for r in store.query("SELECT * FROM scores WHERE metric = 'embedding_auroc'")
    }
    values = [auroc.get(r["explanation_id"]) for r in rows]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=True) and len(present) == FEATURES
    assert [r["embedding_auroc"] for r in rows] == values


def test_list_pages_over_http_use_the_index(db: Path, serve: Serve) -> None:
    base = serve(ReviewSettings(db=db))
    with httpx.Client(base_url=base, timeout=120) as client:
        page = client.get("/", params={"q": "THE", "sort": "density", "per": 5, "page": 2}).text
        listed = re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', page)
        queries = ReviewQueries(Store(db))
        expected = queries.feature_list(FeatureQuery(search="THE", sort="density", descending=False, limit=5, offset=5))
        assert listed == [r["feature_id"] for r in expected.rows] and len(listed) == 5
        assert client.get("/", params={"sort": "status", "chance": "only"}).status_code == 200


def test_keyset_pages_match_offset_pages(db: Path) -> None:
    queries = ReviewQueries(Store(db))
    for filters in ({"sort": "score"}, {"sort": "status", "descending": False}, {"sort": "density", "chance": "hide"}):
        whole = [r["feature_id"] for r in _whole_list(queries, **filters)]
        walked: list[dict[str, Any]] = []
        after = None
        while True:  # forward with the next link's cursor (the NULL scores of the last page included)
            rows = queries.feature_list(FeatureQuery(limit=64, after=after, **filters)).rows
            if not rows:
                break
            walked += rows
            after = rows[-1]["pos"]
        assert [r["feature_id"] for r in walked] == whole, filters
        k = min(70, len(walked) - 1)
        back = queries.feature_list(FeatureQuery(limit=64, before=walked[k]["pos"], **filters)).rows
        assert [r["feature_id"] for r in back] == whole[max(0, k - 64) : k]  # the previous page ends just before it


def test_any_page_number_is_the_same_slice_of_the_list(db: Path) -> None:
    """A page addressed by its number (stored ranks for an unfiltered list, the sorted filter otherwise) is the
    matching slice of the whole list, in every sort and direction."""
    queries = ReviewQueries(Store(db))
    cases: list[tuple[str, bool, dict[str, Any]]] = [(s, d, {}) for s in FEATURE_SORTS for d in (False, True)]
    cases += [("density", False, {"chance": "only"}), ("score", True, {"search": "the"})]
    for sort, descending, filters in cases:
        query = FeatureQuery(sort=sort, descending=descending, limit=1000, **filters)
        whole = [r["feature_id"] for r in queries.feature_list(query).rows]
        for offset in (17, max(0, len(whole) - 5)):
            page = queries.feature_list(
                FeatureQuery(sort=sort, descending=descending, limit=10, offset=offset, **filters)
            )
            assert [r["feature_id"] for r in page.rows] == whole[offset : offset + 10], (sort, descending, filters)
            assert page.total == len(whole) > 20


def test_neighbours_past_the_walk_come_from_the_index(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the next unreviewed feature is further than the stored order's walk, the index query answers."""
    queries = ReviewQueries(Store(db))
    order = [r["feature_id"] for r in _whole_list(queries, sort="density", descending=False)]
    walked = [queries.feature_neighbours(FeatureQuery(sort="density", descending=False), f) for f in order[:12]]
    monkeypatch.setattr(list_order, "WALK_LIMIT", 1)
    asked = [queries.feature_neighbours(FeatureQuery(sort="density", descending=False), f) for f in order[:12]]
    assert walked == asked and all(n["next_unreviewed"] for n in asked)
    assert [n["next"] for n in asked] == order[1:13]


def test_a_review_in_the_app_shows_in_the_sorted_and_filtered_list_at_once(
    db: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    base = serve(ReviewSettings(db=db, progress=lines.append))
    assert lines[0].startswith(f"building the feature list index over {FEATURES + 1:,} features")
    assert lines[-1].startswith("feature list index built in")

    def no_rebuild(*args: Any) -> None:
        raise AssertionError("the list's index was rebuilt")

    monkeypatch.setattr(ListIndex, "build", no_rebuild)
    with httpx.Client(base_url=base, timeout=120) as client:
        page = client.get("/", params={"status": "unreviewed", "sort": "density", "dir": "desc"}).text
        target = re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', page)[3]
        feature = client.get("/feature", params={"id": target}).text
        form = {
            "csrf": re.findall(r'name="csrf" value="([^"]+)"', feature)[0],
            "explanation_id": re.findall(r'name="explanation_id" value="([^"]+)"', feature)[0],
            "verdict": "accept",
        }
        assert client.post("/review", data=form).status_code == 303
        accepted = client.get("/", params={"status": "accepted", "sort": "density", "dir": "desc"}).text
        assert target in re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', accepted)
        unreviewed = client.get("/", params={"status": "unreviewed", "sort": "density", "dir": "desc"}).text
        assert target not in re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', unreviewed)
    queries = ReviewQueries(Store(db))
    by_status = [r["feature_id"] for r in _whole_list(queries, sort="status", descending=False)]
    accepted_ids = {r["feature_id"] for r in _whole_list(queries, status="accepted")}
    assert target in accepted_ids and set(by_status[: len(accepted_ids)]) == accepted_ids
    reopened: list[str] = []
    serve(ReviewSettings(db=db, progress=reopened.append))
    assert reopened == ["feature list index: up to date"]


def _run_writes(store: Store, run_id: str, text: str, feature_id: str, minutes_ago: float = 0.0) -> None:
    """Writes what a run in progress writes: its `running` row, an LLM call (`minutes_ago`) and an explanation."""
    when = now() - timedelta(minutes=minutes_ago)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs VALUES (?, ?, NULL, 'running', '{}', 'hash', '0.1.0', NULL, NULL)", [run_id, when]
        )
    call = {"id": str(uuid.uuid4()), "run_id": run_id, "feature_id": feature_id, "role": "explain", "created_at": when}
    explanation = {
        "id": str(uuid.uuid4()),
        "run_id": run_id,
        "feature_id": feature_id,
        "iteration": 0,
        "parent_id": None,
        "explainer": "x",
        "prompt_hash": "p",
        "text": text,
        "llm_call_id": call["id"],
        "created_at": when,
    }
    store.write_results({"llm_calls": [call], "explanations": [explanation]})


def test_while_a_run_writes_the_list_is_served_as_indexed_and_says_so(db: Path, serve: Serve) -> None:
    store = Store(db)
    queries = ReviewQueries(store)
    feature = queries.feature_list(FeatureQuery(sort="feature", descending=False)).rows[0]["feature_id"]
    base = serve(ReviewSettings(db=db, hold_seconds=0))  # opened before the run writes: the index is current
    assert 'id="list-stale"' not in httpx.get(base + "/").text
    _run_writes(store, "run-writing", "celesta arpeggio", feature)
    page = queries.feature_list(FeatureQuery(search="celesta"))  # no rebuild for every page mid-run
    assert page.stale and page.rows == []
    assert 'id="list-stale"' in httpx.get(base + "/", params={"q": "celesta"}).text
    store.finish_run("run-writing", "completed")
    ReviewQueries(store).check_index()  # what the run's last task does
    page = queries.feature_list(FeatureQuery(search="celesta"))
    assert not page.stale and [r["feature_id"] for r in page.rows] == [feature]


def test_a_run_that_stopped_logging_does_not_keep_the_list_stale(db: Path) -> None:
    store = Store(db)
    queries = ReviewQueries(store)
    feature = queries.feature_list(FeatureQuery(sort="feature", descending=False)).rows[0]["feature_id"]
    _run_writes(store, "run-killed", "theremin drone", feature, minutes_ago=30)  # killed: still `running`
    page = queries.feature_list(FeatureQuery(search="theremin"))
    assert not page.stale and [r["feature_id"] for r in page.rows] == [feature]


def test_refreshing_the_index_after_a_run_reports_a_failure_in_one_line(tmp_path: Path) -> None:
    """What a run and `autointerp import` call at their end: a store it cannot read is one line, never raised."""
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a database" * 64)
    why = refresh_index(Store(broken))
    assert why is not None and "\n" not in why
    assert why.startswith("the review app's feature list index was not built (") and "is not a DuckDB database" in why

    store = Store(tmp_path / "empty.duckdb")
    store.migrate()
    lines: list[str] = []
    assert refresh_index(store, lines.append) is None
    assert refresh_index(store, lines.append) is None
    assert lines[-1] == "feature list index: up to date"
