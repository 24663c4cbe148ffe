"""Screenshots of the web UI in headless Chromium (laptop and tablet windows) for docs/.

Starts ``dermino serve`` on 127.0.0.1, uploads IMAGE through the file input like a user,
waits until every panel has rendered and saves full-page PNGs.

    python benchmarks/serve_screenshots.py --classifier DIR --index DIR [--segmenter DIR] \
        --image ham10000/images/ISIC_0024318.jpg --out docs
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SIZES = {"serve_ui.png": (1280, 900), "serve_ui_tablet.png": (820, 1180)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--index")
    ap.add_argument("--segmenter")
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "dermino.cli", "serve", "--classifier", args.classifier, "--port", str(port)]
    cmd += ["--index", args.index] if args.index else []
    cmd += ["--segmenter", args.segmenter] if args.segmenter else []
    server = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        for name, (w, h) in SIZES.items():
            with tempfile.TemporaryDirectory() as profile:
                opts = Options()
                opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
                for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run",
                            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={w},{h}"):
                    opts.add_argument(arg)
                driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
                try:
                    driver.get(url)
                    WebDriverWait(driver, 60).until(lambda d: "reference cases" in d.find_element(By.ID, "model-info").text)
                    driver.find_element(By.ID, "file").send_keys(str(Path(args.image).resolve()))
                    WebDriverWait(driver, 120).until(
                        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
                    height = driver.execute_script("return document.documentElement.scrollHeight")
                    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": w, "height": max(h, height), "deviceScaleFactor": 1, "mobile": False})
                    time.sleep(0.5)
                    out = Path(args.out) / name
                    driver.save_screenshot(str(out))
                    print(out)
                finally:
                    driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
