"""Issue 16, items 12-15: stored data and request values that used to give 5xx, unreadable text,
refused hosts, leaked paths, and the Scores table's notes. Real DuckDB file, real server on loopback."""

from __future__ import annotations

import html
import json
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.cli.exchange import bind_ports
from autointerp.errors import AutointerpError
from autointerp.review import ReviewSettings
from autointerp.review.app import review_url
from autointerp.review.forms import MAX_BODY_BYTES, MAX_EDIT_CHARS, MAX_NOTE_CHARS
from autointerp.review.text import clip, reveal_html, reveal_plain
from autointerp.review.views import histogram, nice_step, score_note
from autointerp.store.database import Store
from tests.review.conftest import RUN_ID, score_row

Serve = Callable[..., str]
DB = tuple[Path, dict[str, Any]]
BIDI_TEXT = "fires on file names like \u202egnp.exe and on\x00NUL bytes"


def _form(page: str) -> dict[str, str]:
    fields = dict(re.findall(r'name="(csrf|explanation_id|feature_id)" value="([^"]*)"', page))
    assert "csrf" in fields and "explanation_id" in fields
    return fields


# item 12: no 5xx from stored data or parameters ------------------------------------------------


def test_nan_and_infinite_activations_render(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    feature = ids["features"][1]
    store = Store(path)
    with store.transaction() as con:
        con.execute(
            "UPDATE exemplar_rows SET activations = ?::FLOAT[], max_activation = 'nan'::FLOAT"
            " WHERE feature_id = ? AND kind = 'top' AND rank = 0",
            [[None, math.nan, math.inf, -math.inf, 1.0, 2.0, 0.5, 0.0], feature],
        )
        con.execute("UPDATE exemplar_rows SET activations = NULL WHERE feature_id = ? AND kind = 'random'", [feature])
        con.execute("UPDATE features SET max_activation = 'inf'::DOUBLE WHERE id = ?", [feature])
        con.execute(
            "UPDATE scores SET value = 'nan'::DOUBLE, details = ? "
            "WHERE explanation_id = ? AND metric = 'correlation_top'",
            [
                json.dumps({"windows": [1, {"kind": [1]}, {"kind": "top", "rank": 1, "true": "x", "predicted": None}]}),
                ids["explanations"][feature],
            ],
        )
    base = serve(ReviewSettings(db=path))
    response = httpx.get(f"{base}/feature", params={"id": feature})
    assert response.status_code == 200, response.text[:500]
    assert "4 not drawn (NaN, infinite or missing)" in response.text  # NULL, nan, inf, -inf of the top #0 window
    assert 'title="nan"' in response.text and 'title="inf"' in response.text
    assert httpx.get(base + "/", params={"sort": "score"}).status_code == 200


def test_histogram_survives_extreme_values() -> None:
    chart = histogram([math.nan, math.inf, -math.inf, 3.0e38, -3.0e38, 1.0], [math.nan, 3.0e38])
    assert chart.counted == 3 and chart.skipped == 3
    assert sum(b["height"] > 0 for b in chart.bars) >= 2 and len(chart.maxima) == 1
    assert all(math.isfinite(float(b["x"])) and math.isfinite(float(b["height"])) for b in chart.bars)
    assert histogram([math.nan]).counted == 0 and histogram([]).bars == []
    single = histogram([0.0, 0.0])
    assert single.counted == 2 and [t["label"] for t in single.x_ticks] == ["0", "1"]
    tiny = histogram([1e-30, 2e-30])
    assert tiny.counted == 2 and len(tiny.x_ticks) >= 2
    assert nice_step(10.0, 5) == 2.0 and nice_step(7.3, 3) == 2.5 and nice_step(math.inf) == 1.0


def test_parameters_out_of_range_are_4xx(review_db: DB, serve: Serve) -> None:
    path, _ = review_db
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        for params in (
            {"page": "9223372036854775807"},
            {"page": "0"},
            {"page": "-3"},
            {"per": "0"},
            {"page": "1e3"},
            {"page": "9" * 5000},
            {"min": "nan"},
            {"disagree": "2"},
            {"dir": "sideways"},
            {"noted": "maybe"},
            {"q": "x" * 5000},
        ):
            response = client.get("/", params=params)
            assert response.status_code == 400, (params, response.status_code)
            assert "Cannot show this" in response.text
            assert client.get("/feature", params={"id": "x", **params}).status_code == 400
        assert "smollm2-135m/mlp.15/0" in client.get("/", params={"per": str(10**30)}).text  # capped at 500
        assert "No features match" in client.get("/", params={"page": "1000000"}).text
        assert client.get("/", params={"min": "1e999"}).status_code == 200  # +inf is a number


def test_an_unknown_run_or_metric_is_400_and_writes_no_index(review_db: DB, serve: Serve) -> None:
    """A page that names a run or metric the store lacks built (wrote) an index for it: any site a reviewer
    visits could grow the file with `<img src=".../?metric=N">`."""
    path, _ = review_db
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        client.get("/")
        stamps = Store(path).query("SELECT scope, metric FROM feature_list_stamp ORDER BY ALL")
        for params, named in (
            ({"metric": "bogus"}, "no scores of metric 'bogus'"),
            ({"metric": "x' OR 1=1--"}, "no scores of metric"),
            ({"run": "fake1", "metric": "m1"}, "no run 'fake1'"),
            ({"run": "fake2"}, "no run 'fake2'"),
        ):
            response = client.get("/", params=params)
            assert response.status_code == 400 and named in html.unescape(response.text), params
        assert client.get("/", params={"run": RUN_ID}).status_code == 200  # a run it holds
    assert Store(path).query("SELECT scope, metric FROM feature_list_stamp ORDER BY ALL") == [
        *stamps,
        {"scope": RUN_ID, "metric": stamps[0]["metric"]},
    ]


def test_review_of_an_unknown_explanation_is_404(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        form = _form(client.get("/feature", params={"id": ids["features"][0]}).text)
        response = client.post("/review", data={**form, "explanation_id": "no-such-explanation", "verdict": "accept"})
        assert response.status_code == 404 and "no explanation" in response.text
        assert client.post("/review", data={**form, "explanation_id": "", "verdict": "accept"}).status_code == 400
        odd_origin = client.post("/review", data={**form, "verdict": "accept"}, headers={"origin": "http://["})
        assert odd_origin.status_code == 403  # an Origin that does not parse is another origin
        assert Store(path).query("SELECT count(*) AS n FROM reviews")[0]["n"] == 0
        fallback = "/feature?" + urlencode({"id": form["feature_id"]})
        for target, location in (("//[", fallback), ("/[", "/["), ("/ok\r\nSet-Cookie: x=1", fallback)):
            moved = client.post("/review", data={**form, "verdict": "accept", "next": target})
            assert moved.status_code == 303 and moved.headers["location"] == location, (target, moved.status_code)


# item 13: long text, bidi and NUL, size limits -------------------------------------------------


def _set_explanation(path: Path, explanation_id: str, text: str) -> None:
    with Store(path).transaction() as con:
        con.execute("UPDATE explanations SET text = ? WHERE id = ?", [text, explanation_id])


def test_long_explanation_is_clipped_in_the_list(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    long_text = "degenerate " * 5_000 + "y" * 45_000  # ~100 KB, with one unbroken 45 KB word
    _set_explanation(path, ids["explanations"][ids["features"][2]], long_text)
    base = serve(ReviewSettings(db=path))
    listing = httpx.get(base + "/").text
    assert len(listing) < 40_000, len(listing)
    assert f"… ({len(long_text) - 300:,} more characters)" in listing
    assert "table-layout: fixed" in httpx.get(base + "/static/style.css").text
    assert "overflow-wrap: anywhere" in httpx.get(base + "/static/style.css").text
    feature = httpx.get(f"{base}/feature", params={"id": ids["features"][2]}).text
    assert 'class="explanation big longtext"' in feature and long_text[-100:] in feature  # in full, in a box
    assert "100,000 characters (scroll the box)" in feature
    assert "/2" in httpx.get(base + "/", params={"q": "yyyy"}).text  # search still sees the whole text
    # the note form carries the edit box; with a 100 KB explanation it must still go through
    box = re.search(r'<textarea name="edited_text"[^>]*>([^<]*)</textarea>', feature)
    assert box and len(html.unescape(box.group(1))) == MAX_EDIT_CHARS and 'id="edit-clipped"' in feature
    fields = {**_form(feature), "edited_text": html.unescape(box.group(1))}
    for verdict in ("note", "request_experiments"):
        response = httpx.post(f"{base}/review", data={**fields, "verdict": verdict, "note": "degenerate output"})
        assert response.status_code == 303, response.text[:300]
    edited = httpx.post(f"{base}/review", data={**fields, "verdict": "edit", "edited_text": "ü" * MAX_EDIT_CHARS})
    assert edited.status_code == 303  # the longest edit fits the body limit even when every byte is %-encoded
    assert [r["verdict"] for r in Store(path).query("SELECT verdict FROM reviews ORDER BY created_at")] == [
        "note",
        "request_experiments",
        "edit",
    ]


def test_bidi_and_nul_characters_are_shown_not_obeyed(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    feature = ids["features"][3]
    _set_explanation(path, ids["explanations"][feature], BIDI_TEXT)
    with Store(path).transaction() as con:
        con.execute(
            "UPDATE exemplar_windows SET tokens = ['a', '\u202e', 'b\x00', 'c', 'd', 'e', 'f', 'g']"
            " WHERE window_key IN (SELECT window_key FROM exemplar_rows WHERE feature_id = ?)",  # its windows' tokens
            [feature],
        )
    base = serve(ReviewSettings(db=path))
    for response in (httpx.get(f"{base}/feature", params={"id": feature}), httpx.get(base + "/")):
        assert response.status_code == 200
        assert "\u202e" not in response.text and "\x00" not in response.text
        assert "⟨U+202E⟩" in response.text and "⟨U+0000⟩" in response.text
    page = httpx.get(f"{base}/feature", params={"id": feature}).text
    assert 'title="RIGHT-TO-LEFT OVERRIDE"' in page and 'id="control-warning"' in page
    textarea = re.search(r'<textarea name="edited_text"[^>]*>([^<]*)</textarea>', page)
    assert textarea and textarea.group(1) == "fires on file names like ⟨U+202E⟩gnp.exe and on⟨U+0000⟩NUL bytes"
    assert reveal_plain("a\u2066b\x7fc\td") == "a⟨U+2066⟩b⟨U+007F⟩c\td"
    assert str(reveal_html("<b>\u202e</b>")).startswith('&lt;b&gt;<span class="ctl"')
    assert clip("abcdef", 3) == "abc… (3 more characters)" and clip("abc", 3) == "abc"


def test_edits_notes_and_bodies_are_limited(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    base = serve(ReviewSettings(db=path))
    with httpx.Client(base_url=base) as client:
        form = _form(client.get("/feature", params={"id": ids["features"][1]}).text)
        cases = [
            ({"verdict": "edit", "edited_text": "cat\x00dog"}, 400, "control character (NUL)"),
            ({"verdict": "edit", "edited_text": "x" * (MAX_EDIT_CHARS + 1)}, 400, "at most 10,000"),
            ({"verdict": "note", "note": "n" * (MAX_NOTE_CHARS + 1)}, 400, "at most 5,000"),
            ({"verdict": "accept", "reviewer": "r" * 101}, 400, "reviewer name"),
        ]
        for fields, status, message in cases:
            response = client.post("/review", data={**form, **fields})
            assert response.status_code == status and message in response.text, (fields.keys(), response.text[:300])
        big = client.post("/review", data={**form, "verdict": "note", "note": "n" * MAX_BODY_BYTES})
        assert big.status_code == 413
        many = client.post(
            "/review",
            content="&".join(f"f{i}=1" for i in range(200)),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert many.status_code == 400
        encoded = urlencode({**form, "verdict": "note"})
        for note in ("raw%FF%FEbytes", "raw\xff\xfebytes"):  # %-escaped, and raw: stored as U+FFFD before
            body = f"{encoded}&note=".encode() + note.encode("latin-1")
            not_utf8 = client.post(
                "/review", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
            )
            assert not_utf8.status_code == 400 and "not UTF-8" in not_utf8.text
        rtl = client.post("/review", data={**form, "verdict": "note", "note": "שלום \u200f ok"})
        assert rtl.status_code == 303  # right-to-left text and marks are fine in a note
    rows = Store(path).query("SELECT verdict, note FROM reviews")
    assert rows == [{"verdict": "note", "note": "שלום \u200f ok"}]


# item 14: a loopback bind address is an allowed host; the 404 page hides the path ---------------


def test_app_bound_to_another_loopback_address_serves_its_printed_url(review_db: DB, serve: Serve) -> None:
    path, _ = review_db
    base = serve(ReviewSettings(db=path), host="127.0.0.2")
    port = int(base.rsplit(":", 1)[1])
    url = review_url("127.0.0.2", port)
    assert url == f"http://127.0.0.2:{port}/"
    assert httpx.get(url).status_code == 200
    assert httpx.get(url, headers={"host": f"attacker.example:{port}"}).status_code == 421  # rebinding still refused
    assert review_url("::1", 80, "t k") == "http://[::1]:80/?token=t+k"
    assert review_url("0.0.0.0", 80) == "http://127.0.0.1:80/"


def test_not_found_page_does_not_show_the_database_path(review_db: DB, serve: Serve) -> None:
    path, _ = review_db
    base = serve(ReviewSettings(db=path))
    response = httpx.get(f"{base}/feature", params={"id": "nope"})
    assert response.status_code == 404 and "no feature" in response.text
    assert str(path.parent) not in response.text and str(path.resolve().parent) not in response.text


# item 15: each score row's note is its own ------------------------------------------------------


def test_scores_table_notes_are_per_row(review_db: DB, serve: Serve) -> None:
    path, ids = review_db
    feature = ids["features"][4]
    explanation_id = ids["explanations"][feature]
    with Store(path).transaction() as con:
        con.execute(
            "UPDATE scores SET details = ? WHERE explanation_id = ? AND metric = 'correlation_top_and_random'",
            [json.dumps({"undefined": "simulation reason, must not leak"}), explanation_id],
        )
    Store(path).write_results(
        {
            "scores": [
                score_row(
                    explanation_id,
                    "embedding_auroc",
                    None,
                    scorer="embedding",
                    details=json.dumps({"undefined": "no random windows to rank against"}),
                ),
                score_row(explanation_id, "detection_auroc", None, scorer="detection", details=json.dumps({})),
            ]
        }
    )
    base = serve(ReviewSettings(db=path))
    page = httpx.get(f"{base}/feature", params={"id": feature}).text
    table = page.split('<table class="scores">', 1)[1].split("</table>", 1)[0]
    notes = dict(re.findall(r"<tr><td>([a-z_]+)</td>.*?class=\"muted score-note\">([^<]*)</td>", table, re.S))
    assert notes["embedding_auroc"] == "no random windows to rank against"
    assert notes["detection_auroc"] == "undefined (no reason stored)"
    assert notes["correlation_top_and_random"] == ""  # it has a value: no reason shown, though its details hold one
    assert score_note({"value": math.nan, "details": None}) == "not a number"
    assert RUN_ID in page


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "error: binding to 0.0.0.0 exposes the app beyond this machine; pass --token SECRET"),
        ("ab", "error: --token is 2 characters; one that guards 0.0.0.0 needs at least 16"),
    ],
)
def test_an_app_reachable_from_other_machines_needs_a_long_token(
    review_db: tuple[Path, Any], token: str | None, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before it serves: no token at all, or one short enough to guess (`--token ab` was accepted)."""
    monkeypatch.delenv("AUTOINTERP_REVIEW_TOKEN", raising=False)
    path, _ = review_db
    args = ["review", "--db", str(path), "--host", "0.0.0.0", "--port", "1"]
    ran = CliRunner().invoke(app, args + (["--token", token] if token is not None else []))
    assert ran.exit_code == 1, ran.output
    assert ran.output.startswith(message), ran.output


def test_the_review_command_serves_and_a_second_one_on_its_port_is_one_line(review_db: tuple[Path, Any]) -> None:
    """`autointerp review` on a port in use printed its URL, then uvicorn's error, and exited 3; with
    --port 0 the printed URL named port 0. Now the port is bound first: the URL names the real port and a
    second app on it is refused in one line."""
    path, _ = review_db
    command = [sys.executable, "-m", "autointerp", "review", "--db", str(path), "--port", "0"]
    serving = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert serving.stdout is not None
        url = None
        for line in serving.stdout:
            found = re.search(r"review app on (http://127\.0\.0\.1:(\d+)/)", line)
            if found:
                url, port = found.group(1), found.group(2)
                break
        assert url is not None and port != "0"
        for _ in range(100):  # the server starts listening just after the line is printed
            try:
                assert httpx.get(url).status_code == 200
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"nothing answered on {url}")
        second = CliRunner().invoke(app, ["review", "--db", str(path), "--port", port])
        assert (
            second.exit_code == 1
            and second.output == f"error: port {port} on 127.0.0.1 is in use; pass another --port\n"
        )
        unknown = CliRunner().invoke(
            app, ["review", "--db", str(path), "--host", "no-such-host.invalid", "--token", "x" * 16]
        )
        assert unknown.exit_code == 1 and unknown.output.startswith("error: cannot bind --host no-such-host.invalid:")
    finally:
        serving.terminate()
        serving.wait(timeout=30)


def test_a_host_that_resolves_to_two_addresses_is_served_on_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """`review` bound only the first address a host resolved to: a `localhost` that resolves to ::1 first
    served IPv6 alone, and a browser that tried 127.0.0.1 found nothing."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    resolve = socket.getaddrinfo

    def both(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [*resolve("::1", port, type=socket.SOCK_STREAM), *resolve("127.0.0.1", port, type=socket.SOCK_STREAM)]

    monkeypatch.setattr(socket, "getaddrinfo", both)
    listening = bind_ports("localhost", 0)
    try:
        assert [s.family for s in listening] == [socket.AF_INET6, socket.AF_INET]
        [port] = {s.getsockname()[1] for s in listening}  # one free port, the same on both
        for family, host in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:  # each family answers
                client.settimeout(5)
                client.connect((host, port))
        with pytest.raises(AutointerpError, match=rf"^port {port} on localhost is in use; pass another --port$"):
            bind_ports("localhost", port)
    finally:
        for sock in listening:
            sock.close()


def test_an_address_family_the_machine_lacks_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """With IPv6 disabled in the kernel, `localhost` still resolves to ::1 (from /etc/hosts), and creating an
    IPv6 socket fails with EAFNOSUPPORT: the app is served on 127.0.0.1 alone, not refused."""
    import errno

    from autointerp.cli import exchange

    resolve, listen = socket.getaddrinfo, exchange._listen

    def both(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [*resolve("127.0.0.1", port, type=socket.SOCK_STREAM), (socket.AF_INET6, 1, 6, "", ("::1", port, 0, 0))]

    def no_ipv6(family: socket.AddressFamily, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return listen(family, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", both)
    monkeypatch.setattr(exchange, "_listen", no_ipv6)
    listening = bind_ports("localhost", 0)
    try:
        assert [s.family for s in listening] == [socket.AF_INET]
    finally:
        for sock in listening:
            sock.close()
