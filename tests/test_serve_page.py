"""The service's web page (``serve/page/index.html``) end to end in headless Chromium.

Selenium drives Debian's ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``
(never Selenium Manager: nothing is downloaded). ``serve_url`` (tests/conftest.py)
is a running service with the shipped model. The page marks its progress on
``<body data-state>``: idle, working, done or error.
"""

from __future__ import annotations

import json
import random
import shutil
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver)", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(300)

TRANSLATE_WAIT_S = 150  # a little over the service's request_timeout_s


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    drv.set_script_timeout(30)
    yield drv
    drv.quit()


@pytest.fixture
def page(driver, serve_url):
    """The page freshly loaded, its target list filled; the browser log emptied first."""
    driver.get_log("browser")
    driver.get(serve_url + "/")
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error"
        or len(Select(d.find_element(By.ID, "target")).options) > 0
    )
    assert _state(driver) == "idle", driver.find_element(By.ID, "error").text
    return driver


@pytest.fixture(scope="module")
def bach_musicxml(tmp_path_factory):
    from music21 import corpus

    path = tmp_path_factory.mktemp("page") / "bwv66.musicxml"
    corpus.parse("bach/bwv66.6").write("musicxml", fp=path)
    return path


def _state(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def _translate(driver, path, target: str, expect: str = "done") -> None:
    """Choose the file and target, press Translate, wait until the page is done or failed."""
    driver.find_element(By.ID, "file").send_keys(str(path))
    Select(driver.find_element(By.ID, "target")).select_by_value(target)
    button = driver.find_element(By.ID, "translate")
    assert button.is_enabled()
    button.click()
    WebDriverWait(driver, TRANSLATE_WAIT_S).until(lambda d: _state(d) in ("done", "error"))
    state = _state(driver)
    assert state == expect, f"{state}: {driver.find_element(By.ID, 'error').text!r} / {driver.find_element(By.ID, 'status').text!r}"


def _download_head(driver, n: int = 8) -> bytes:
    """The first bytes behind the download link (a blob: URL, read inside the page)."""
    head = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('download').href).then(r => r.arrayBuffer())"
        f".then(b => done(Array.from(new Uint8Array(b.slice(0, {n}))))).catch(e => done(String(e)));"
    )
    assert isinstance(head, list), head
    return bytes(head)


def test_page_loads_targets_from_directions(page, serve_url):
    with urllib.request.urlopen(serve_url + "/v1/directions", timeout=30) as resp:
        targets = json.load(resp)["targets"]
    options = [o.get_attribute("value") for o in Select(page.find_element(By.ID, "target")).options]
    assert options == targets
    assert page.find_element(By.ID, "translate").get_attribute("disabled") is not None  # no file yet
    assert page.find_element(By.ID, "error").text == ""
    severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_drop_zone_takes_a_file(page):
    """A file dropped on the zone becomes the upload (a synthetic DataTransfer drop)."""
    page.execute_script(
        "const dt = new DataTransfer();"
        "dt.items.add(new File(['<score-partwise/>'], 'dropped.musicxml', {type: 'application/xml'}));"
        "document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
    )
    assert page.execute_script("return document.getElementById('file').files[0].name") == "dropped.musicxml"
    assert "dropped.musicxml" in page.find_element(By.ID, "filename").text
    assert page.find_element(By.ID, "translate").is_enabled()


def test_musicxml_to_midi_draws_roll_plays_and_downloads(page, bach_musicxml):
    _translate(page, bach_musicxml, "midi")
    assert "hops" in page.find_element(By.ID, "status").text

    # The roll has notes drawn: saturated pixels (axes, grid and labels are grey).
    coloured = page.execute_script(
        "const c = document.getElementById('pianoroll');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0;"
        "for (let i = 0; i < d.length; i += 4) {"
        "  if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 60) n++; }"
        "return n;"
    )
    assert coloured > 500, coloured

    # The rendering plays: a blob source whose metadata gives a duration.
    assert page.find_element(By.ID, "player").get_attribute("src").startswith("blob:")
    WebDriverWait(page, 30).until(
        lambda d: d.execute_script("const p = document.getElementById('player'); return p.readyState >= 1 && isFinite(p.duration) && p.duration > 0")
    )
    assert page.execute_script("return document.getElementById('player').duration") > 1.0

    link = page.find_element(By.ID, "download")
    assert link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download").endswith(".mid")
    assert _download_head(page, 4) == b"MThd"


@pytest.mark.parametrize("target", ["musicxml", "lmx"])
def test_musicxml_to_score_shows_engraved_svg(page, bach_musicxml, target):
    _translate(page, bach_musicxml, target)
    svgs = page.find_elements(By.CSS_SELECTOR, "#score svg")
    assert svgs, "no engraved page"
    assert page.execute_script("return document.querySelectorAll('#score svg path, #score svg use').length") > 0
    # The page is scaled to fit, and drawn at a real size.
    assert svgs[0].size["width"] > 100 and svgs[0].size["height"] > 50
    link = page.find_element(By.ID, "download")
    assert link.get_attribute("download").endswith(f".{target}")
    tokens = page.find_element(By.ID, "tokens")
    if target == "lmx":
        assert tokens.is_displayed() and len(tokens.text.split()) > 50
    else:
        assert not tokens.is_displayed()


def test_unsupported_upload_shows_the_error(page, tmp_path):
    rng = random.Random(0)
    words = ["sonata", "quiet", "river", "paper", "violin", "seven", "lantern", "orange", "measure"]
    path = tmp_path / "notes.docx"
    path.write_text(" ".join(rng.choice(words) for _ in range(300)))
    _translate(page, path, "midi", expect="error")
    error = page.find_element(By.ID, "error").text
    assert "415" in error or "unsupported" in error.lower(), error
    assert "request id" in error
    assert not page.find_element(By.ID, "result").is_displayed()
