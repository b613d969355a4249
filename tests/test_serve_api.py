"""HTTP API contract: responses, limits and their errors, API key, LibreTranslate routes, metrics.

Uses a deterministic translator double (so error handling is tested without decoding cost)
with the real SentencePiece text pipeline of a tiny random model (so token limits are real).
"""

from __future__ import annotations

import dataclasses
import json
import time
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from mt.decode.options import Hypothesis
from mt.modelio import load_model
from serve.app import create_app
from serve.cli import settings_from_args
from serve.modelspecs import parse_model_spec
from serve.settings import ServerSettings
from serve.state import decoding_threads
from _serve_support import make_random_model_dir

KEY = "s3cret-key"


class Reverser:
    """Translator double: 'translation' = the text reversed; n_best alternatives get a suffix."""

    def __init__(self, text, delay: float = 0.0) -> None:
        self.text = text
        self.meta = {"src_lang": "de", "tgt_lang": "en"}
        self.delay = delay

    def translate_batch(self, texts, opts):
        time.sleep(self.delay)
        return [[Hypothesis(t[::-1] + "~" * i, [], -1.0 - i) for i in range(opts.n_best)] for t in texts]


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory):
    return load_model(make_random_model_dir(tmp_path_factory.mktemp("tiny"))).text


SETTINGS = ServerSettings(max_texts=8, max_chars=300, max_tokens_per_text=40, max_body_bytes=64 * 1024)


@pytest.fixture(scope="module")
def client(text_pipeline):
    with TestClient(create_app({"de-en": Reverser(text_pipeline)}, SETTINGS)) as c:
        yield c


def ok(client: TestClient) -> None:
    """The server still answers a valid request correctly (asserted after every bad one)."""
    r = client.post("/v1/translate", json={"texts": ["abc", "Hallo"]})
    assert r.status_code == 200, r.text
    assert [t["text"] for t in r.json()["translations"]] == ["cba", "ollaH"]


