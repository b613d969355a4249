"""Issue 16, items 2 and 3: the request cost budget, cancellation of abandoned work over HTTP
(timeout and client disconnect), and decoding processes whose replacements cannot load the
weights the server started with (``/ready`` says why; the healthy ones keep serving)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from mt.decode.options import Hypothesis
from mt.decode.search import DecodeCancelled
from mt.modelio import load_model
from serve.app import create_app
from serve.engine import RequestOptions, build_engine
from serve.modelspecs import check_manifest, model_manifest
from serve.processes import DecodeProcesses
from serve.settings import ServerSettings
from _serve_support import LiveServer, make_random_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random_model_dir(tmp_path_factory.mktemp("faults") / "m")


@pytest.fixture(scope="module")
def text(model_dir):
    return load_model(model_dir).text


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


class Echo:
    """Translator double: the text itself."""

    def __init__(self, text) -> None:
        self.text, self.meta = text, {}

    def translate_batch(self, texts, opts):
        return [[Hypothesis(t, [], 0.0)] for t in texts]


class Spinner:
    """Translator double with the cancellation hook: a text containing "spin" decodes for 10 s
    unless ``should_stop`` says stop; records that it started and that it was stopped."""

    def __init__(self, text) -> None:
        self.text, self.meta = text, {}
        self.started, self.stopped = threading.Event(), threading.Event()

    def translate_batch(self, texts, opts, should_stop=None):
        if any("spin" in t for t in texts):
            self.started.set()
            for _ in range(1000):
                if should_stop is not None and should_stop():
                    self.stopped.set()
                    raise DecodeCancelled("stopped")
                time.sleep(0.01)
        return [[Hypothesis(t, [], 0.0)] for t in texts]


# ---------------------------------------------------------------------------- cost budget


def test_the_issue_request_is_over_the_default_budget(text):
    """64 texts x 256 tokens at beam 16, max length 512: 525,312 row-steps (the default
    budget is 65,536); the model's own length rule is used without max_length."""
    engine = build_engine("m", Echo(text))
    costs = engine.text_costs([256] * 64, RequestOptions(beam=16, max_length=512))
    assert sum(costs) == 64 * 16 * 513 > ServerSettings().max_request_cost
    # default options (beam 5, a=1.2, b=10): 5 x (floor(1.2 * 30 + 10) + 1)
    assert engine.text_costs([30], RequestOptions()) == [5 * 47]


def test_a_request_over_the_cost_budget_is_413_naming_budget_and_cost(text):
    app = create_app({"m": Echo(text)}, ServerSettings(max_texts=64))
    body = {"beam_size": 16, "max_length": 512}
    with TestClient(app) as client:
        r = client.post("/v1/translate", json={"texts": ["hallo"] * 8, **body})
        assert r.status_code == 413, r.text
        err = r.json()
        assert err["code"] == "request_too_costly" and err["field"] == "texts"
        assert "65,664" in err["error"] and "65,536" in err["error"] and "--max-request-cost" in err["error"]
        assert client.post("/v1/translate", json={"texts": ["hallo"] * 7, **body}).status_code == 200
        r = client.post("/translate", json={"q": ["hallo"] * 64, "source": "auto", "target": "en"})
        assert r.status_code == 200, r.text  # 64 x 5 x (1.2 n + 11): well inside


# ---------------------------------------------------------------------------- cancellation over HTTP


@pytest.fixture()
def spinner_server(text):
    spinner = Spinner(text)
    app = create_app({"m": spinner}, ServerSettings(request_timeout_s=0.5, workers=1, threads=1))
    with LiveServer(app) as url:
        yield spinner, url


def test_a_timed_out_request_stops_decoding(spinner_server):
    """504 after 0.5 s, and its decoding stops at once: the next request is answered at once
    (the old server decoded the abandoned request for its full 10 s)."""
    spinner, url = spinner_server
    r = httpx.post(url + "/v1/translate", json={"texts": ["spin"]}, timeout=30)
    assert r.status_code == 504
    assert spinner.stopped.wait(2)
    t0 = time.monotonic()
    r = httpx.post(url + "/v1/translate", json={"texts": ["quick"]}, timeout=30)
    assert r.status_code == 200 and time.monotonic() - t0 < 2


def test_a_client_that_disconnects_stops_its_decoding(spinner_server):
    spinner, url = spinner_server
    body = json.dumps({"texts": ["spin"]}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert spinner.started.wait(5)
    t0 = time.monotonic()  # the socket is closed: the server sees the disconnect
    assert spinner.stopped.wait(3), "the decoding went on after the client left"
    assert time.monotonic() - t0 < 3


# ---------------------------------------------------------------------------- replacements and /ready


def test_manifest_notices_changed_and_deleted_files(model_dir, tmp_path):
    d = shutil.copytree(model_dir, tmp_path / "m")
    manifest = model_manifest([f"x={d}"])
    assert set(manifest[str(d)]) >= {"config.json", "model.safetensors", "text.json"}
    check_manifest(manifest)
    (d / "notes.txt").write_text("added later: not read by the loader")
    check_manifest(manifest)
    (d / "text.json").write_text((d / "text.json").read_text() + " ")
    with pytest.raises(ValueError, match="text.json has other contents"):
        check_manifest(manifest)
    shutil.rmtree(d)
    with pytest.raises(ValueError, match="no longer exists"):
        check_manifest(manifest)


def perturb_weights(path) -> None:
    """Same shapes, other values: a model that loads fine but is not the one served."""
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, str(path))


def test_a_replacement_that_cannot_load_the_same_weights_does_not_serve(model_dir, tmp_path):
    """Weights changed on disk, then a process dies: its replacement refuses them, /ready
    answers 503 with the reason, the healthy process keeps serving; with none left, 503."""
    d = shutil.copytree(model_dir, tmp_path / "m")
    procs = DecodeProcesses([f"m={d}"], n=2, threads=1)
    try:
        app = create_app({"m": load_model(d)}, ServerSettings(workers=2, threads=1), procs.run_batch)
        with TestClient(app) as client:
            assert client.get("/ready").status_code == 200
            perturb_weights(d / "model.safetensors")
            first, second = procs.pids
            os.kill(first, signal.SIGKILL)
            for _ in range(3):  # one goes to the dead process: retried on the live one
                assert client.post("/v1/translate", json={"texts": ["hallo"], "max_length": 5}).status_code == 200
            wait_for(lambda: procs.health() is not None)
            r = client.get("/ready")
            assert r.status_code == 503 and "model.safetensors has other contents" in r.json()["error"]
            assert client.post("/v1/translate", json={"texts": ["noch"], "max_length": 5}).status_code == 200
            shutil.rmtree(d)
            os.kill(second, signal.SIGKILL)
            r = client.post("/v1/translate", json={"texts": ["hallo"], "max_length": 5})
            assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
            assert "model directory not found" in client.get("/ready").json()["error"]
    finally:
        procs.close()
    assert not procs.pids
