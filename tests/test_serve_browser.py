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
from serve_fixtures import SHAPES

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


def _driver(browser: str, driver_path: str, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-profile-', dir=tmp_path)}")
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def test_page_gallery_tags_notes_ties_and_keyboard(live_server, tmp_path):
    """The collection on load (paged, with tags), keyboard search from a tile, the featurizing
    notes, the id box after an upload, the same file chosen twice, and the query's own item
    first among the items tied with it."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from lagnh_pyg.collection import Collection

    browser, driver_path = browser_or_skip()
    url, run = live_server
    coll = Collection(run)
    db = coll.dataset.split("database")
    first_id, picture = coll.dataset.ids[db[0]], coll.dataset.paths[db[3]]
    # a twin of the first database item (same code, later in the index): ties with it at d=0
    code = coll.code_of(first_id).tobytes().hex()
    r = httpx.post(url + "/api/items", json={"items": [{"id": "twin", "code": code, "tags": ["copy"]}]}, timeout=30,
                   headers={"X-Requested-With": "lagnh"})
    assert r.status_code == 200, r.text
    drv = _driver(browser, driver_path, tmp_path)
    try:
        wait = WebDriverWait(drv, 60)
        drv.get(url + "/")
        # 1. the collection, before any search: a page of tiles with their tags
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .tile")) == len(coll) + 1)
        assert "items 1–" in drv.find_element(By.ID, "pageinfo").text and drv.find_element(By.ID, "prev").get_attribute("disabled")
        tiles = drv.find_elements(By.CSS_SELECTOR, "#gallery .tile")
        assert tiles[0].get_attribute("data-id") == first_id
        colour = first_id.split("/")[1].split("_")[0]
        assert f"tags: {colour}" in tiles[0].text or f"tags: {SHAPES[colour]}" in tiles[0].text
        assert "tags: copy" in tiles[-1].text and tiles[-1].get_attribute("data-id") == "twin"
        assert "(1 added)" in drv.find_element(By.ID, "info").text
        # 2. from the keyboard: Enter on a focused tile searches from it
        tiles[1].send_keys(Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .tile")) > 0)
        assert drv.find_element(By.ID, "itemid").get_attribute("value") == tiles[1].get_attribute("data-id")
        assert drv.find_element(By.ID, "gallery").is_displayed() is False
        first = drv.find_elements(By.CSS_SELECTOR, "#results .tile")[0]
        assert first.get_attribute("data-id") == drv.find_element(By.ID, "itemid").get_attribute("value")
        # 3. the query's own item first among those tied with it (typed, then Enter)
        box = drv.find_element(By.ID, "itemid")
        box.clear()
        box.send_keys("twin", Keys.ENTER)
        wait.until(lambda d: "twin" in d.find_element(By.ID, "query").text)
        res = drv.find_elements(By.CSS_SELECTOR, "#results .tile")
        assert res[0].get_attribute("data-id") == "twin" and res[0].get_attribute("data-distance") == "0"
        assert first_id in [t.get_attribute("data-id") for t in res if t.get_attribute("data-distance") == "0"]
        # 4. an upload: the id box clears, the notes reach the page
        drv.find_element(By.ID, "file").send_keys(picture)
        wait.until(lambda d: "aux = zeros" in d.find_element(By.ID, "notes").text)
        assert "no --tags given" in drv.find_element(By.ID, "notes").text
        assert drv.find_element(By.ID, "itemid").get_attribute("value") == ""
        # 5. the same file again is searched again
        drv.execute_script("document.getElementById('results').replaceChildren();"
                           "document.getElementById('notes').replaceChildren();")
        drv.find_element(By.ID, "file").send_keys(picture)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .tile")) > 0)
        wait.until(lambda d: "aux = zeros" in d.find_element(By.ID, "notes").text)
        # unknown tags are reported too
        drv.find_element(By.ID, "tags").send_keys("red;bogus")
        drv.find_element(By.ID, "file").send_keys(picture)
        wait.until(lambda d: "bogus" in d.find_element(By.ID, "notes").text)
        # 6. back to the collection, by keyboard
        drv.find_element(By.ID, "showall").send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_element(By.ID, "gallery").is_displayed())
        assert not drv.find_elements(By.CSS_SELECTOR, "#results .tile")
        drv.save_screenshot(str(tmp_path / "gallery.png"))
    finally:
        drv.quit()
