"""End to end in headless Chromium: two readers complete both rounds of a 4-case study; answers are stored.

Set ``DERMINO_STUDY_SCREENSHOTS=DIR`` to keep screenshots of round 1, round 2 and the admin
analysis page (how docs/study_*.png were made).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _net import CHROMEDRIVER, CHROMIUM, chromium, serve_in_thread
from _study_fixtures import make_study
from dermino.study.app import create_study_app
from dermino.study.store import StudyStore

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (apt-get install ...)"
)
pytest.importorskip("selenium.webdriver")
SHOTS = os.environ.get("DERMINO_STUDY_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    made = make_study(tmp_path_factory.mktemp("study"), n_cases=4)
    store = StudyStore(made.folder)
    with serve_in_thread(create_study_app(store)) as url:
        yield url, made, store


def _wait_state(driver, *states: str, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in states)
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def _shot(driver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))


def _answer(driver, k: int, comment: str = "") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    select = Select(driver.find_element(By.ID, "diagnosis"))
    select.select_by_index(1 + k % (len(select.options) - 1))
    driver.find_elements(By.CSS_SELECTOR, "input[name=confidence]")[k % 5].click()
    if comment:
        driver.find_element(By.ID, "comment").send_keys(comment)
    title = driver.find_element(By.ID, "case-title").text
    driver.find_element(By.ID, "submit").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "case-title").text != title
                                    or d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "finished")


def test_two_readers_complete_both_rounds(server, tmp_path):
    from selenium.webdriver.common.by import By

    url, made, store = server
    driver = chromium(tmp_path, 1280, 1000)
    try:
        for who in ("alice", "bob"):
            driver.get(f"{url}/study/reader.html#token={made.reader_tokens[who]}")
            driver.refresh()  # a new fragment alone does not reload the page
            assert _wait_state(driver, "round1") == "round1"
            assert who in driver.find_element(By.ID, "study-name").text
            for k in range(4):
                assert _wait_state(driver, "round1", "round2") == "round1"
                assert all(not driver.find_element(By.ID, i).is_displayed() for i in ("ai-top", "ai-similar"))
                img = driver.find_element(By.ID, "case-image")
                assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
                if who == "alice" and k == 1:
                    _shot(driver, "study_round1.png")
                _answer(driver, k, comment="irregular network" if k == 0 else "")
            assert _wait_state(driver, "round2") == "round2"
            for k in range(4):
                _wait_state(driver, "round2")
                rows = driver.find_elements(By.CSS_SELECTOR, "[data-testid=diagnoses] li")
                assert len(rows) == 3 and all("%" in r.text for r in rows)
                ov = driver.find_element(By.CSS_SELECTOR, "img[data-testid=attention]")
                assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", ov) > 0
                assert driver.find_elements(By.CSS_SELECTOR, "[data-testid=similar] figure")
                assert "4/4" in driver.find_element(By.CSS_SELECTOR, "[data-testid=progress-1]").text
                if who == "alice" and k == 0:
                    _shot(driver, "study_round2.png")
                _answer(driver, k + 2)
            assert _wait_state(driver, "finished") == "finished"
            assert not driver.find_elements(By.CSS_SELECTOR, ".error")
            # the last case and its form are gone (the shared grid style once kept them on screen)
            assert not driver.find_element(By.ID, "case").is_displayed()
            assert not driver.find_element(By.ID, "submit").is_displayed()
        df = store.answers_frame()
        assert len(df) == 2 * 2 * 4 and set(df["reader"]) == {"alice", "bob"}
        assert (df.groupby(["reader", "round"])["case_id"].nunique() == 4).all()
        assert df["diagnosis"].isin(store.labels).all() and df["confidence"].between(1, 5).all()
        assert (df["seconds"] > 0).all() and "irregular network" in set(df["comment"])
        # the admin page shows the analysis
        driver.get(f"{url}/study/admin.html#token={made.admin_token}")
        assert _wait_state(driver, "done", "error") == "done"
        assert len(driver.find_elements(By.CSS_SELECTOR, "[data-testid=per-reader] tr")) == 3
        assert "Wilcoxon" in driver.find_element(By.CSS_SELECTOR, "[data-testid=summary]").text
        assert "Final" in driver.find_element(By.CSS_SELECTOR, "[data-testid=analysis-status]").text
        _shot(driver, "study_admin.png")
    finally:
        driver.quit()
