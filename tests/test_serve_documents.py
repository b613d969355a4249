"""Documents through the server (serve/documents.py): each text is split into sentences
before the micro-batcher, translated once per sentence, and joined back with its lines and
markup; the token limit applies per sentence (long ones are cut, not refused), the cost
budget over the sentences; HTML that does not parse is a 400.

A marking translator double shows that every sentence is translated once and in place; a
tiny random model (fast stored decoding settings) runs the real path, over /v1/translate,
LibreTranslate's /translate and ``mt translate --split``.
"""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from fastapi.testclient import TestClient

from mt.config import DecodeOptions
from mt.decode.options import Hypothesis
from mt.documents import split_text
from mt.modelio import load_model, save_model
from serve.app import create_app
from serve.documents import join_alternatives
from serve.engine import RequestOptions
from serve.settings import ServerSettings
from _serve_support import make_random_model_dir
from _data_support import DATA

EXAMPLE = ("Ein Mann fährt Fahrrad auf der Straße.\nZwei Hunde spielen im Schnee. Eine Frau sieht zu.\n\n"
           "Kinder laufen am Strand.")
MARKED = re.compile(r"⟦(.*?)⟧")


class Marker:
    """Translator double: a segment comes back as ``⟦segment⟧`` (the k-th of the n-best with k
    primes, score -1-k); every call's texts are recorded."""

    def __init__(self, text) -> None:
        self.text, self.meta, self.calls = text, {"src_lang": "de", "tgt_lang": "en"}, []

    def translate_batch(self, texts, opts):
        self.calls.append(list(texts))
        return [[Hypothesis(f"⟦{t}⟧" + "'" * k, [], -1.0 - k) for k in range(opts.n_best)] for t in texts]


def unmarked(text: str) -> str:
    return text.replace("⟦", "").replace("⟧", "")


