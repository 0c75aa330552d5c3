"""The review app in a real headless Chromium (Debian's chromium + chromedriver; nothing downloaded)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autointerp.review import ReviewSettings
from autointerp.store.database import Store
from tests.review.conftest import set_confidence

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (`make setup` installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_open_list_open_feature_accept_it(
    review_db: tuple[Path, dict[str, Any]], serve: Callable[[ReviewSettings], str], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    path, ids = review_db
    set_confidence(path, ids["explanations"][ids["features"][0]], half_width=0.2, p_vs_distractor=0.31)
    base = serve(ReviewSettings(db=path, reviewer="browser-test"))
    wait = WebDriverWait(browser, 15)

    browser.get(base + "/")
    links = browser.find_elements(By.CSS_SELECTOR, "a.feature-link")
    assert [link.text for link in links] == ids["features"]
    badges = browser.find_elements(By.CSS_SELECTOR, "#feature-table .badge.chance")
    assert len(badges) == 1 and badges[0].is_displayed() and badges[0].text == "chance"
    assert badges[0].get_attribute("title").startswith("not distinguishable from its distractor at p < 0.05")
    cell = browser.find_element(By.CSS_SELECTOR, "#feature-table tbody tr:first-child td.score")
    assert cell.text == "0.90 ± 0.20 (distractor 0.02) chance"
    assert badges[0].rect["x"] + badges[0].rect["width"] <= cell.rect["x"] + cell.rect["width"]  # inside its cell
    links[0].click()  # the feature whose corpus holds a <script> token and whose explanation holds <img onerror>
    wait.until(expected_conditions.presence_of_element_located((By.ID, "current-explanation")))
    assert browser.find_element(By.ID, "chance-badge").is_displayed()
    assert browser.find_element(By.ID, "headline-score").text == (
        "correlation_top_and_random: 0.90 ± 0.20 (distractor 0.02) chance"
    )
    assert browser.execute_script("return window.__pwned === undefined")  # no injected script ran
    assert "<script>window.__pwned = 1</script>" in browser.find_element(By.CSS_SELECTOR, "table.windows").text
    assert "onerror" in browser.find_element(By.ID, "current-explanation").text  # shown as text, not markup
    tokens = browser.find_elements(By.CSS_SELECTOR, "table.windows .tok")
    assert tokens and tokens[1].get_attribute("title")  # hover shows the activation

    screenshot = tmp_path / "review-feature.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")

    reviewer = browser.find_element(By.ID, "reviewer")
    reviewer.clear()
    reviewer.send_keys("browser-test")
    browser.find_element(By.TAG_NAME, "body").click()
    browser.find_element(By.TAG_NAME, "body").send_keys("a")  # the accept shortcut
    wait.until(lambda d: ids["features"][1].replace("/", "%2F") in d.current_url)  # on to the next unreviewed

    rows = Store(path).query("SELECT * FROM reviews")
    assert len(rows) == 1
    assert rows[0]["verdict"] == "accept" and rows[0]["reviewer"] == "browser-test"
    assert rows[0]["explanation_id"] == ids["explanations"][ids["features"][0]]
    browser.get(base + "/?status=accepted")
    assert [link.text for link in browser.find_elements(By.CSS_SELECTOR, "a.feature-link")] == [ids["features"][0]]
    listing = tmp_path / "review-list.png"
    browser.save_screenshot(str(listing))
    print(f"screenshot: {listing}")
    Select(browser.find_element(By.ID, "filter-chance")).select_by_value("hide")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait.until(lambda d: "chance=hide" in d.current_url)
    assert "No features match" in browser.find_element(By.ID, "feature-table").text  # accepted, but chance-level


LONG_TEXT = "degenerate " * 5_000 + "y" * 45_000  # ~100 KB of model output, with one unbroken 45 KB word
BIDI_TEXT = "fires on names like \u202egnp.exe and\x00 after a NUL"

# Returns [x of the first character, x of the last character] of `word` where it is rendered inside
# `root`: first < last when the word reads left to right, first > last when a bidi override reversed it.
WORD_ORDER_JS = """
const [root, word] = arguments;
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const at = node.data.indexOf(word);
  if (at < 0) continue;
  const range = document.createRange();
  range.setStart(node, at); range.setEnd(node, at + 1);
  const first = range.getBoundingClientRect().x;
  range.setStart(node, at + word.length - 1); range.setEnd(node, at + word.length);
  return [first, range.getBoundingClientRect().x];
}
return null;
"""


def test_long_and_bidi_text_reads_well(
    review_db: tuple[Path, dict[str, Any]], serve: Callable[[ReviewSettings], str], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    path, ids = review_db
    long_feature, bidi_feature = ids["features"][1], ids["features"][2]
    with Store(path).transaction() as con:
        for feature, text in ((long_feature, LONG_TEXT), (bidi_feature, BIDI_TEXT)):
            con.execute("UPDATE explanations SET text = ? WHERE id = ?", [text, ids["explanations"][feature]])
    base = serve(ReviewSettings(db=path))

    browser.get(base + "/")
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width  # no sideways scroll
    rows = browser.find_elements(By.CSS_SELECTOR, "#feature-table tbody tr")
    assert len(rows) == 6
    for row in rows:
        status = row.find_element(By.CSS_SELECTOR, "td:last-child .status")
        score = row.find_elements(By.CSS_SELECTOR, "td.num")[1]
        assert status.is_displayed() and status.rect["x"] + status.rect["width"] <= width, row.text[:80]
        assert score.rect["x"] + score.rect["width"] <= width and score.text
        assert row.rect["height"] < 250, f"row of {row.rect['height']} px: {row.text[:80]}"
    bidi_cell = browser.find_element(By.XPATH, f"//tr[td/a[text()='{bidi_feature}']]/td[@class='explanation']")
    assert "⟨U+202E⟩gnp.exe and⟨U+0000⟩ after a NUL" in bidi_cell.text
    first, last = browser.execute_script(WORD_ORDER_JS, bidi_cell, "gnp.exe")
    assert first < last  # "gnp.exe" reads left to right: the override is shown, not obeyed
    control = browser.execute_script(
        "const s = document.createElement('span'); s.textContent = 'a \\u202egnp.exe';"
        "document.body.appendChild(s); return s;"
    )
    reversed_first, reversed_last = browser.execute_script(WORD_ORDER_JS, control, "gnp.exe")
    assert reversed_first > reversed_last  # the same measure sees a raw U+202E reverse the word
    browser.save_screenshot(str(tmp_path / "review-long-bidi-list.png"))
    print(f"screenshot: {tmp_path / 'review-long-bidi-list.png'}")

    browser.get(f"{base}/feature?id={long_feature}")
    box = browser.find_element(By.ID, "current-explanation")
    assert box.rect["height"] < 400 and box.rect["x"] + box.rect["width"] <= width
    assert browser.execute_script("return arguments[0].scrollHeight > arguments[0].clientHeight", box)  # it scrolls
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    assert browser.find_element(By.ID, "accept").is_displayed()  # the review buttons stay in reach
    browser.save_screenshot(str(tmp_path / "review-long-feature.png"))
    print(f"screenshot: {tmp_path / 'review-long-feature.png'}")

    browser.get(f"{base}/feature?id={bidi_feature}")
    explanation = browser.find_element(By.ID, "current-explanation")
    assert explanation.text == "fires on names like ⟨U+202E⟩gnp.exe and⟨U+0000⟩ after a NUL"
    first, last = browser.execute_script(WORD_ORDER_JS, explanation, "gnp.exe")
    assert first < last
    badge = explanation.find_element(By.CSS_SELECTOR, ".ctl")
    assert badge.get_attribute("title") == "RIGHT-TO-LEFT OVERRIDE"
    assert browser.find_element(By.ID, "control-warning").is_displayed()
    browser.save_screenshot(str(tmp_path / "review-bidi-feature.png"))
    print(f"screenshot: {tmp_path / 'review-bidi-feature.png'}")


def test_bulk_accept_and_undo_in_the_browser(
    review_db: tuple[Path, dict[str, Any]], serve: Callable[[ReviewSettings], str], browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    path, _ = review_db
    base = serve(ReviewSettings(db=path, reviewer="bulk-browser"))
    # the banner is re-rendered after each action: a lookup that races the re-render is tried again
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(base + "/?q=sentence&noted=0")
    browser.find_element(By.ID, "bulk-accept").click()
    banner = wait.until(expected_conditions.presence_of_element_located((By.ID, "bulk-banner")))
    assert "Accepted 5 features in bulk (by bulk-browser" in banner.text
    statuses = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#feature-table td:last-child .status")]
    assert statuses == ["accepted"] * 5
    browser.save_screenshot(str(tmp_path / "review-bulk.png"))
    print(f"screenshot: {tmp_path / 'review-bulk.png'}")
    browser.find_element(By.ID, "undo").click()
    wait.until(lambda d: "Undone: 5 of the 5 features" in d.find_element(By.ID, "bulk-banner").text)
    statuses = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#feature-table td:last-child .status")]
    assert statuses == ["unreviewed"] * 5
    verdicts = sorted(r["verdict"] for r in Store(path).query("SELECT verdict FROM reviews"))
    assert verdicts == ["accept"] * 5 + ["clear"] * 5
    assert {r["reviewer"] for r in Store(path).query("SELECT reviewer FROM reviews")} == {"bulk-browser"}
