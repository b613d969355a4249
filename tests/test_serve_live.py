"""The server on a real socket (uvicorn on 127.0.0.1): concurrency, streaming limits, the
LibreTranslate client, liveness during long decodes, and ``mt serve`` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from mt.decode.options import DecodeOptions
from mt.decode.translator import Translator
from mt.modelio import load_model
from serve.app import create_app
from serve.settings import ServerSettings
from _serve_support import LiveServer, Sleeper, free_port, make_random_model_dir, synthetic_sentences, wait_ready

KEY = "live-test-key"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Reference decodes in this thread use 1 torch thread (as the server's worker does):
    on a busy 2-core CI machine spinning OpenMP threads make small decodes ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_random_model_dir(tmp_path_factory.mktemp("tiny") / "model", preset="tiny", seed=3)


@pytest.fixture(scope="module")
def tiny(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def reference(tiny):
    """A Translator decoding exactly as the server's engine does (same loader, same defaults)."""
    return Translator.from_loaded(tiny, DecodeOptions(), workers=1)


@pytest.fixture(scope="module")
def live(tiny):
    app = create_app({"de-en": tiny}, ServerSettings(max_wait_ms=30, max_body_bytes=64 * 1024, api_key=KEY, threads=1))
    with LiveServer(app) as url:
        yield url


AUTH = {"X-API-Key": KEY}


def test_concurrent_clients_each_get_their_own_translation(live, reference):
    texts = synthetic_sentences(24, seed=11)
    opts = DecodeOptions(beam=4, alpha=1.0, max_len_a=0.0, max_len_b=12)
    alone = [reference.translate_batch([t], opts)[0][0] for t in texts]
    barrier = threading.Barrier(len(texts))

    def client(text: str) -> dict:
        with httpx.Client(base_url=live, headers=AUTH, timeout=60) as c:
            barrier.wait()  # all requests in flight together, so the server must batch them
            r = c.post("/v1/translate", json={"texts": [text], "beam_size": 4, "max_length": 12})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(len(texts)) as pool:
        replies = list(pool.map(client, texts))
    for text, ref, reply in zip(texts, alone, replies):
        got = reply["translations"][0]
        assert got["text"] == ref.text, text
        assert got["score"] == pytest.approx(ref.score, abs=1e-3)
    assert max(r["timings"]["batch_requests"] for r in replies) > 1, "requests were not batched"


def test_multi_text_request_keeps_order(live, reference):
    texts = synthetic_sentences(6, seed=5)
    opts = DecodeOptions(beam=2, alpha=1.0, max_len_a=0.0, max_len_b=8)
    ref = [h[0].text for h in reference.translate_batch(texts, opts)]
    r = httpx.post(live + "/v1/translate", headers=AUTH,
                   json={"texts": texts, "beam_size": 2, "max_length": 8}, timeout=60)
    assert [t["text"] for t in r.json()["translations"]] == ref


def test_streamed_body_over_the_limit_is_413_and_server_keeps_serving(live):
    def chunks():
        for _ in range(10):
            yield b"x" * 8192  # 80 KiB, no Content-Length: counted while it streams

    r = httpx.post(live + "/v1/translate", headers={**AUTH, "content-type": "application/json"}, content=chunks())
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    r = httpx.post(live + "/v1/translate", headers=AUTH, json={"texts": ["Hallo"]}, timeout=60)
    assert r.status_code == 200


def test_libretranslatepy_client(live):
    from libretranslatepy import LibreTranslateAPI as lt_api  # the third-party client, unchanged
    lt = lt_api(live, api_key=KEY)
    out = lt.translate("Hallo Welt", "de", "en")
    assert isinstance(out, str)
    assert lt.translate("Hallo Welt", "auto", "en") == out
    assert lt.languages() == [{"code": "de", "name": "German", "targets": ["en"]}]
    with pytest.raises(urllib.error.HTTPError) as e:
        lt_api(live, api_key="wrong").translate("Hallo", "de", "en")
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        lt.translate("Hallo", "de", "fr")
    assert e.value.code == 400


