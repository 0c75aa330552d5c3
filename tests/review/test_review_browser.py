"""The review app in a real headless Chromium (Debian's chromium + chromedriver; nothing downloaded)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autointerp.review import ReviewSettings
from autointerp.store import Store

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
    from selenium.webdriver.support.ui import WebDriverWait

    path, ids = review_db
    base = serve(ReviewSettings(db=path, reviewer="browser-test"))
    wait = WebDriverWait(browser, 15)

    browser.get(base + "/")
    links = browser.find_elements(By.CSS_SELECTOR, "a.feature-link")
    assert [link.text for link in links] == ids["features"]
    links[0].click()  # the feature whose corpus holds a <script> token and whose explanation holds <img onerror>
    wait.until(expected_conditions.presence_of_element_located((By.ID, "current-explanation")))
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
