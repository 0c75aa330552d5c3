"""The review app over HTTP on loopback: pages, escaping, CSRF, token, export, paging at scale."""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from autointerp.review import ReviewSettings
from autointerp.review.app import is_loopback
from autointerp.review.queries import ReviewQueries
from autointerp.store.database import Store, now
from tests.review.conftest import HOSTILE_EXPLANATION, HOSTILE_TOKEN, feature_rows

Serve = Callable[[ReviewSettings], str]
DB = tuple[Path, dict[str, Any]]


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "page has no CSRF field"
    return match.group(1)


def _review_form(page: str, verdict: str, **extra: str) -> dict[str, str]:
    explanation_id = re.search(r'name="explanation_id" value="([^"]+)"', page)
    assert explanation_id
    return {"csrf": _csrf(page), "explanation_id": explanation_id.group(1), "verdict": verdict, **extra}


def test_list_sorts_filters_searches_and_pages(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        page = client.get("/").text
        order = re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', page)
        assert order == ids["features"]  # best score first; scores fall with the index
        ascending = client.get("/", params={"sort": "score", "dir": "asc"}).text
        assert re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', ascending) == ids["features"][::-1]
        found = client.get("/", params={"q": "SENTENCE 3"}).text
        assert "1 features" in found and "smollm2-135m/mlp.15/3" in found
        paged = client.get("/", params={"per": 2, "page": 2}).text
        assert re.findall(r'class="feature-link" href="[^"]*">([^<]+)<', paged) == ids["features"][2:4]
        assert "page 2 of 3" in paged
        assert "4 features" in client.get("/", params={"min": "0.31"}).text
        assert client.get("/", params={"sort": "1; DROP TABLE runs"}).status_code == 400
        assert "No features match" in client.get("/", params={"hook": "mlp.99"}).text


def test_feature_page_shows_the_evidence(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    feature = ids["features"][1]
    page = httpx.get(f"{base}/feature", params={"id": feature}).text
    assert "the token cat in sentence 1" in page
    assert 'title="4.000"' in page  # token shading with the activation on hover
    assert "true vs predicted" in page and 'title="3.50"' in page  # simulator's prediction beside the truth
    assert "no explanation" in page and 'title="0.25"' in page  # and what it predicts with no explanation
    assert page.count('title="not read"') == 1  # the top window's first token: the attention sink, not scored
    assert "<svg" in page and "<rect" in page  # histogram
    assert "0.020" in page  # chance level from the distractor metric
    assert "local:smollm2-135m" in page and "abc123abc123abc1" in page  # who wrote it, which prompt
    assert "explain" in page and "120 / 9" in page  # the LLM call behind it
    assert f"id={ids['features'][2].replace('/', '%2F')}" in page  # next (j) in list order
    experiment_page = httpx.get(f"{base}/feature", params={"id": ids["features"][0]}).text
    assert "supports" in experiment_page and "does not fire" in experiment_page
    assert httpx.get(f"{base}/feature", params={"id": "nope"}).status_code == 404


def test_the_tokens_a_run_does_not_read_are_titled_so_and_left_out_of_the_histogram(
    review_db: DB, serve: Serve
) -> None:
    """A run of MLP neurons with the default config does not read each window's first two tokens: the feature
    page titles them "not read" in every stored window, and its histogram counts only the tokens read."""
    from autointerp.config import load_config

    path, ids = review_db
    config = load_config(None, []).model_dump(mode="json")  # features.skip_first_tokens = "auto": 2 for neurons
    with Store(path).transaction() as con:
        con.execute("UPDATE runs SET config = ?", [json.dumps(config)])
    feature = ids["features"][1]
    windows = Store(path).query("SELECT tokens FROM exemplars WHERE feature_id = ?", [feature])
    page = httpx.get(f"{serve(ReviewSettings(db=path))}/feature", params={"id": feature}).text
    assert page.count('title="not read"') == 2 * len(windows) + 1  # and the simulation window's own (unread: 1)
    read = sum(len(w["tokens"]) - 2 for w in windows)
    assert f"{read:,} token activations in the {len(windows)} stored windows" in page
    # a scorer plugin this server lacks: the whole config no longer validates here, its features section does
    config["score"]["methods"] = ["simulation", "a-scorer-not-installed-here"]
    with Store(path).transaction() as con:
        con.execute("UPDATE runs SET config = ?", [json.dumps(config)])
    again = httpx.get(f"{serve(ReviewSettings(db=path))}/feature", params={"id": feature}).text
    assert again.count('title="not read"') == 2 * len(windows) + 1


def test_corpus_and_model_text_is_escaped(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    response = httpx.get(f"{base}/feature", params={"id": ids["features"][0]})
    page = response.text
    assert "<script>window" not in page and "<img src=x" not in page and "<b>bold" not in page
    assert html.escape(HOSTILE_TOKEN) in page or "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert html.escape(HOSTILE_EXPLANATION, quote=False) in page.replace("&#34;", '"').replace("&#39;", "'")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    listing = httpx.get(base + "/").text
    assert "<img src=x" not in listing


def test_review_actions_need_csrf_and_are_stored(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path, reviewer="tester"))
    feature = ids["features"][2]
    explanation_id = ids["explanations"][feature]
    with httpx.Client(base_url=base) as client:
        page = client.get("/feature", params={"id": feature}).text
        forged = client.post("/review", data={"explanation_id": explanation_id, "verdict": "accept"})
        assert forged.status_code == 403
        wrong = client.post("/review", data={**_review_form(page, "accept"), "csrf": "guess"})
        assert wrong.status_code == 403
        cross = client.post("/review", data=_review_form(page, "accept"), headers={"origin": "http://evil.example"})
        assert cross.status_code == 403
        assert Store(path).query("SELECT count(*) AS n FROM reviews")[0]["n"] == 0

        accepted = client.post("/review", data=_review_form(page, "accept", next="/feature?id=x"))
        assert accepted.status_code == 303 and accepted.headers["location"] == "/feature?id=x"
        outside = client.post("/review", data=_review_form(page, "note", note="hi", next="//evil.example/"))
        assert outside.headers["location"].startswith("/feature?id=")
        client.post("/review", data=_review_form(page, "edit", edited_text="cats sitting on mats", reviewer="ann"))
        client.post("/review", data=_review_form(page, "request_experiments", note="try dogs"))
        assert client.post("/review", data=_review_form(page, "edit")).status_code == 400

    rows = Store(path).query("SELECT * FROM reviews ORDER BY created_at")
    assert [r["verdict"] for r in rows] == ["accept", "note", "edit", "request_experiments"]
    assert rows[0]["reviewer"] == "tester" and rows[2]["reviewer"] == "ann"
    assert rows[2]["edited_text"] == "cats sitting on mats" and rows[3]["note"] == "try dogs"
    assert all(r["explanation_id"] == explanation_id for r in rows)
    listing = httpx.get(base + "/", params={"status": "edited"}).text
    assert "cats sitting on mats" in listing and "1 features" in listing


def test_export_reviewed_explanations(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    store = Store(path)
    for n, verdict in enumerate(("accept", "reject")):
        ReviewQueries(store).add_review(
            {
                "id": f"r{n}",
                "explanation_id": ids["explanations"][ids["features"][n + 1]],
                "verdict": verdict,
                "edited_text": None,
                "reviewer": "tester",
                "note": "looks right" if n == 0 else None,
                "created_at": now(),
            }
        )
    base = serve(ReviewSettings(db=path))
    lines = httpx.get(f"{base}/export", params={"format": "jsonl"}).text.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["feature_id"], r["verdict"]) for r in records] == [
        (ids["features"][1], "accept"),
        (ids["features"][2], "reject"),
    ]
    assert records[0]["notes"] == "looks right" and records[0]["score"] == pytest.approx(0.75)
    csv = httpx.get(f"{base}/export", params={"format": "csv"})
    assert csv.text.splitlines()[0].startswith('"feature_id"') and len(csv.text.splitlines()) == 3
    parquet = pq.read_table(io.BytesIO(httpx.get(f"{base}/export", params={"format": "parquet"}).content))
    assert parquet.num_rows == 2
    assert httpx.get(f"{base}/export", params={"format": "xml"}).status_code == 400


def test_token_guards_every_request_and_host_header_is_checked(review_db: DB, serve: Serve) -> None:
    path, _ = review_db
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    base = serve(ReviewSettings(db=path, token="s3cret", allowed_hosts=set()))
    assert httpx.get(base + "/").status_code == 401
    assert httpx.get(base + "/static/app.js").status_code == 401
    assert httpx.get(base + "/", params={"token": "wrong"}).status_code == 401
    assert httpx.get(base + "/runs", headers={"authorization": "Bearer s3cret"}).status_code == 200
    with httpx.Client(base_url=base, follow_redirects=True) as client:
        landed = client.get("/", params={"token": "s3cret", "status": "unreviewed"})
        assert landed.status_code == 200 and "token" not in str(landed.url)
        assert client.get("/runs").status_code == 200  # the cookie carries the token from now on
    local = serve(ReviewSettings(db=path))
    assert httpx.get(local + "/", headers={"host": "attacker.example"}).status_code == 421


def test_runs_page_shows_progress_and_cost(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    page = httpx.get(base + "/runs").text
    assert ids["run_id"] in page and "completed" in page and "6 / 6" in page


def test_pages_stay_fast_with_100k_features(tmp_path: Path, serve: Serve) -> None:
    path = tmp_path / "big.duckdb"
    store = Store(path)
    store.migrate()
    with store.transaction() as con:
        con.execute("INSERT INTO runs VALUES ('big', ?, ?, 'completed', '{}', 'h', '0', NULL, NULL)", [now(), now()])
    features = feature_rows("big", range(100_000))
    store.write_results({"features": features})
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base, timeout=30) as client:
        client.get("/")  # warm up
        started = time.perf_counter()
        last = client.get("/", params={"sort": "index", "dir": "asc", "page": 2000, "per": 50}).text
        elapsed = time.perf_counter() - started
        assert "100,000 features" in last and "smollm2-135m/mlp.15/99999" in last
        assert elapsed < 3.0, f"last page took {elapsed:.2f} s"
        feature = client.get("/feature", params={"id": "smollm2-135m/mlp.15/50000", "sort": "index", "dir": "asc"})
        assert feature.status_code == 200 and "smollm2-135m%2Fmlp.15%2F50001" in feature.text


WRITER = """
import sys, uuid
from autointerp.store.database import Store, now
store, n = Store(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    store.write_results({"llm_calls": [{"id": str(uuid.uuid4()), "run_id": "run-review0001", "role": "explain",
        "backend": "local", "model": "m", "response": "x" * 1000, "created_at": now()} for _ in range(50)]})
print("wrote", n)
"""


def test_app_serves_while_another_process_writes(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    served = reviewed = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        page = client.get("/feature", params={"id": ids["features"][3]}).text
        while writer.poll() is None or served < 10:
            assert client.get("/").status_code == 200
            assert client.get("/feature", params={"id": ids["features"][3]}).status_code == 200
            response = client.post("/review", data=_review_form(page, "note", note=f"note {reviewed}"))
            assert response.status_code == 303
            served, reviewed = served + 2, reviewed + 1
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert "wrote 8" in out
    store = Store(path)
    assert store.query("SELECT count(*) AS n FROM llm_calls WHERE model = 'm'")[0]["n"] == 8 * 50
    assert store.query("SELECT count(*) AS n FROM reviews")[0]["n"] == reviewed