def test_libretranslatepy_detect_and_auto(live):
    """The client's ``detect`` and ``translate(..., "auto", ...)``: the served languages ranked,
    the de-en model chosen for German, an English text refused (no model into English from it)."""
    from libretranslatepy import LibreTranslateAPI as lt_api

    lt = lt_api(live, api_key=KEY)
    german = "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    ranked = lt.detect(german)
    assert [d["language"] for d in ranked] == ["de", "en"] and ranked[0]["confidence"] > 90, ranked
    assert lt.translate(german, "auto", "en") == lt.translate(german, "de", "en")
    r = httpx.post(live + "/translate", headers=AUTH, json={"q": german, "source": "auto", "target": "en"}, timeout=60)
    assert r.json()["detectedLanguage"]["language"] == "de", r.text
    with pytest.raises(urllib.error.HTTPError) as e:
        lt.translate("A man in an orange hat starring at something.", "auto", "en")
    assert e.value.code == 400 and "English" in json.loads(e.value.read())["error"]


def test_health_answers_while_a_long_batch_decodes(tiny):
    app = create_app({"slow": Sleeper(tiny.text, 2.0)})
    with LiveServer(app) as url:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(url + "/v1/translate",
                                                                        json={"texts": ["abc"]}, timeout=30)))
        t.start()
        time.sleep(0.3)  # the decode is running now
        t0 = time.perf_counter()
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        assert httpx.get(url + "/ready", timeout=5).status_code == 200
        assert time.perf_counter() - t0 < 0.5
        t.join()
        assert result["r"].json()["translations"][0]["text"] == "ABC"


def test_mt_serve_command(model_dir, tmp_path):
    port = free_port()
    env = dict(os.environ, MT_API_KEY=KEY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mt.cli", "serve", "--model", f"tiny={model_dir}", "--model", str(model_dir),
         "--port", str(port), "--beam", "2", "--max-len-b", "6"],  # generated decoding flags
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url, 60)
        models = httpx.get(url + "/v1/models", headers=AUTH).json()["models"]
        assert [m["name"] for m in models] == ["tiny", "de-en"]  # explicit name, then src-tgt from meta
        assert httpx.get(url + "/v1/models").status_code == 401  # MT_API_KEY applies
        r = httpx.post(url + "/v1/translate", headers=AUTH, json={"model": "de-en", "texts": ["Hallo"]}, timeout=60)
        assert r.status_code == 200 and isinstance(r.json()["translations"][0]["text"], str), r.text
    finally:
        proc.terminate()
        proc.wait(10)


class SlowText:
    """A text pipeline whose source encoding (normalisation + SentencePiece) of a large
    request takes ``delay`` seconds, as a 252 KB request did (~170 ms) on the reference machine."""

    def __init__(self, text, delay: float) -> None:
        self._text, self.delay = text, delay

    def encode_source(self, texts, normalized: bool = False):
        if len(texts) >= 8:
            time.sleep(self.delay)
        return self._text.encode_source(texts, normalized)

    def __getattr__(self, name):
        return getattr(self._text, name)


def test_health_answers_while_a_large_request_is_normalised(tiny):
    """Token counting runs off the event loop: /health is not held up by it."""
    app = create_app({"de-en": Sleeper(SlowText(tiny.text, 0.8), 0.0)})
    with LiveServer(app) as url:
        for path, body in (("/v1/translate", {"texts": ["Hallo Welt"] * 16}),
                           ("/translate", {"q": ["Hallo Welt"] * 16, "source": "de", "target": "en"})):
            result = {}
            t = threading.Thread(target=lambda: result.update(r=httpx.post(url + path, json=body, timeout=30)))
            t.start()
            time.sleep(0.2)  # the request is being normalised now
            t0 = time.perf_counter()
            assert httpx.get(url + "/health", timeout=5).status_code == 200
            assert time.perf_counter() - t0 < 0.4, path
            t.join()
            assert result["r"].status_code == 200, result["r"].text