def german_document() -> tuple[str, list[str]]:
    """About 2,000 characters of German in three paragraphs (the first of two lines), from
    Multi30k's German dev sentences when the data is there, else synthetic; and its sentences."""
    path = DATA / "multi30k" / "val.de"
    if path.is_file():
        pool = [s for s in path.read_text(encoding="utf-8").splitlines() if re.fullmatch(r"[A-ZÄÖÜ][^.!?]*[.!?]", s)]
    else:
        pool = [f"Im Bild Nummer {i} spielt ein Kind mit einem {c} Ball im Park." for i, c in
                enumerate(["roten", "blauen", "grünen", "gelben"] * 20)]
    lines, sentences, it = [], [], iter(pool)
    for _ in range(4):
        line = []
        while sum(len(s) + 1 for s in line) < 420:
            line.append(next(it))
        lines.append(" ".join(line))
        sentences += line
    return f"{lines[0]}\n{lines[1]}\n\n{lines[2]}\n\n{lines[3]}", sentences


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random de→en model whose stored decoding is short (beam 1, 4 tokens): fast."""
    tmp = tmp_path_factory.mktemp("docs")
    loaded = load_model(make_random_model_dir(tmp / "random"))
    return save_model(tmp / "m", loaded.model, loaded.text, loaded.meta,
                      decode=DecodeOptions(beam=1, max_len_a=0.0, max_len_b=4))


@pytest.fixture(scope="module")
def text_pipeline(model_dir):
    return load_model(model_dir).text


SETTINGS = ServerSettings(max_texts=8, max_chars=2000, max_tokens_per_text=256, max_wait_ms=1.0)


@pytest.fixture(scope="module")
def client(text_pipeline):
    with TestClient(create_app({"de-en": Marker(text_pipeline)}, SETTINGS)) as c:
        yield c


def marker(client) -> Marker:
    return client.app.state.engines["de-en"].translator


def v1(client, texts, **fields):
    r = client.post("/v1/translate", json={"texts": texts, **fields})
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------- plain text


def test_the_example_comes_back_as_its_paragraphs_with_every_sentence_translated_once(client):
    marker(client).calls.clear()
    body = v1(client, [EXAMPLE, "Eins. Zwei."])
    assert [t["text"] for t in body["translations"]] == [
        "⟦Ein Mann fährt Fahrrad auf der Straße.⟧\n⟦Zwei Hunde spielen im Schnee.⟧ ⟦Eine Frau sieht zu.⟧"
        "\n\n⟦Kinder laufen am Strand.⟧", "⟦Eins.⟧ ⟦Zwei.⟧"]
    # the sentences of both texts went to the decoder together (in one batch, longest first), once each
    (call,) = marker(client).calls
    assert sorted(call) == sorted(["Ein Mann fährt Fahrrad auf der Straße.", "Zwei Hunde spielen im Schnee.",
                                   "Eine Frau sieht zu.", "Kinder laufen am Strand.", "Eins.", "Zwei."])
    assert body["timings"]["batch_texts"] == 6
    assert body["translations"][0]["score"] == -4.0  # the sentences' scores summed


def test_a_2000_character_german_document_keeps_its_paragraphs_on_both_apis(client):
    doc, sentences = german_document()
    assert 1700 < len(doc) <= 2000 and doc.count("\n\n") == 2
    for out in (v1(client, [doc])["translations"][0]["text"],
                client.post("/translate", json={"q": doc, "source": "de", "target": "en"}).json()["translatedText"]):
        assert MARKED.findall(out) == sentences  # each sentence once, in order
        assert unmarked(out) == doc  # and in place: lines, blank lines, spaces as they were


def test_a_sentence_over_the_token_limit_is_cut_and_translated_not_refused(text_pipeline):
    limit = 40
    long = "Ein Satz, der nie endet " + "und immer weiter geht " * 20 + "bis hier."
    assert len(text_pipeline.encode_source([long])[0]) > limit
    with TestClient(create_app({"de-en": Marker(text_pipeline)}, SETTINGS.replace(max_tokens_per_text=limit))) as c:
        out = v1(c, ["Kurz.", f"Vorher. {long}\nNachher."])["translations"]
    assert out[0]["text"] == "⟦Kurz.⟧"
    pieces = MARKED.findall(out[1]["text"])
    assert len(pieces) > 3 and pieces[0] == "Vorher." and pieces[1] == "Ein Satz," and pieces[-1] == "Nachher."
    assert all(len(ids) <= limit for ids in text_pipeline.encode_source(pieces))
    assert unmarked(out[1]["text"]) == f"Vorher. {long}\nNachher."


def test_blank_texts_are_not_decoded(client):
    marker(client).calls.clear()
    assert [t["text"] for t in v1(client, ["", "  \n "])["translations"]] == ["", "  \n "]
    assert marker(client).calls == []
    assert [t["text"] for t in v1(client, ["", " Eins. "])["translations"]] == ["", " ⟦Eins.⟧ "]


def test_the_cost_budget_counts_every_sentence(client, text_pipeline):
    """Each sentence costs beam x (max output length + 1), so the same words cost more as
    several sentences than as one: the budget must see the sentences."""
    words = "Hund Katze Maus Vogel Fisch " * 4
    one, many = words.strip(), ". ".join(words.split()) + "."
    engine = client.app.state.engines["de-en"]

    def cost(text: str) -> int:
        sents = split_text(text, "de").segments
        return sum(engine.text_costs([len(x) for x in text_pipeline.encode_source(sents)], RequestOptions()))

    assert cost(many) > cost(one)
    budget = cost(one) + 1
    with TestClient(create_app({"de-en": Marker(text_pipeline)}, SETTINGS.replace(max_request_cost=budget))) as c:
        assert c.post("/v1/translate", json={"texts": [one]}).status_code == 200
        r = c.post("/v1/translate", json={"texts": [many]})
        assert r.status_code == 413 and r.json()["code"] == "request_too_costly" and r.json()["field"] == "texts"


def test_n_best_alternatives_are_built_from_each_sentences_hypotheses(client):
    (t,) = v1(client, ["Eins. Zwei."], beam_size=3, n_best=3)["translations"]
    assert t["text"] == "⟦Eins.⟧ ⟦Zwei.⟧" and t["score"] == -2.0
    assert t["n_best"] == [{"text": "⟦Eins.⟧ ⟦Zwei.⟧", "score": -2.0},
                           {"text": "⟦Eins.⟧' ⟦Zwei.⟧'", "score": -4.0},
                           {"text": "⟦Eins.⟧'' ⟦Zwei.⟧''", "score": -6.0}]


def test_join_alternatives_falls_back_to_the_best_and_reports_non_finite_scores():
    docs = [split_text("Yes. No.", "en"), split_text("", "en"), split_text("Maybe.", "en")]
    hyps = [[Hypothesis("a", [], -1.0), Hypothesis("a2", [], -2.0)], [Hypothesis("b", [], -1.0)],
            [Hypothesis("c", [], -math.inf)]]
    assert join_alternatives(docs, hyps, 3) == [[("a b", -2.0), ("a2 b", -3.0)], [("", 0.0)], [("c", None)]]
    assert join_alternatives(docs, hyps, 1) == [[("a b", -2.0)], [("", 0.0)], [("c", None)]]


# ---------------------------------------------------------------------------- HTML

PAGE = ('<div title="a>b" data-q=\'x > y\'><h1>Titel</h1>\n<p class="intro">Das ist <b>sehr <i>wichtig</i></b> '
        '&amp; <a href="/x?a=1&amp;b=2">hier</a>. Zweiter Satz.</p><!-- <p>kein Text</p> -->'
        '<script>if (a < b) { s = "</p>"; }</script><style>p > b { color: red }</style><br>Ende &nbsp;gut.</div>')
PAGE_OUT = ('<div title="a>b" data-q=\'x > y\'><h1>⟦Titel⟧</h1>\n<p class="intro">⟦Das ist <b>sehr '
            '<i>wichtig</i></b> &amp; <a href="/x?a=1&amp;b=2">hier</a>.⟧ ⟦Zweiter Satz.⟧</p>'
            '<!-- <p>kein Text</p> --><script>if (a < b) { s = "</p>"; }</script><style>p > b { color: red }</style>'
            '<br>⟦Ende \u00a0gut.⟧</div>')


def test_html_keeps_its_markup_and_carries_inline_tags(client):
    marker(client).calls.clear()
    assert v1(client, [PAGE], format="html")["translations"][0]["text"] == PAGE_OUT
    (call,) = marker(client).calls
    assert sorted(call) == sorted(["Titel", "Das ist sehr wichtig & hier.", "Zweiter Satz.", "Ende \u00a0gut."])
    r = client.post("/translate", json={"q": [PAGE, "<b>Hallo</b> Welt."], "source": "de", "target": "en",
                                        "format": "html"})
    assert r.status_code == 200, r.text
    assert r.json()["translatedText"] == [PAGE_OUT, "<b>⟦Hallo</b> Welt.⟧"]
    # format text (the default): markup is just text
    assert v1(client, ["<b>Hallo</b>."])["translations"][0]["text"] == "⟦<b>Hallo</b>.⟧"


@pytest.mark.parametrize("doc, where", [("<p>Hallo <b class='x", "line 1, column 10"),
                                        ("<p>Hallo</p>\n<!-- offen", "line 2, column 1")])
def test_html_that_does_not_parse_is_a_400_naming_the_text(client, doc, where):
    r = client.post("/v1/translate", json={"texts": ["<p>gut</p>", doc], "format": "html"})
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == "invalid_html" and err["field"] == "texts[1]"
    assert err["error"].startswith("texts[1]: html: malformed or unclosed markup at " + where)
    r = client.post("/translate", json={"q": doc, "source": "de", "target": "en", "format": "html"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_html" and r.json()["field"] == "q[0]", r.text
    assert v1(client, ["Hallo."])["translations"][0]["text"] == "⟦Hallo.⟧"  # the server is fine


def test_format_is_a_documented_request_field(client):
    r = client.post("/v1/translate", json={"texts": ["x"], "format": "xml"})
    assert r.status_code == 422 and r.json()["field"] == "format"
    spec = client.get("/openapi.json").json()["components"]["schemas"]["TranslateRequest"]["properties"]
    assert spec["format"]["enum"] == ["text", "html"] and spec["format"]["default"] == "text"


# ---------------------------------------------------------------------------- a real (random) model


def test_real_model_keeps_the_line_structure_on_every_path(model_dir, tmp_path):
    """The 2,000-character document through a tiny random model: /v1/translate, LibreTranslate's
    /translate and ``mt translate --split`` all give its three paragraphs back, line for line,
    and the same translation (one sentence, one decode, whatever the path)."""
    import argparse

    from mt.cli import build_parser
    from mt.decode.translator import add_document_arguments, translate_cli

    doc, _ = german_document()
    with TestClient(create_app({"de-en": load_model(model_dir)}, SETTINGS.replace(threads=1))) as c:
        via_v1 = v1(c, [doc])["translations"][0]["text"]
        r = c.post("/translate", data={"q": doc, "source": "de", "target": "en"})
        assert r.status_code == 200, r.text
        via_lt = r.json()["translatedText"]
    (tmp_path / "doc.txt").write_text(doc + "\n", encoding="utf-8")
    args = build_parser().parse_args(["translate", "--model", str(model_dir), "-i", str(tmp_path / "doc.txt"),
                                      "-o", str(tmp_path / "out.txt"), "--threads", "1"])
    parser = argparse.ArgumentParser()
    add_document_arguments(parser)
    vars(args).update(vars(parser.parse_args(["--split"])))
    assert translate_cli(args) == 0
    via_cli = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert via_cli.endswith("\n")
    for out in (via_v1, via_lt, via_cli[:-1]):
        lines = out.split("\n")
        assert [bool(x.strip()) for x in lines] == [True, True, False, True, False, True], out
    assert via_v1 == via_lt == via_cli[:-1]


def test_real_model_translates_each_sentence_as_the_translator_does(model_dir):
    from mt.decode.translator import Translator

    tr = Translator.load(model_dir, threads=1, workers=1)
    expect = tr.translate([EXAMPLE])[0]
    with TestClient(create_app({"de-en": load_model(model_dir)}, SETTINGS.replace(threads=1))) as c:
        assert v1(c, [EXAMPLE])["translations"][0]["text"] == expect
    sentences = split_text(EXAMPLE, "de").segments
    a, b, c_, d = [h[0].text for h in tr.translate_batch(sentences)]
    assert expect == f"{a}\n{b} {c_}\n\n{d}"


def test_translate_documents_is_the_shared_entry_point(client):
    """LibreTranslate's route and any other caller use serve.documents.translate_documents."""
    from serve.documents import DocumentResult, translate_documents

    state = client.app.state.server
    result = client.portal.call(translate_documents, state, state.engines["de-en"], ["Ja. Nein.", ""],
                                RequestOptions(beam=2, n_best=2), "q")
    assert isinstance(result, DocumentResult) and result.texts == ["⟦Ja.⟧ ⟦Nein.⟧", ""]
    assert result.n_best == [[("⟦Ja.⟧ ⟦Nein.⟧", -2.0), ("⟦Ja.⟧' ⟦Nein.⟧'", -4.0)], [("", 0.0)]]
    assert result.batch.batch_texts == 2
    assert asyncio.iscoroutinefunction(translate_documents)
