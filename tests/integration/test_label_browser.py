"""The rater and admin pages in a real headless browser (Debian's chromium through selenium and chromedriver),
against `preftune label serve` in a subprocess on a free 127.0.0.1 port: a rater labels three pairs with the
keyboard only, the labels stored are the keys pressed, the admin page then shows them, and a prompt and a
response holding `<script>` and an `<img onerror>` are shown as text on both pages (had the markup run,
<html> would carry data-pwned).

chromium or chromedriver missing: SKIP locally, FAIL in CI (CI=true), because CI installs them with
scripts/install_browser.sh. PREFTUNE_UPDATE_SCREENSHOT=1 writes docs/label_screenshot.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from label_support import REPO, XSS, make_project, start_server, stop_server
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from preftune.label.export import export_rows
from preftune.label.store import make_engine, sessions


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    driver_exe = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if chromium is None or driver_exe is None:
        reason = "chromium / chromedriver are not installed (run scripts/install_browser.sh)"
        if _in_ci():
            pytest.fail(f"{reason}; CI must install them")
        pytest.skip(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_exe), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_state(driver, state: str, timeout: float = 30) -> None:
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                         in (state, "error"))
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == state, \
        driver.find_element(By.ID, "error").text


def _not_pwned(driver) -> None:
    assert driver.execute_script("return document.documentElement.dataset.pwned === undefined")
    assert driver.execute_script("return document.querySelectorAll('main img, table img').length") == 0


def _press(driver, *keys: str) -> None:
    webdriver.ActionChains(driver).send_keys(*keys).perform()


def test_rater_labels_three_pairs_by_keyboard_and_admin_sees_them(browser, tmp_path):
    db, tokens, admin = make_project(tmp_path, num_pairs=3, raters=("alice",), per_pair=1, xss_first=True)
    proc, url = start_server(db)
    try:
        browser.get(f"{url}/#token={tokens['alice']}")
        _wait_state(browser, "ready")
        assert "token" not in browser.current_url  # the fragment is dropped once read
        pressed = []
        for key, why in (("1", ""), ("4", "shorter and still right"), ("3", "")):
            assignment = browser.find_element(By.ID, "task").get_attribute("data-assignment")
            prompt = browser.find_element(By.ID, "prompt").text
            if prompt.startswith("Say hello"):  # the pair with markup: shown as the text it is
                assert prompt == f"Say hello {XSS}"
                shown = {browser.find_element(By.ID, i).text for i in ("response-a", "response-b")}
                assert f"Red 0. {XSS}" in shown
                _not_pwned(browser)
            if key == "4" and os.environ.get("PREFTUNE_UPDATE_SCREENSHOT"):
                browser.find_element(By.CSS_SELECTOR, "#rubric input[value='b']").click()
                browser.save_screenshot(str(REPO / "docs" / "label_screenshot.png"))
            _press(browser, key)
            assert "selected" in browser.find_element(By.CSS_SELECTOR, f"#choices button:nth-child({key})") \
                .get_attribute("class")
            if why:
                browser.find_element(By.ID, "why").click()
                _press(browser, why, "1")  # typed into the box: "1" is text there, not a shortcut
                webdriver.ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL) \
                    .perform()
            else:
                _press(browser, Keys.ENTER)
            WebDriverWait(browser, 30).until(
                lambda d, a=assignment: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
                or d.find_element(By.ID, "task").get_attribute("data-assignment") != a)
            pressed.append((key, why))
        _wait_state(browser, "done")
        assert browser.find_element(By.ID, "progress").text == "3 labelled, about 0 left"

        engine = make_engine(str(db))
        with sessions(engine)() as s:
            rows = export_rows(s)
        engine.dispose()
        keys = {"1": "a_much_better", "4": "b_better", "3": "tie"}
        assert [r["choice"] for r in rows] == [keys[k] for k, _ in pressed]
        assert [r.get("rationale", "") for r in rows] == ["", "shorter and still right1", ""]

        browser.get(f"{url}/admin#token={admin}")
        _wait_state(browser, "ready")
        cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#raters tbody tr:first-child td")]
        assert cells[:3] == ["alice", "3", "0"]
        recent = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                  for tr in browser.find_elements(By.CSS_SELECTOR, "#recent tbody tr")]
        assert [r[3] for r in recent] == ["tie", "b_better", "a_much_better"]  # newest first
        assert any(r[2] == f"Say hello {XSS}" for r in recent)
        assert "3 labels on 3 pairs" in browser.find_element(By.ID, "totals").text
        _not_pwned(browser)
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert logs == [], logs
    finally:
        stop_server(proc)
