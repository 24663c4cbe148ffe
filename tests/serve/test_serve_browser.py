"""End to end in a real browser: headless Chromium uploads a HAM10000 image to the running server.

uvicorn serves the app on 127.0.0.1 (a free port) in a thread; Selenium drives Debian's
chromium through chromedriver. Checks that the diagnoses, the attention overlay, the
lesion mask and the similar cases render, and that the research-tool note is visible.
"""

from __future__ import annotations

import pytest

from _net import CHROMEDRIVER, CHROMIUM, chromium, serve_in_thread
from _serve_fixtures import ham_images
from dermino.serve.app import create_app
from dermino.serve.service import Service

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (apt-get install ...)"
)
pytest.importorskip("selenium.webdriver")


@pytest.fixture(scope="module")
def server(service_parts):
    clf, index, segmenter, _ = service_parts
    app = create_app(Service(clf, index, segmenter))
    with serve_in_thread(app) as url:
        yield url


def upload_and_wait(driver, url: str, image) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(EC.text_to_be_present_in_element((By.ID, "model-info"), "reference cases"))
    driver.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (820, 1180)], ids=["laptop", "tablet"])
def test_upload_renders_every_panel(server, tmp_path, width, height):
    from selenium.webdriver.common.by import By

    driver = chromium(tmp_path, width, height)
    try:
        upload_and_wait(driver, server, ham_images(1)[0])
        assert "not a medical device" in driver.find_element(By.ID, "disclaimer").text
        assert driver.find_element(By.ID, "disclaimer").is_displayed()
        rows = driver.find_elements(By.CSS_SELECTOR, "[data-testid=diagnoses] li")
        assert len(rows) == 5 and all("%" in r.text for r in rows)
        for testid in ("attention", "mask"):
            img = driver.find_element(By.CSS_SELECTOR, f"img[data-testid={testid}]")
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 200
        cases = driver.find_elements(By.CSS_SELECTOR, "[data-testid=similar] figure")
        assert len(cases) == 6 and "similarity" in cases[0].text
        assert not driver.find_elements(By.CSS_SELECTOR, ".error")
        # nothing overflows sideways at this window size
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        driver.quit()


def test_bad_file_shows_the_servers_reason(server, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a PNG")
    driver = chromium(tmp_path, 1280, 900)
    try:
        upload_and_wait(driver, server, bad)
        errors = driver.find_elements(By.CSS_SELECTOR, ".error")
        assert errors and any("422" in e.text and "notes.png" in e.text for e in errors)
    finally:
        driver.quit()
