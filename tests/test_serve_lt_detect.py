"""LibreTranslate ``/detect``, ``source: "auto"`` and ``alternatives`` (serve/routes_libretranslate.py).

Four served models (de-en, fr-en, chr-en, en-de) are translator doubles that tag their output
with their language pair, so a test sees which model a text went to; they run on the real
SentencePiece pipeline of a tiny random model (token limits are real). One test decodes with
that real model, to check the alternatives are its n-best hypotheses.
"""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from mt.decode.options import DecodeOptions, Hypothesis
from mt.decode.translator import Translator
from mt.modelio import load_model
from serve.app import create_app
from serve.settings import ServerSettings
from _serve_support import make_random_model_dir

KEY = "detect-key"
SETTINGS = ServerSettings(max_texts=8, max_chars=300, max_tokens_per_text=200, max_beam=8, threads=1)
GERMAN = "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
FRENCH = "Un homme avec un chapeau orange regardant quelque chose."
ENGLISH = "A man in an orange hat starring at something."
CHEROKEE = "ᎡᏆᎭᎻ ᎯᎠ ᏄᏪᏎᎴᎢ; ᎼᏏ ᎠᎴ ᎠᎾᏙᎴᎰᏍᎩ ᏚᏁᎭ."


class Tagger:
    """Translator double: ``"de>en: TEXT"``; n-best hypothesis ``i`` adds ``" #i"``, except that
    hypothesis 2 repeats hypothesis 1 (as two token sequences can detokenize alike)."""

    def __init__(self, text, src: str, tgt: str) -> None:
        self.text, self.meta = text, {"src_lang": src, "tgt_lang": tgt}
        self.calls: list[DecodeOptions] = []

    def translate_batch(self, texts, opts):
        self.calls.append(opts)
        tag = f"{self.meta['src_lang']}>{self.meta['tgt_lang']}: "
        return [[Hypothesis(tag + t.upper() + (f" #{1 if i == 2 else i}" if i else ""), [], -1.0 - i)
                 for i in range(opts.n_best)] for t in texts]


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory):
    return load_model(make_random_model_dir(tmp_path_factory.mktemp("tiny"))).text


@pytest.fixture(scope="module")
def app(text_pipeline):
    models = {f"{s}-{t}": Tagger(text_pipeline, s, t) for s, t in (("de", "en"), ("fr", "en"), ("chr", "en"),
                                                                   ("en", "de"))}
    return create_app(models, SETTINGS)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def lt(client, path: str, **body):
    return client.post(path, json=body)


