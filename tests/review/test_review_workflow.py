"""Issue 16, items 16-17: earlier verdicts after a re-explaining run, exports of every review, bulk
accept / reject with undo, the disagreement / note / experiments-requested filters, histogram ticks.
Real DuckDB file, real server on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from autointerp.review import ReviewSettings
from autointerp.review.queries import ReviewQueries
from autointerp.store.database import Store, now
from tests.review.conftest import add_run, explanation_row, review_row, score_row

Serve = Callable[..., str]
DB = tuple[Path, dict[str, Any]]
LISTED = re.compile(r'class="feature-link" href="[^"]*">([^<]+)<')


def _statuses(client: httpx.Client, **params: str) -> dict[str, str]:
    page = client.get("/", params={"per": "500", **params}).text
    rows = re.findall(r'class="feature-link" href="[^"]*">([^<]+)<.*?<td><span class="status (\w+)">', page, re.S)
    return dict(rows)


def _bulk_form(page: str) -> dict[str, str]:
    form = page.split('id="form-bulk"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" (?:class="[^"]*" )?value="([^"]*)"', form))


# item 16: a later run's explanation does not hide the earlier verdict; export every review --------


def test_earlier_verdict_is_shown_after_a_new_explanation(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    feature = ids["features"][2]
    old_id = ids["explanations"][feature]
    queries = ReviewQueries(Store(path))
    queries.add_review(review_row(old_id, "accept", created_at=now() - timedelta(minutes=1)))
    add_run(path, "run-later0002")
    newer = explanation_row("run-later0002", feature, "a new wording from the later run")
    Store(path).write_results({"explanations": [newer]})
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        assert _statuses(client)[feature] == "unreviewed"  # the status is the new explanation's
        listing = client.get("/").text
        row = listing.split(f">{feature}<", 1)[1].split("</tr>", 1)[0]
        assert "earlier explanation (run run-review0001) was" in row and "accepted" in row
        assert "the token cat in sentence 2" in row
        page = client.get("/feature", params={"id": feature}).text
        earlier = page.split('id="earlier-verdict"', 1)[1].split("</p>", 1)[0]
        assert "accepted" in earlier and "the token cat in sentence 2" in earlier and f"#exp-{old_id}" in earlier
        assert "run run-review0001, iteration 0" in earlier and "the current one is not reviewed yet" in earlier
        reviews = page.split("<h2>Reviews</h2>", 1)[1].split("</section>", 1)[0]
        assert "about" in reviews and "an earlier explanation" in reviews
        assert "a new wording from the later run" in page.split('id="current-explanation"', 1)[1][:300]
    queries.add_review(review_row(newer["id"], "reject"))
    with httpx.Client(base_url=base) as client:
        assert _statuses(client)[feature] == "rejected"
        row = client.get("/").text.split(f">{feature}<", 1)[1].split("</tr>", 1)[0]
        assert "earlier explanation" not in row  # decided again: the list shows the current verdict only


def test_export_includes_notes_and_experiment_requests(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    first, second, third = (ids["explanations"][ids["features"][n]] for n in (1, 2, 3))
    ReviewQueries(Store(path)).add_reviews(
        [
            review_row(first, "accept", note="right"),
            review_row(second, "note", note="only a note"),
            review_row(third, "request_experiments", note="try dogs"),
        ]
    )
    base = serve(ReviewSettings(db=path))
    records = {r["explanation_id"]: r for r in map(json.loads, httpx.get(f"{base}/export").text.splitlines())}
    assert set(records) == {first, second, third}
    assert records[first]["verdict"] == "accept" and records[first]["status"] == "accepted"
    assert records[second]["verdict"] is None and records[second]["status"] == "unreviewed"
    assert records[second]["notes"] == "only a note" and records[second]["experiments_requested"] is False
    assert records[third]["experiments_requested"] is True and records[third]["notes"] == "try dogs"
    assert records[third]["text"] == "the token cat in sentence 3" and records[third]["reviews"] == 1


# item 17: bulk accept / reject of a filtered list, with undo ------------------------------------


def test_bulk_accept_of_a_filtered_list_and_undo(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    features = ids["features"]
    queries = ReviewQueries(Store(path))
    queries.add_review(review_row(ids["explanations"][features[3]], "reject", created_at=now() - timedelta(minutes=1)))
    base = serve(ReviewSettings(db=path, reviewer="bulk-tester"))
    with httpx.Client(base_url=base) as client:
        page = client.get("/", params={"max": "0.5", "per": "2"}).text  # features 3, 4, 5: two pages
        assert "With all 3 listed explanations (every page)" in page
        form = _bulk_form(page)
        assert form["max"] == "0.5" and form["expected"] == "3" and form["per"] == "2"
        assert client.post("/bulk", data={**form, "verdict": "accept", "csrf": "stale"}).status_code == 403
        cross = client.post("/bulk", data={**form, "verdict": "accept"}, headers={"origin": "http://evil.example"})
        assert cross.status_code == 403
        assert client.post("/bulk", data={**form, "verdict": "accept", "expected": "4"}).status_code == 409
        assert client.post("/bulk", data={**form, "verdict": "edit"}).status_code == 400
        assert Store(path).query("SELECT count(*) AS n FROM reviews")[0]["n"] == 1

        done = client.post("/bulk", data={**form, "verdict": "accept"})
        assert done.status_code == 303
        batch = re.search(r"batch=([0-9a-f]{32})", done.headers["location"])
        assert batch and "max=0.5" in done.headers["location"]
        statuses = _statuses(client)
        assert [statuses[f] for f in features] == ["unreviewed"] * 3 + ["accepted"] * 3
        banner = client.get(done.headers["location"]).text
        assert "Accepted 3 features in bulk (by bulk-tester" in banner and 'id="undo"' in banner

        # a feature reviewed again after the bulk action keeps its newer verdict through the undo
        queries.add_review(review_row(ids["explanations"][features[5]], "edit", edited_text="kept edit"))
        undo_form = dict(re.findall(r'name="(csrf|batch)" value="([^"]+)"', banner))
        assert client.post("/bulk/undo", data={**undo_form, "csrf": "x"}).status_code == 403
        assert client.post("/bulk/undo", data={**undo_form, "batch": "0" * 32}).status_code == 404
        undone = client.post("/bulk/undo", data={**undo_form, "max": "0.5"})
        assert undone.status_code == 303 and "max=0.5" in undone.headers["location"]
        statuses = _statuses(client)
        assert [statuses[f] for f in features[3:]] == ["rejected", "unreviewed", "edited"]
        after = client.get(undone.headers["location"]).text
        assert "Undone: 2 of the 3 features" in after and "1 reviewed again since were left alone" in after
        assert 'id="undo"' not in after
        assert client.post("/bulk/undo", data=undo_form).status_code == 409  # once only
    verdicts = [r["verdict"] for r in Store(path).query("SELECT verdict FROM reviews ORDER BY created_at, id")]
    assert verdicts.count("clear") == 1 and verdicts.count("accept") == 3  # append-only: nothing deleted


def test_bulk_reject_skips_features_already_rejected(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    ReviewQueries(Store(path)).add_review(review_row(ids["explanations"][ids["features"][0]], "reject"))
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        form = _bulk_form(client.get("/", params={"q": "sentence"}).text)  # features 1-5
        assert form["expected"] == "5"
        page = client.post("/bulk", data={**form, "verdict": "reject"}, follow_redirects=True).text
        assert "Rejected 5 features in bulk" in page
        assert set(_statuses(client).values()) == {"rejected"}
    assert Store(path).query("SELECT count(*) AS n FROM reviews")[0]["n"] == 6


def test_bulk_reject_sent_six_times_at_once_writes_one_batch(review_db: DB, serve: Serve) -> None:
    """A double click (or two tabs) on "Reject all": the list is read and written in one store call, so the
    requests after the first find nothing left to reject instead of each writing a batch."""
    path, _ = review_db
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        form = {**_bulk_form(client.get("/", params={"q": "sentence"}).text), "verdict": "reject"}
    assert form["expected"] == "5"

    def post(_: int) -> int:
        with httpx.Client(base_url=base) as client:
            return client.post("/bulk", data=form).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(post, range(6)))
    assert codes == [303] * 6  # the list still holds the 5 (now rejected) features: nothing to do
    rows = Store(path).query("SELECT id FROM reviews")
    assert len(rows) == 5 and len({r["id"].rsplit("-", 1)[0] for r in rows}) == 1


# item 17: filters ---------------------------------------------------------------------------------


def test_filter_by_scorer_disagreement_note_and_experiment_requests(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    features, explanations = ids["features"], ids["explanations"]
    # detection ranks the features in the opposite order to simulation, except feature 2 (rank kept mid)
    detection = {0: 0.1, 1: 0.2, 2: 0.65, 3: 0.7, 4: 0.8, 5: 0.9}
    Store(path).write_results(
        {
            "scores": [
                score_row(explanations[features[n]], "detection_auroc", v, scorer="detection")
                for n, v in detection.items()
            ]
        }
    )
    queries = ReviewQueries(Store(path))
    queries.add_reviews(
        [
            review_row(explanations[features[1]], "note", note="odd on digits"),
            review_row(explanations[features[4]], "request_experiments"),
            review_row(explanations[features[5]], "accept", note="fine"),
        ]
    )
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        # percentile spreads: features 0 and 5: 1.0; 1 and 4: 0.6; 2 and 3: 0.2
        strong = LISTED.findall(client.get("/", params={"disagree": "0.7"}).text)
        assert strong == [features[0], features[5]]
        some = LISTED.findall(client.get("/", params={"disagree": "0.5"}).text)
        assert some == [features[0], features[1], features[4], features[5]]
        ranked = LISTED.findall(client.get("/", params={"sort": "disagreement"}).text)
        assert ranked[:2] == [features[0], features[5]] and ranked[-2:] == [features[2], features[3]]
        assert LISTED.findall(client.get("/", params={"noted": "1"}).text) == [features[1], features[5]]
        assert LISTED.findall(client.get("/", params={"requested": "1"}).text) == [features[4]]
        both = client.get("/", params={"noted": "1", "requested": "1"}).text
        assert "No features match" in both
        filtered = client.get("/", params={"noted": "1", "disagree": "0.5"}).text
        assert 'id="filter-noted" checked' in filtered and '<option value="0.5" selected>' in filtered
        assert "sentence 1" in filtered and 'class="badge note"' in filtered
        link = re.search(r'class="feature-link" href="([^"]+)"', filtered)
        assert link and "noted=1" in link.group(1) and "disagree=0.5" in link.group(1)  # kept while paging


def test_histogram_has_axis_ticks(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    page = httpx.get(f"{base}/feature", params={"id": ids["features"][1]}).text  # activations 0..4
    svg = page.split('<svg class="histogram"', 1)[1].split("</svg>", 1)[0]
    x_labels = [float(x) for x in re.findall(r'<text class="tick x"[^>]*>([^<]+)</text>', svg)]
    y_labels = [int(y) for y in re.findall(r'<text class="tick y"[^>]*>([^<]+)</text>', svg)]
    assert x_labels[0] == 0 and x_labels[-1] >= 4 and x_labels == sorted(x_labels) and len(x_labels) >= 3
    assert y_labels[0] == 0 and y_labels == sorted(y_labels) and len(y_labels) >= 2
    assert "activation" in svg and "tokens" in svg and svg.count('class="max"') == 3