def test_translate_response_shape_and_order(client):
    r = client.post("/v1/translate", json={"model": "de-en", "texts": ["eins", "zwei", "drei"], "beam_size": 3,
                                           "n_best": 2, "length_penalty": 0.6, "max_length": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "de-en"
    assert [t["text"] for t in body["translations"]] == ["snie", "iewz", "ierd"]
    assert body["translations"][0]["n_best"] == [{"text": "snie", "score": -1.0}, {"text": "snie~", "score": -2.0}]
    t = body["timings"]
    assert t["total_ms"] >= t["decode_ms"] >= 0 and t["batch_texts"] >= 3 and t["batch_requests"] >= 1


def test_models_health_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "models": ["de-en"]}
    models = client.get("/v1/models").json()["models"]
    assert models == [{"name": "de-en", "src_lang": "de", "tgt_lang": "en", "parameters": None, "default": True}]


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    "body, status, code, field",
    [
        ({"texts": ["a"] * 9}, 422, "too_many_items", "texts"),
        ({"texts": ["a"] * 10_000}, 422, "too_many_items", "texts"),
        ({"texts": []}, 422, "empty_list", "texts"),
        ({}, 422, "missing_field", "texts"),
        ({"texts": "abc"}, 422, "wrong_type", "texts"),
        ({"texts": ["ok", 5]}, 422, "wrong_type", "texts[1]"),
        ({"texts": ["ok", None]}, 422, "wrong_type", "texts[1]"),
        ({"texts": ["x" * 301]}, 422, "text_too_long", "texts[0]"),
        ({"texts": ["a\x00b"]}, 422, "invalid_control_character", "texts[0]"),
        ({"texts": ["bell\x07"]}, 422, "invalid_control_character", "texts[0]"),
        ({"texts": ["x"], "beam_size": -1}, 422, "invalid_value", "beam_size"),
        ({"texts": ["x"], "beam_size": 0}, 422, "invalid_value", "beam_size"),
        ({"texts": ["x"], "beam_size": 17}, 422, "invalid_value", "beam_size"),
        ({"texts": ["x"], "beam_size": "5"}, 422, "wrong_type", "beam_size"),
        ({"texts": ["x"], "beam_size": 2.5}, 422, "wrong_type", "beam_size"),
        ({"texts": ["x"], "beam_size": True}, 422, "wrong_type", "beam_size"),
        ({"texts": ["x"], "n_best": 3, "beam_size": 2}, 422, "invalid_value", "n_best"),
        ({"texts": ["x"], "length_penalty": -1}, 422, "invalid_value", "length_penalty"),
        ({"texts": ["x"], "max_length": 0}, 422, "invalid_value", "max_length"),
        ({"texts": ["x"], "beam": 4}, 422, "unknown_field", "beam"),
        ({"texts": ["x"], "model": "fr-en"}, 404, "unknown_model", "model"),
        ({"texts": ["x"], "model": ""}, 422, "invalid_value", "model"),
        ([1, 2], 422, "wrong_type", None),
    ],
)
def test_bad_json_requests_get_4xx_naming_the_field(client, body, status, code, field):
    r = client.post("/v1/translate", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == code and err["field"] == field, err
    if field:
        assert err["error"].startswith(field)
    ok(client)


@pytest.mark.parametrize(
    "raw, status, code",
    [
        (b'{"texts": ["a"', 400, "invalid_json"),
        (b"not json", 400, "invalid_json"),
        (b'{"texts": ["\xff\xfe"]}', 400, "invalid_utf8"),
        (b'{"texts": ["\\ud800"]}', 422, "invalid_unicode"),  # lone surrogate via an escape
        (b'{"texts": ["a"], "length_penalty": NaN}', 422, "invalid_value"),
        (b'{"texts": ["a"], "length_penalty": Infinity}', 422, "invalid_value"),
        (b"[" * 100_000, 413, "body_too_large"),
        (json.dumps({"texts": ["x" * 1_000_000]}).encode(), 413, "body_too_large"),  # a 1 MB string
    ],
)
def test_malformed_bodies(client, raw, status, code):
    r = client.post("/v1/translate", content=raw, headers=JSON)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    ok(client)


def test_deeply_nested_json_is_a_4xx(client):
    r = client.post("/v1/translate", content=b"[" * 50_000 + b"]" * 50_000, headers=JSON)
    assert r.status_code == 413  # over the 64 KiB limit before any parsing
    r = client.post("/v1/translate", content=b"[" * 20_000 + b"]" * 20_000, headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    ok(client)


def test_declared_content_length_over_limit_is_refused_unread(client):
    r = client.post("/v1/translate", content=b"{}", headers={**JSON, "content-length": str(10**9)})
    assert r.status_code == 413 and "1000000000" in r.json()["error"]


def test_unknown_route_and_method(client):
    assert client.get("/nope").json()["code"] == "http_404"
    assert client.get("/v1/translate").status_code == 405


def test_timeout_is_504_and_server_recovers(text_pipeline):
    app = create_app({"de-en": Reverser(text_pipeline, delay=0.6)}, SETTINGS.replace(request_timeout_s=0.2))
    with TestClient(app) as c:
        r = c.post("/v1/translate", json={"texts": ["slow"]})
        assert r.status_code == 504 and r.json()["code"] == "timeout"
        time.sleep(0.5)  # let the worker finish the abandoned batch
        app.state.engines["de-en"].translator.delay = 0.0
        ok(c)


def test_api_key_on_every_route_but_health_and_ready(text_pipeline):
    app = create_app({"de-en": Reverser(text_pipeline)}, SETTINGS.replace(api_key=KEY))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 200
        for method, path in [("GET", "/"), ("GET", "/v1/models"), ("POST", "/v1/translate"), ("GET", "/metrics"),
                             ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/languages"), ("POST", "/translate")]:
            r = c.request(method, path, json={"texts": ["x"]} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "unauthorized"
            r = c.request(method, path, headers={"Authorization": "Bearer wrong" + KEY})
            assert r.status_code == 401, path
        body = {"texts": ["abc"]}
        for headers, params in [({"Authorization": f"Bearer {KEY}"}, None), ({"X-API-Key": KEY}, None),
                                ({}, {"api_key": KEY})]:
            r = c.post("/v1/translate", json=body, headers=headers, params=params)
            assert r.status_code == 200 and r.json()["translations"][0]["text"] == "cba"
        r = c.post("/translate", data={"q": "abc", "source": "de", "target": "en", "api_key": KEY})
        assert r.json() == {"translatedText": "cba"}
        r = c.get("/docs", params={"api_key": KEY})
        assert r.status_code == 200 and f"/openapi.json?api_key={KEY}" in r.text


def test_libretranslate_routes(client):
    r = client.post("/translate", data={"q": "Hallo", "source": "de", "target": "en"})  # form, like LT clients
    assert r.json() == {"translatedText": "ollaH"}
    r = client.post("/translate", json={"q": ["ab", "cd"], "source": "auto", "target": "en"})
    assert r.json()["translatedText"] == ["ba", "dc"]
    assert [d["language"] for d in r.json()["detectedLanguage"]] == ["de", "de"]
    # the inline <b> stays inside the one sentence the model translates (mt.documents)
    r = client.post("/translate", json={"q": '<p class="x">Hallo <b>Welt</b> &amp; du</p>', "source": "de",
                                        "target": "en", "format": "html"})
    assert r.json() == {"translatedText": '<p class="x">ud <b>&amp;</b> tleW ollaH</p>'}
    r = client.post("/translate", json={"q": "x", "source": "fr", "target": "en"})
    assert r.status_code == 400 and r.json()["code"] == "unsupported_language_pair"
    r = client.post("/translate", json={"q": "x", "source": "de"})
    assert r.status_code == 400 and r.json()["field"] == "target"
    r = client.post("/translate", content=b"q=%FF&source=de&target=en",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_utf8"
    r = client.post("/translate", content=b"<xml/>", headers={"content-type": "text/xml"})
    assert r.status_code == 415
    assert client.get("/languages").json() == [{"code": "de", "name": "German", "targets": ["en"]}]
    ok(client)


def test_metrics_count_requests_and_batches(client):
    ok(client)
    client.post("/v1/translate", json={"texts": []})
    text = client.get("/metrics").text
    assert 'mt_http_requests_total{method="POST",route="/v1/translate",status="200"}' in text
    assert 'mt_http_requests_total{method="POST",route="/v1/translate",status="422"}' in text
    assert "mt_batch_texts_count" in text and "mt_http_request_duration_seconds_bucket" in text
    assert 'mt_translated_texts_total{model="de-en"}' in text


def test_openapi_documents_the_configured_limits(client):
    spec = client.get("/openapi.json").json()
    req = spec["components"]["schemas"]["TranslateRequest"]["properties"]
    assert req["texts"]["maxItems"] == SETTINGS.max_texts
    assert req["texts"]["items"]["maxLength"] == SETTINGS.max_chars
    # the decoding fields are optional (null: the model's stored default); bounds and help come
    # from DecodeOptions, beam_size and n_best capped at max_beam
    def bounds(name):
        (given,) = [s for s in req[name]["anyOf"] if s["type"] != "null"]  # optional: null allowed
        assert "the model's" in req[name]["description"]
        return given.get("minimum"), given.get("maximum")

    assert bounds("beam_size") == (1, SETTINGS.max_beam)
    assert bounds("n_best") == (1, SETTINGS.max_beam)
    assert bounds("length_penalty") == (0.0, 10.0)
    assert bounds("max_length") == (1, SETTINGS.max_output_length)
    assert client.get("/docs").status_code == 200


def test_docs_page_needs_no_internet(client):
    page = client.get("/docs").text
    assert "cdn." not in page and "/docs/assets/swagger-ui-bundle.js" in page
    for asset, ctype in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        r = client.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and ctype in r.headers["content-type"] and len(r.content) > 10_000


def test_index_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="translate"' in r.text and "/v1/translate" in r.text


def test_model_spec_parsing():
    assert parse_model_spec("de-en=runs/a") == ("de-en", "runs/a")
    assert parse_model_spec("runs/a") == (None, "runs/a")
    assert parse_model_spec("runs/a=b") == (None, "runs/a=b")


def test_settings_must_fit_the_model(tmp_path):
    loaded = load_model(make_random_model_dir(tmp_path / "m"))
    with pytest.raises(ValueError, match="max_positions"):
        create_app({"x": loaded}, ServerSettings(max_tokens_per_text=loaded.model.cfg.max_positions))
    with pytest.raises(ValueError, match="--beam"):
        create_app({"x": loaded}, ServerSettings(decode={"beam": 20}, max_beam=16))
    with pytest.raises(ValueError, match="no models"):
        create_app({}, ServerSettings())


def test_worker_and_thread_settings():
    for bad, field in [(dict(workers=0), "workers"), (dict(threads=0), "threads"),
                       (dict(switch_interval_ms=0), "switch_interval_ms")]:
        with pytest.raises(ValueError, match=field):
            ServerSettings(**bad).validate()
    engines = [SimpleNamespace(translator=SimpleNamespace(device=torch.device("cpu")))]
    assert decoding_threads(ServerSettings(threads=4), engines) == (2, 2)  # default: 2 workers on CPU
    assert decoding_threads(ServerSettings(threads=1), engines) == (1, 1)
    assert decoding_threads(ServerSettings(threads=4, workers=1), engines) == (1, 4)
    gpu = [SimpleNamespace(translator=SimpleNamespace(device=torch.device("cuda")))]
    assert decoding_threads(ServerSettings(threads=4), gpu) == (1, 4)


def test_decoding_model_settings_and_flags(capsys):
    """`mt serve --int8 / --dtype / --shortlist / --no-pack / --beam` reach ServerSettings.decode
    (only the flags given: the rest stay each model's stored defaults), and impossible
    combinations are refused at start-up."""
    from mt.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--int8", "--no-pack", "--shortlist", "--beam", "3",
                                      "--alpha", "0.5"])
    settings = settings_from_args(args)
    assert settings.decode == {"int8": True, "shortlist": True, "pack": False, "beam": 3, "alpha": 0.5}
    settings.validate()
    defaults = settings_from_args(build_parser().parse_args(["serve", "--model", "m"]))
    assert defaults.decode == {}
    bf16 = settings_from_args(build_parser().parse_args(["serve", "--model", "m", "--dtype", "bf16"]))
    assert bf16.decode == {"dtype": "bf16"}
    with pytest.raises(ValueError, match="int8"):
        ServerSettings(decode={"int8": True, "dtype": "bf16"}).validate()
    # the CLI refuses it before loading anything (the model dir does not even exist)
    from mt.cli import main

    assert main(["serve", "--model", "/nonexistent", "--int8", "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "int8" in err and "dtype" in err and "Traceback" not in err
    assert main(["serve", "--model", "/nonexistent", "--beam", "20", "--max-beam", "16"]) == 2
    assert "--beam" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dtype"):
        ServerSettings(decode={"dtype": "fp8"}).validate()
    with pytest.raises(ValueError, match="beam"):
        ServerSettings(decode={"beam": 0}).validate()
    with pytest.raises(ValueError, match="no_such_option"):
        ServerSettings(decode={"no_such_option": 1}).validate()


def test_served_model_is_the_requested_decoding_variant(tmp_path):
    """The engines decode with what the settings ask for: int8 layers, packed bf16 weights, the
    model dir's shortlist; a missing shortlist is a start-up error naming the file."""
    from torch import nn

    from mt.decode import shortlist as sl
    from mt.decode.packed import PackedLinear, packing_available

    model_dir = make_random_model_dir(tmp_path / "m")
    loaded = load_model(model_dir)
    with pytest.raises(FileNotFoundError, match="shortlist"):
        create_app({"m": loaded}, ServerSettings(decode={"shortlist": True}))
    int8 = create_app({"m": loaded}, ServerSettings(decode={"int8": True})).state.engines["m"]
    assert int8.translator.model.int8 and int8.base_options.int8
    assert any("quantized" in type(m).__module__ for m in int8.translator.model.net.modules())
    assert not any(type(m) is nn.Linear for m in int8.translator.model.net.modules())
    vocab = loaded.model.cfg.vocab_size
    sl.build([[5, 6, 7]], [[8, 9]], vocab, frequent=20, per_source=4).save(model_dir, {})
    plain = create_app({"m": load_model(model_dir)},
                       ServerSettings(decode={"pack": False, "shortlist": True})).state.engines["m"]
    assert plain.translator.shortlist is not None
    assert not plain.translator.model.packed
    assert not any(isinstance(m, PackedLinear) for m in plain.translator.model.net.modules())
    if packing_available(torch.bfloat16):  # oneDNN packs bf16 only on CPUs with bf16 conversions
        bf16 = create_app({"m": loaded}, ServerSettings(decode={"dtype": "bf16"})).state.engines["m"]
        assert bf16.translator.model.packed and bf16.translator.model.dtype == "bf16"
        assert isinstance(bf16.translator.model.net.output_proj, PackedLinear)
        assert bf16.translator.model.net.output_proj.weight.dtype == torch.bfloat16
        assert next(loaded.model.parameters()).dtype == torch.float32  # the loaded model is left as is
    with TestClient(create_app({"m": loaded}, ServerSettings(decode={"int8": True}))) as client:
        r = client.post("/v1/translate", json={"texts": ["ein test", "zwei"]})
        assert r.status_code == 200 and len(r.json()["translations"]) == 2


def test_served_model_decodes_with_its_stored_defaults(tmp_path):
    """A model directory's stored decoding defaults (``save_model(..., decode=...)``) are what
    a request without options gets; `mt serve` flags go on top of them, request fields on top
    of both."""
    from mt.config import DecodeOptions
    from mt.decode.translator import Translator
    from mt.decode.variant import prepare
    from mt.modelio import save_model, stored_decode_options

    base = load_model(make_random_model_dir(tmp_path / "random"))
    stored = DecodeOptions(beam=1, max_len_a=0.0, max_len_b=3)
    model_dir = save_model(tmp_path / "m", base.model, base.text, base.meta, decode=stored)
    assert stored_decode_options(model_dir) == stored
    loaded = load_model(model_dir)
    texts = ["ein kleiner test", "zwei hunde laufen schnell nach hause"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = Translator(prepare(loaded.model), loaded.text)
        expect_stored = reference.translate_batch(texts, stored)
        expect_request = reference.translate_batch(texts, stored.replace(beam=2, max_len_b=12))
        expect_plain = reference.translate_batch(texts, DecodeOptions())
    finally:
        torch.set_num_threads(before)
    # the stored defaults make a difference here, so the comparisons below can tell them apart
    assert all(len(h[0].tokens) <= 3 for h in expect_stored)
    assert [h[0].tokens for h in expect_stored] != [h[0].tokens for h in expect_plain]
    assert [h[0].tokens for h in expect_stored] != [h[0].tokens for h in expect_request]

    app = create_app({"m": loaded}, SETTINGS.replace(threads=1))
    assert app.state.engines["m"].base_options == stored
    with TestClient(app) as client:
        r = client.post("/v1/translate", json={"texts": texts})
        assert r.status_code == 200, r.text
        got = r.json()["translations"]
        assert [t["text"] for t in got] == [h[0].text for h in expect_stored]
        assert [t["score"] for t in got] == pytest.approx([h[0].score for h in expect_stored], abs=1e-4)
        # request fields override the stored defaults (max_length: a = 0, b = max_length)
        r = client.post("/v1/translate", json={"texts": texts, "beam_size": 2, "max_length": 12})
        assert r.status_code == 200, r.text
        assert [t["text"] for t in r.json()["translations"]] == [h[0].text for h in expect_request]
        # n_best above the model's default beam (1) when the request gives no beam_size: a 422
        # naming n_best, not a 500 from the search
        r = client.post("/v1/translate", json={"texts": texts, "n_best": 2})
        assert r.status_code == 422, r.text
        err = r.json()
        assert err["field"] == "n_best" and err["error"].startswith("n_best") and "beam_size" in err["error"], err
        r = client.post("/v1/translate", json={"texts": texts, "n_best": 2, "beam_size": 2})
        assert r.status_code == 200 and len(r.json()["translations"][0]["n_best"]) == 2, r.text
    # `mt serve` flags (ServerSettings.decode) go on top of the stored defaults
    engine = create_app({"m": loaded}, SETTINGS.replace(decode={"beam": 2})).state.engines["m"]
    assert engine.base_options == stored.replace(beam=2)


def test_n_best_above_the_default_beam_is_a_422(text_pipeline):
    """Without beam_size, n_best is checked against the model's default beam (5 here)."""
    with TestClient(create_app({"de-en": Reverser(text_pipeline)}, SETTINGS)) as c:
        r = c.post("/v1/translate", json={"texts": ["abc"], "n_best": 6})
        assert r.status_code == 422, r.text
        err = r.json()
        assert err["field"] == "n_best" and err["error"].startswith("n_best"), err
        r = c.post("/v1/translate", json={"texts": ["abc"], "n_best": 5})
        assert r.status_code == 200 and len(r.json()["translations"][0]["n_best"]) == 5
        ok(c)


# ---------------------------------------------------------------------------- issue 16, item 5 and 6


def unresolved_refs(doc: dict) -> list[str]:
    """Every local ``$ref`` in ``doc`` that points nowhere (openapi-spec-validator does not
    follow the references of request bodies, so it alone missed LTTranslateRequest)."""
    missing = []

    def resolve(ref: str) -> bool:
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/") and not resolve(ref):
                missing.append(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return missing


def test_openapi_document_is_valid_and_every_reference_resolves(client):
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").json()
    validate(spec)
    assert unresolved_refs(spec) == []
    body = spec["paths"]["/translate"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-www-form-urlencoded"}
    lt = spec["components"]["schemas"]["LTTranslateRequest"]
    assert lt["required"] == ["q", "target"] and lt["properties"]["q"]["anyOf"][1]["maxItems"] == SETTINGS.max_texts


def test_head_on_health_and_ready(client):
    for path in ("/health", "/ready"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path


def test_trailing_slash_is_a_404_not_a_redirect_to_the_client_host(client):
    r = client.get("/health/", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers
    assert r.json()["code"] == "http_404"


@pytest.mark.parametrize("q, code, words", [([], "empty_list", "at least 1 item"),
                                            (["a"] * 9, "too_many_items", "at most 8 items")])
def test_libretranslate_list_limits_are_named(client, q, code, words):
    r = client.post("/translate", json={"q": q, "source": "de", "target": "en"})
    assert r.status_code == 400 and r.json()["code"] == code and r.json()["field"] == "q", r.text
    assert words in r.json()["error"] and "valid string" not in r.json()["error"]


def test_float_settings_must_be_finite(capsys):
    from mt.cli import build_parser

    floats = [f.name for f in dataclasses.fields(ServerSettings) if isinstance(f.default, float)]
    assert {"request_timeout_s", "max_wait_ms", "header_timeout_s", "shutdown_timeout_s"} <= set(floats)
    for name in floats:
        flag = "--" + name.replace("_", "-")
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(ValueError, match=flag):
                ServerSettings(**{name: float(bad)}).validate()
            with pytest.raises(SystemExit):
                build_parser().parse_args(["serve", "--model", "m", f"{flag}={bad}"])
            err = capsys.readouterr().err
            assert flag in err and "finite" in err, err


def test_connection_and_shutdown_settings_are_flags_with_bounds():
    from mt.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--max-connections", "7", "--max-header-bytes", "999",
                                      "--header-timeout-s", "2.5", "--body-timeout-s", "3", "--keepalive-timeout-s",
                                      "1", "--shutdown-timeout-s", "4"])
    s = settings_from_args(args)
    assert (s.max_connections, s.max_header_bytes, s.header_timeout_s, s.body_timeout_s, s.keepalive_timeout_s,
            s.shutdown_timeout_s) == (7, 999, 2.5, 3.0, 1.0, 4.0)
    for bad in (dict(max_connections=0), dict(max_header_bytes=0), dict(header_timeout_s=0.0),
                dict(body_timeout_s=-1.0), dict(keepalive_timeout_s=0.0), dict(shutdown_timeout_s=0.0)):
        with pytest.raises(ValueError, match="--" + next(iter(bad)).replace("_", "-")):
            ServerSettings(**bad).validate()


def test_port_out_of_range_is_a_one_line_error(tmp_path, capsys):
    from serve.__main__ import main

    for port in ("99999", "0"):
        assert main(["--model", str(tmp_path), "--port", port]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--port: must be in [1, 65535]" in err and port in err, err


def test_api_keys_that_cannot_be_sent_in_a_header_are_refused(monkeypatch, capsys):
    from mt.cli import main

    for key in ("clé", "tab\tkey", " padded"):
        with pytest.raises(ValueError, match="printable ASCII"):
            ServerSettings(api_key=key).validate()
    ServerSettings(api_key="Az09-._~!$&'()*+,;=:@ x").validate()  # printable ASCII, inner space: fine
    monkeypatch.setenv("MT_API_KEY", "schlüssel")
    assert main(["serve", "--model", "/nonexistent"]) == 2  # before any model loads
    err = capsys.readouterr().err
    assert "MT_API_KEY" in err and "ASCII" in err and "Traceback" not in err


def test_empty_mt_api_key_is_refused_not_an_open_server(monkeypatch, capsys):
    from mt.cli import build_parser, main

    monkeypatch.setenv("MT_API_KEY", "")
    with pytest.raises(ValueError, match="MT_API_KEY is set but empty"):
        settings_from_args(build_parser().parse_args(["serve", "--model", "m"]))
    assert main(["serve", "--model", "/nonexistent"]) == 2
    assert "MT_API_KEY is set but empty" in capsys.readouterr().err
    monkeypatch.delenv("MT_API_KEY")
    assert settings_from_args(build_parser().parse_args(["serve", "--model", "m"])).api_key is None  # unset: open
    monkeypatch.setenv("MT_API_KEY", "k")
    assert settings_from_args(build_parser().parse_args(["serve", "--model", "m", "--api-key", "flag"])).api_key == "flag"