def error(r, status: int, code: str, field: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == code and err["field"] == field, err
    assert err["error"].startswith(field) and "\n" not in err["error"], err
    return err["error"]


# ---------------------------------------------------------------------------- /detect


def test_detect_json_ranks_the_served_languages(client):
    r = lt(client, "/detect", q=GERMAN)
    assert r.status_code == 200, r.text
    ranked = r.json()
    assert [d["language"] for d in ranked][0] == "de" and ranked[0]["confidence"] > 90
    assert sorted(d["language"] for d in ranked) == ["chr", "de", "en", "fr"]  # sources and targets
    confidences = [d["confidence"] for d in ranked]
    assert confidences == sorted(confidences, reverse=True) and all(0 <= c <= 100 for c in confidences)
    assert sum(confidences) == pytest.approx(100, abs=0.5)


def test_detect_form_body_like_libretranslate_clients(client):
    r = client.post("/detect", data={"q": FRENCH})
    assert r.status_code == 200 and r.json()[0]["language"] == "fr", r.text
    r = client.post("/detect", data={"q": CHEROKEE})
    assert r.json()[0] == {"language": "chr", "confidence": 100.0}


@pytest.mark.parametrize("body, status, code, field", [
    ({"q": ""}, 400, "empty_text", "q"),
    ({"q": " \n "}, 400, "empty_text", "q"),
    ({}, 400, "missing_field", "q"),
    ({"q": ["a", "b"]}, 400, "wrong_type", "q"),
    ({"q": "x" * 301}, 400, "text_too_long", "q"),
    ({"q": "a\x00b"}, 400, "invalid_control_character", "q"),
])
def test_detect_bad_requests_name_the_field(client, body, status, code, field):
    error(lt(client, "/detect", **body), status, code, field)


def test_detect_needs_the_api_key(text_pipeline):
    app = create_app({"de-en": Tagger(text_pipeline, "de", "en")}, SETTINGS.replace(api_key=KEY))
    with TestClient(app) as c:
        assert c.post("/detect", data={"q": GERMAN}).status_code == 401
        assert c.post("/detect", data={"q": GERMAN, "api_key": KEY}).status_code == 200
        r = c.post("/detect", json={"q": GERMAN}, headers={"X-API-Key": KEY})
        assert [d["language"] for d in r.json()] == ["de", "en"]


# ---------------------------------------------------------------------------- source: auto


def test_auto_chooses_the_model_by_the_detected_language(client):
    for text, lang in ((GERMAN, "de"), (FRENCH, "fr"), (CHEROKEE, "chr")):
        r = lt(client, "/translate", q=text, source="auto", target="en")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["translatedText"] == f"{lang}>en: {text.upper()}"
        assert body["detectedLanguage"]["language"] == lang and 90 < body["detectedLanguage"]["confidence"] <= 100
        assert "alternatives" not in body


def test_auto_detects_each_text_of_a_list(client):
    r = lt(client, "/translate", q=[FRENCH, GERMAN], source="auto", target="en")
    body = r.json()
    assert body["translatedText"] == [f"fr>en: {FRENCH.upper()}", f"de>en: {GERMAN.upper()}"]
    assert [d["language"] for d in body["detectedLanguage"]] == ["fr", "de"]


def test_no_detected_language_without_auto(client):
    r = client.post("/translate", data={"q": GERMAN, "source": "de", "target": "en"})
    assert r.json() == {"translatedText": f"de>en: {GERMAN.upper()}"}


def test_text_in_a_language_without_a_model_into_the_target_is_a_400(client):
    # English into English: no model; the message names the languages that can be translated
    message = error(lt(client, "/translate", q=ENGLISH, source="auto", target="en"), 400, "unsupported_language", "q")
    assert "English (en" in message and "de (German), fr (French), chr (Cherokee)" in message
    # German into German (en-de is the only model into de)
    message = error(lt(client, "/translate", q=[ENGLISH, GERMAN], source="auto", target="de"), 400,
                    "unsupported_language", "q[1]")
    assert "German (de" in message and "en (English)" in message


def test_short_ambiguous_text_goes_to_the_likeliest_model_into_the_target(client):
    """'Hallo' looks most like English, but not surely (< 90%): it is not refused, it goes to
    the likeliest language that has a model into English."""
    ranked = lt(client, "/detect", q="Hallo").json()
    assert ranked[0]["language"] == "en" and ranked[0]["confidence"] < 90
    likeliest = next(d for d in ranked if d["language"] != "en")
    r = lt(client, "/translate", q="Hallo", source="auto", target="en")
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": f"{likeliest['language']}>en: HALLO", "detectedLanguage": likeliest}


def test_unknown_languages_are_400s_naming_the_available_ones(client):
    message = error(lt(client, "/translate", q=GERMAN, source="es", target="en"), 400, "unsupported_language_pair",
                    "source")
    assert "de (German), fr (French), chr (Cherokee)" in message
    message = error(lt(client, "/translate", q=GERMAN, source="auto", target="es"), 400, "unsupported_language_pair",
                    "target")
    assert "de (German), en (English)" in message
    error(lt(client, "/translate", q="  ", source="auto", target="en"), 400, "empty_text", "q")
    error(lt(client, "/translate", q=[GERMAN, "\n"], source="auto", target="en"), 400, "empty_text", "q[1]")


def test_languages_nobody_can_detect_are_a_400(text_pipeline):
    """Served languages that neither the model nor a script rule knows: auto cannot choose."""
    with TestClient(create_app({"xx-yy": Tagger(text_pipeline, "xx", "yy")}, SETTINGS)) as c:
        assert lt(c, "/detect", q=GERMAN).json() == [{"language": "xx", "confidence": 0.0},
                                                      {"language": "yy", "confidence": 0.0}]
        message = error(lt(c, "/translate", q=GERMAN, source="auto", target="yy"), 400, "language_not_detected", "q")
        assert "xx (xx)" in message and "give source" in message
        assert lt(c, "/translate", q=GERMAN, source="xx", target="yy").status_code == 200


def test_languages_stay_the_served_pairs(client):
    assert client.get("/languages").json() == [
        {"code": "de", "name": "German", "targets": ["en"]}, {"code": "fr", "name": "French", "targets": ["en"]},
        {"code": "chr", "name": "Cherokee", "targets": ["en"]}, {"code": "en", "name": "English", "targets": ["de"]},
    ]


# ---------------------------------------------------------------------------- alternatives


def test_alternatives_are_distinct_n_best_translations(app, client):
    engine = app.state.engines["de-en"]
    r = lt(client, "/translate", q="Hallo Welt", source="de", target="en", alternatives=1)
    body = r.json()
    assert body == {"translatedText": "de>en: HALLO WELT", "alternatives": ["de>en: HALLO WELT #1"]}
    # 3 asked: hypotheses 1 and 2 read alike, so 2 distinct ones come back
    r = lt(client, "/translate", q="Hallo Welt", source="de", target="en", alternatives=3)
    assert r.json()["alternatives"] == ["de>en: HALLO WELT #1", "de>en: HALLO WELT #3"]
    # one beam search with the model's beam (5) and n_best = alternatives + 1
    assert (engine.translator.calls[-1].beam, engine.translator.calls[-1].n_best) == (5, 4)
    # more than the model's beam holds: the beam grows to alternatives + 1
    r = lt(client, "/translate", q=["eins", "zwei"], source="auto", target="en", alternatives=7)
    body = r.json()
    assert (engine.translator.calls[-1].beam, engine.translator.calls[-1].n_best) == (8, 8)
    assert [len(a) for a in body["alternatives"]] == [6, 6]
    for best, alternatives in zip(body["translatedText"], body["alternatives"]):
        assert best not in alternatives and len(set(alternatives)) == len(alternatives)


def test_alternatives_zero_adds_nothing(client):
    r = lt(client, "/translate", q="Hallo", source="de", target="en", alternatives=0)
    assert r.json() == {"translatedText": "de>en: HALLO"}


@pytest.mark.parametrize("value, code, words", [
    (-1, "invalid_value", "greater than or equal to 0"), (8, "invalid_value", "less than or equal to 7"),
    (10**6, "invalid_value", "less than or equal to 7"), ("2", "wrong_type", "valid integer"),
    (1.5, "wrong_type", "valid integer"), (True, "wrong_type", "valid integer"),
])
def test_alternatives_are_bounded(client, value, code, words):
    """0..max_beam - 1 (7 here): the beam must hold alternatives + 1 hypotheses."""
    message = error(lt(client, "/translate", q="Hallo", source="de", target="en", alternatives=value), 400, code,
                    "alternatives")
    assert words in message, message


def test_alternatives_in_a_form_body(client):
    r = client.post("/translate", data={"q": "Hallo", "source": "de", "target": "en", "alternatives": "1"})
    assert r.json()["alternatives"] == ["de>en: HALLO #1"], r.text
    r = client.post("/translate", data={"q": "Hallo", "source": "de", "target": "en", "alternatives": "two"})
    error(r, 400, "wrong_type", "alternatives")


def test_alternatives_are_the_real_models_n_best(tmp_path):
    tiny = load_model(make_random_model_dir(tmp_path / "model", preset="tiny", seed=7))
    text = "Hallo Welt wie geht es dir"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server's worker: spinning OpenMP threads crawl on a busy 2-core machine
    try:
        reference = Translator.from_loaded(tiny, DecodeOptions(), workers=1)
        n_best = [h.text for h in reference.translate_batch([text], DecodeOptions(beam=5, n_best=4))[0]]
    finally:
        torch.set_num_threads(before)
    assert len(set(n_best)) > 1, "the random model should give distinct hypotheses for this check to mean anything"
    with TestClient(create_app({"de-en": tiny}, SETTINGS)) as c:
        r = lt(c, "/translate", q=text, source="de", target="en", alternatives=3)
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["translatedText"] == n_best[0]
    assert body["alternatives"] == [t for i, t in enumerate(n_best) if t != n_best[0] and t not in n_best[:i]]


def test_openapi_documents_detect_and_the_new_fields(client):
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").json()
    validate(spec)
    detect = spec["paths"]["/detect"]["post"]
    assert set(detect["requestBody"]["content"]) == {"application/json", "application/x-www-form-urlencoded"}
    assert detect["requestBody"]["content"]["application/json"]["schema"]["properties"]["q"]["maxLength"] == 300
    lt_request = spec["components"]["schemas"]["LTTranslateRequest"]["properties"]
    assert (lt_request["alternatives"]["minimum"], lt_request["alternatives"]["maximum"]) == (0, SETTINGS.max_beam - 1)
    response = spec["components"]["schemas"]["LTTranslateResponse"]["properties"]
    assert {"translatedText", "alternatives", "detectedLanguage"} <= set(response)
