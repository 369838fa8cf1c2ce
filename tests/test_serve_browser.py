"""The search page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium offline) loads the page, uploads a picture, sees the
result thumbnails, clicks one to search from it, and leaves a screenshot in the test's tmp dir.

Skipped only when Chromium is not installed and cannot be (`make test` installs it when run
as root); in CI as root a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time

import pytest
from serve_fixtures import *  # noqa: F401,F403 - the run fixtures

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


def _find(names) -> str | None:
    for n in names:
        p = shutil.which(n) or (f"/usr/lib/chromium/{n}" if os.path.exists(f"/usr/lib/chromium/{n}") else None)
        if p:
            return p
    return None


def browser_or_skip() -> tuple[str, str]:
    pytest.importorskip("selenium")
    browser, driver = _find(BROWSERS), _find(DRIVERS)
    if browser and driver:
        return browser, driver
    why = ("Chromium/chromedriver not installed (apt-get install chromium chromium-driver; "
           "`make test` installs them when run as root)")
    if os.environ.get("CI") and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.fail(f"in CI as root the browser must be installed: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(fresh_pic_run):
    import uvicorn

    from lagnh_pyg.serve import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(fresh_pic_run), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", fresh_pic_run
    server.should_exit = True
    t.join(10)


def test_page_upload_results_and_click(live_server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from lagnh_pyg.collection import Collection

    browser, driver_path = browser_or_skip()
    url, run = live_server
    coll = Collection(run)
    row = int(coll.dataset.split("database")[2])
    item, picture = coll.dataset.ids[row], coll.dataset.paths[row]

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for f in FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    opts.add_argument(f"--user-data-dir={profile}")
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        wait = WebDriverWait(drv, 60)
        drv.get(url + "/")
        wait.until(lambda d: "items" in d.find_element(By.ID, "info").text)
        assert "resnet18" not in drv.find_element(By.ID, "info").text  # method, bits, items
        drv.find_element(By.ID, "k").clear()
        drv.find_element(By.ID, "k").send_keys("12")
        drv.find_element(By.ID, "file").send_keys(picture)  # the drop zone's file chooser

        def thumbnails_loaded(d):
            imgs = d.find_elements(By.CSS_SELECTOR, "#results .tile img")
            ok = len(imgs) == 12 and all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                                         for i in imgs)
            return imgs if ok else False

        wait.until(thumbnails_loaded)
        tiles = drv.find_elements(By.CSS_SELECTOR, "#results .tile")
        assert tiles[0].get_attribute("data-distance") == "0"
        assert item in [t.get_attribute("data-id") for t in tiles if t.get_attribute("data-distance") == "0"]
        assert "results of" in drv.find_element(By.ID, "status").text
        drv.save_screenshot(str(tmp_path / "upload.png"))
        # click the last result: the page searches from it
        target = tiles[-1].get_attribute("data-id")
        tiles[-1].click()
        wait.until(lambda d: target in d.find_element(By.ID, "query").text)
        wait.until(thumbnails_loaded)
        first = drv.find_elements(By.CSS_SELECTOR, "#results .tile")[0]
        assert first.get_attribute("data-distance") == "0"
        shot = tmp_path / "screenshot.png"
        drv.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshots: {tmp_path / 'upload.png'} {shot}")
    finally:
        drv.quit()
