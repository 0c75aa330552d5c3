"""Confidence beside the headline score in the review app: the interval, the distractor, the chance
badge and the chance filter, over a real DuckDB file and a live server (and the same text as `show`)."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from autointerp.cli import app as cli
from autointerp.review import ReviewSettings
from autointerp.score.confidence import RESAMPLES, Confidence
from autointerp.store.database import Store
from tests.review.conftest import RUN_ID, set_confidence

Serve = Callable[[ReviewSettings], str]
DB = tuple[Path, dict[str, Any]]

ROW = re.compile(r'class="feature-link" href="[^"]*">([^<]+)<.*?<td class="num score">(.*?)</td>', re.S)
BADGE = re.compile(r'<span class="badge chance"[^>]*title="([^"]*)"[^>]*>chance</span>')


@pytest.fixture
def chance_db(review_db: DB) -> DB:
    """The review fixture (scores 0.90, 0.75, … 0.15, each distractor 0.02) with a confidence on
    features 1 (beats its distractor) and 2 (chance-level), and feature 3 scored like an older run
    (no confidence, no distractor); the others have a distractor but no confidence."""
    path, ids = review_db
    explanations = [ids["explanations"][f] for f in ids["features"]]
    set_confidence(path, explanations[1], half_width=0.08, p_vs_distractor=0.0)
    set_confidence(path, explanations[2], half_width=0.2, p_vs_distractor=0.31)
    with Store(path).transaction() as con:
        con.execute(
            "DELETE FROM scores WHERE explanation_id = ? AND metric = 'correlation_top_and_random_distractor'",
            [explanations[3]],
        )
    return path, ids


def _cells(page: str) -> dict[str, str]:
    """Returns feature id -> its score cell, as listed."""
    return dict(ROW.findall(page))


def test_list_shows_interval_distractor_and_one_badge(chance_db: DB, serve: Serve) -> None:
    path, ids = chance_db
    f = ids["features"]
    page = httpx.get(serve(ReviewSettings(db=path)) + "/").text
    cells = _cells(page)
    assert cells[f[0]] == "0.90 (distractor 0.02)"  # a distractor without a confidence, as `show` prints it
    assert cells[f[1]] == "0.75 ± 0.08 (distractor 0.02)"  # beats its distractor: no badge
    assert cells[f[2]].startswith('0.60 ± 0.20 (distractor 0.02) <span class="badge chance"')
    assert cells[f[3]] == "0.45"  # an older run's score: just the number
    titles = BADGE.findall(page)
    assert len(titles) == 1
    assert html.unescape(titles[0]) == (
        "not distinguishable from its distractor at p < 0.05 (one-sided bootstrap test: p = 0.31)"
    )


def test_chance_filter_keeps_or_hides_chance_level_explanations(chance_db: DB, serve: Serve) -> None:
    path, ids = chance_db
    f = ids["features"]
    with httpx.Client(base_url=serve(ReviewSettings(db=path))) as client:
        only = client.get("/", params={"chance": "only"})
        assert only.status_code == 200 and list(_cells(only.text)) == [f[2]]
        assert "1 features" in only.text and 'value="only" selected' in only.text
        assert 'name="chance" value="only"' in only.text  # carried by the bulk form, like the other filters
        hidden = client.get("/", params={"chance": "hide"}).text
        assert list(_cells(hidden)) == [f[0], f[1], *f[3:]]
        assert list(_cells(client.get("/", params={"chance": ""}).text)) == f
        assert list(_cells(client.get("/", params={"chance": "only", "min": "0.7"}).text)) == []
        other_metric = client.get("/", params={"chance": "only", "metric": "correlation_top"}).text
        assert "No features match" in other_metric  # no confidence on that metric: never chance-level
        feature = client.get("/feature", params={"id": f[2], "chance": "only"}).text
        assert 'rel="next"' not in feature and 'rel="prev"' not in feature  # j/k stay inside the filter
        for bad in ("yes", "ONLY", "1; DROP TABLE runs", "x" * 2000):
            for url in ("/", "/feature"):
                response = client.get(url, params={"chance": bad, "id": f[0]})
                assert response.status_code == 400, (url, bad)
                assert "chance must be one of only, hide" in response.text or "longer than" in response.text


def test_feature_page_shows_the_headline_with_its_interval_and_badge(chance_db: DB, serve: Serve) -> None:
    path, ids = chance_db
    f = ids["features"]
    base = serve(ReviewSettings(db=path))
    chance = httpx.get(f"{base}/feature", params={"id": f[2]}).text
    headline = re.search(r'<p class="headline-score" id="headline-score">(.*?)</p>', chance, re.S)
    assert headline and 'correlation_top_and_random: <span class="score">0.60 ± 0.20 (distractor 0.02)</span>' in (
        headline.group(1)
    )
    assert 'id="chance-badge"' in headline.group(1)
    assert "0.600 ± 0.20" in chance  # the scores table: the value with its interval
    assert len(BADGE.findall(chance)) == 2  # beside the headline and in the scores table
    beats = httpx.get(f"{base}/feature", params={"id": f[1]}).text
    assert '<span class="score">0.75 ± 0.08 (distractor 0.02)</span>' in beats and not BADGE.findall(beats)
    older = httpx.get(f"{base}/feature", params={"id": f[3]}).text
    assert '<span class="score">0.45</span>' in older and "±" not in older and not BADGE.findall(older)


def test_review_app_and_show_print_the_same_score(chance_db: DB, serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    path, ids = chance_db
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250))
    cli.print_explanations(Store(path), RUN_ID)
    printed = out.getvalue()
    cells = _cells(httpx.get(serve(ReviewSettings(db=path)) + "/").text)
    assert "0.60 ± 0.20 (distractor 0.02) ~chance" in printed
    for feature in ids["features"][1:]:
        shown = re.sub(r"\s*<span.*", "", cells[feature])
        assert re.search(rf"{re.escape(feature)} .*{re.escape(shown)}", printed), (feature, shown)
    assert printed.count("~chance") == 2  # the row and the title's legend


def test_a_score_at_or_below_zero_is_chance_level_whatever_its_distractor(
    chance_db: DB, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A correlation of -0.06 that beats a distractor at -0.16 (p = 0) predicts nothing: the list, its filter,
    the feature page and `show` all flag it, with the reason on hover."""
    path, ids = chance_db
    f = ids["features"]
    negative = ids["explanations"][f[4]]
    with Store(path).transaction() as con:
        con.execute(
            "UPDATE scores SET value = CASE WHEN metric LIKE '%_distractor' THEN -0.16 ELSE -0.06 END "
            "WHERE explanation_id = ? AND metric LIKE 'correlation_top_and_random%'",
            [negative],
        )
    set_confidence(path, negative, half_width=0.04, p_vs_distractor=0.0)
    with httpx.Client(base_url=serve(ReviewSettings(db=path))) as client:
        page = client.get("/").text
        assert _cells(page)[f[4]].startswith('-0.06 ± 0.04 (distractor -0.16) <span class="badge chance"')
        notes = [html.unescape(title) for title in BADGE.findall(page)]
        assert "a correlation of -0.06 predicts nothing: at or below 0, whatever its distractor scores" in notes
        assert set(_cells(client.get("/", params={"chance": "only"}).text)) == {f[2], f[4]}
        assert f[4] not in _cells(client.get("/", params={"chance": "hide"}).text)
        feature = client.get("/feature", params={"id": f[4]}).text
        assert 'id="chance-badge"' in feature
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250))
    cli.print_explanations(Store(path), RUN_ID)
    assert "-0.06 ± 0.04 (distractor -0.16) ~chance" in out.getvalue()


