"""The web page at ``/`` in headless Chromium against a live server: choose languages, type,
click, read, as a person would.

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
from selenium.webdriver.support.ui import Select, WebDriverWait

from mt.decode.options import DecodeOptions, Hypothesis
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
CHAR_LIMIT = 120


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


def open_page(browser, url: str) -> WebDriverWait:
    browser.get(f"{url}/?api_key={KEY}")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    return wait


def options(browser, select_id: str) -> list[tuple[str, str]]:
    return [(o.get_attribute("value"), o.text) for o in Select(browser.find_element(By.ID, select_id)).options]


def translate(browser, wait: WebDriverWait) -> None:
    """Click Translate and wait for the answer (the status names the time, or an error)."""
    status = browser.find_element(By.ID, "status")
    browser.execute_script("arguments[0].textContent = ''", status)
    browser.find_element(By.ID, "translate").click()
    wait.until(lambda d: status.text and status.text != "Translating…")


def type_text(browser, text: str) -> None:
    box = browser.find_element(By.ID, "source")
    box.clear()
    box.send_keys(text)


def test_type_click_and_read_the_translation(browser, tmp_path):
    """A real (random) model: the page shows exactly what it decodes."""
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
        wait = open_page(browser, url)
        assert options(browser, "source-lang") == [("auto", "Detect language"), ("de", "German")]
        Select(browser.find_element(By.ID, "source-lang")).select_by_visible_text("German")
        assert options(browser, "target-lang") == [("en", "English")]
        type_text(browser, source)
        translate(browser, wait)
        assert "error" not in (browser.find_element(By.ID, "status").get_attribute("class") or "")
        assert browser.find_element(By.ID, "target").text == expected.strip()

        # the key came from the page URL; without it the API refuses the browser
        browser.get(f"{url}/v1/models")
        assert "unauthorized" in browser.page_source


class Tagger:
    """Translator double: ``"de>en: TEXT"`` (line breaks kept); n-best hypothesis ``i`` adds ``" #i"``."""

    def __init__(self, text, src: str, tgt: str) -> None:
        self.text, self.meta = text, {"src_lang": src, "tgt_lang": tgt}

    def translate_batch(self, texts, opts):
        tag = f"{self.meta['src_lang']}>{self.meta['tgt_lang']}: "
        return [[Hypothesis(tag + t.upper() + (f" #{i}" if i else ""), [], -1.0 - i) for i in range(opts.n_best)]
                for t in texts]


@pytest.fixture(scope="module")
def languages_server(tmp_path_factory):
    text = load_model(make_random_model_dir(tmp_path_factory.mktemp("tiny"))).text
    models = {f"{s}-{t}": Tagger(text, s, t) for s, t in (("de", "en"), ("fr", "en"), ("en", "de"))}
    settings = ServerSettings(api_key=KEY, max_chars=CHAR_LIMIT, max_tokens_per_text=200, threads=1)
    with LiveServer(create_app(models, settings)) as url:
        yield url


def test_languages_swap_and_auto_detection(browser, languages_server):
    wait = open_page(browser, languages_server)
    # language names, not model names; "Detect language" first
    assert options(browser, "source-lang") == [("auto", "Detect language"), ("en", "English"), ("fr", "French"),
                                               ("de", "German")]
    assert options(browser, "target-lang") == [("en", "English"), ("de", "German")]
    source = Select(browser.find_element(By.ID, "source-lang"))
    target = Select(browser.find_element(By.ID, "target-lang"))
    source.select_by_value("de")
    assert options(browser, "target-lang") == [("en", "English")]
    type_text(browser, "Ein Mann mit Hut.")
    translate(browser, wait)
    assert browser.find_element(By.ID, "target").text == "de>en: EIN MANN MIT HUT."

    # swap: English -> German, and the translation becomes the text
    browser.find_element(By.ID, "swap").click()
    assert (source.first_selected_option.get_attribute("value"),
            target.first_selected_option.get_attribute("value")) == ("en", "de")
    assert browser.find_element(By.ID, "source").get_attribute("value") == "de>en: EIN MANN MIT HUT."
    assert browser.find_element(By.ID, "target").text == ""
    # no fr-de model: from French, swapping is not offered
    source.select_by_value("fr")
    assert not browser.find_element(By.ID, "swap").is_enabled()

    # auto: the detected language is shown, and chosen the model
    source.select_by_value("auto")
    target.select_by_value("en")
    french = "Un homme avec un chapeau orange regardant quelque chose."
    type_text(browser, french)
    translate(browser, wait)
    assert browser.find_element(By.ID, "target").text == "fr>en: " + french.upper()
    detected = browser.find_element(By.ID, "detected").text
    assert detected.startswith("Detected: French (") and detected.endswith("%)"), detected
    assert browser.find_element(By.ID, "swap").is_enabled() is False  # no en-fr model


def test_paragraphs_copy_count_alternatives_and_errors(browser, languages_server):
    wait = open_page(browser, languages_server)
    Select(browser.find_element(By.ID, "source-lang")).select_by_value("de")
    count = browser.find_element(By.ID, "count")
    assert count.text == f"0 / {CHAR_LIMIT} characters"  # the limit comes from the server
    two_paragraphs = "Ein Mann mit Hut.\nEine Frau liest."
    type_text(browser, two_paragraphs)
    assert count.text == f"{len(two_paragraphs)} / {CHAR_LIMIT} characters"

    # two paragraphs in, two out: the line break survives and is rendered
    translate(browser, wait)
    shown = browser.find_element(By.ID, "target").text
    lines = shown.split("\n")
    assert len(lines) == 2 and "EIN MANN MIT HUT." in lines[0] and "EINE FRAU LIEST." in lines[1], shown

    # copy
    copy = browser.find_element(By.ID, "copy")
    assert copy.text == "Copy" and copy.is_enabled()
    copy.click()
    wait.until(lambda d: d.find_element(By.ID, "status").text == "Copied.")

    # alternatives appear on click (the n-best of the same model), and hide on a second click
    type_text(browser, "Hallo Welt")
    translate(browser, wait)
    button = browser.find_element(By.ID, "show-alternatives")
    button.click()
    items = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alternatives li"))
    assert [li.text for li in items] == ["de>en: HALLO WELT #1", "de>en: HALLO WELT #2", "de>en: HALLO WELT #3"]
    assert button.get_attribute("aria-expanded") == "true"
    button.click()
    assert not browser.find_element(By.ID, "alternatives").is_displayed()

    # over the limit: the count says so, and the server's message is shown as an error
    type_text(browser, "Ein sehr langer Satz. " * 6)
    assert "over the limit" in count.text and "over" in count.get_attribute("class")
    translate(browser, wait)
    status = browser.find_element(By.ID, "status")
    assert "error" in status.get_attribute("class") and f"at most {CHAR_LIMIT} characters" in status.text, status.text
    assert browser.find_element(By.ID, "target").text == ""  # no old translation next to the new text


def test_network_failure_is_a_clear_message(browser, tmp_path):
    text = load_model(make_random_model_dir(tmp_path / "tiny")).text
    with LiveServer(create_app({"de-en": Tagger(text, "de", "en")}, ServerSettings(api_key=KEY, threads=1))) as url:
        wait = open_page(browser, url)
    type_text(browser, "Hallo")  # the server is gone now
    translate(browser, wait)
    status = browser.find_element(By.ID, "status")
    assert status.text.startswith("Cannot reach the server") and "error" in status.get_attribute("class")
