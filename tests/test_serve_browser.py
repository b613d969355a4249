"""The web page at ``/`` in headless Chromium against a live server: type, click, read.

Needs Debian's ``chromium`` + ``chromium-driver`` and ``selenium`` (pip); skipped with the
reason when they are missing.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
import torch
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mt.decode.options import DecodeOptions
from mt.decode.translator import Translator
from mt.modelio import load_model
from serve.app import create_app
from serve.settings import ServerSettings
from _serve_support import LiveServer, make_random_model_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or shutil.which(CHROMEDRIVER) is None,
    reason="no headless browser: apt-get install -y chromium chromium-driver",
)
KEY = "browser-key"


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="mt-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    # the explicit driver path keeps Selenium Manager from trying to download one
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_type_click_and_read_the_translation(browser, tmp_path):
    tiny = load_model(make_random_model_dir(tmp_path / "model", preset="tiny", seed=5))
    app = create_app({"de-en": tiny}, ServerSettings(api_key=KEY, decode={"beam": 3}, threads=1))
    source = "Hallo Welt, wie geht es dir?"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # what the server decodes with: the model dir's defaults (none stored: DecodeOptions()), --beam 3
        expected = Translator.from_loaded(tiny, DecodeOptions(beam=3), workers=1).translate_batch([source])[0][0].text
    finally:
        torch.set_num_threads(before)
    assert expected.strip(), "the random model should produce some output for this check to mean anything"
    with LiveServer(app) as url:
        browser.get(f"{url}/?api_key={KEY}")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        options = browser.find_elements(By.CSS_SELECTOR, "#model option")
        assert [o.get_attribute("value") for o in options] == ["de-en"]
        beam = browser.find_element(By.ID, "beam")
        beam.clear()
        beam.send_keys("3")
        browser.find_element(By.ID, "source").send_keys(source)
        browser.find_element(By.ID, "translate").click()
        wait.until(lambda d: "ms" in d.find_element(By.ID, "status").text)
        assert browser.find_element(By.ID, "target").text == expected.strip()
        assert "error" not in (browser.find_element(By.ID, "status").get_attribute("class") or "")

        # the key came from the page URL; without it the API refuses the browser
        browser.get(f"{url}/v1/models")
        assert "unauthorized" in browser.page_source