def test_a_confidence_shows_only_beside_the_score_it_belongs_to(chance_db: DB, serve: Serve) -> None:
    """A run copies the headline's confidence into every metric row of the outcome: a `correlation_top` of -0.2 is
    not the score it tested, so it gets neither its interval nor a chance flag; nor is a score whose confidence is
    JSON null flagged."""
    path, ids = chance_db
    f = ids["features"]
    beats, no_confidence = ids["explanations"][f[1]], ids["explanations"][f[5]]
    confidence = json.dumps({"confidence": Confidence(0.0, 0.16, 0.08, 0.0, RESAMPLES).as_details(0.75)})
    with Store(path).transaction() as con:
        con.execute(
            "UPDATE scores SET value = -0.2, details = json_merge_patch(details, ?) "
            "WHERE explanation_id = ? AND metric = 'correlation_top'",
            [confidence, beats],
        )
        where = "WHERE explanation_id = ? AND metric = 'correlation_top_and_random'"
        stored = con.execute(f"SELECT details FROM scores {where}", [no_confidence]).fetchone()
        assert stored is not None
        null_confidence = json.dumps({**json.loads(stored[0]), "confidence": None})
        con.execute(f"UPDATE scores SET value = -0.1, details = ? {where}", [null_confidence, no_confidence])
    with httpx.Client(base_url=serve(ReviewSettings(db=path))) as client:
        assert set(_cells(client.get("/", params={"chance": "only"}).text)) == {f[2]}
        by_top = client.get("/", params={"chance": "only", "metric": "correlation_top"}).text
        assert "No features match" in by_top
        assert _cells(client.get("/", params={"metric": "correlation_top"}).text)[f[1]] == "-0.20"
        feature = client.get("/feature", params={"id": f[1]}).text
        assert not BADGE.findall(feature)
        assert "0.750 ± 0.08" in feature and "-0.200" in feature and "-0.200 ±" not in feature
