"""Language identification (mt/langid.py): accuracy on real short sentences, restricted to the
candidates as the server uses it, and the rules around the model (candidates, the Cherokee
script rule, empty text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mt import langid
from _data_support import DATA

MULTI30K = ["de", "en", "fr", "cs"]


def lines(path: Path, n: int) -> list[str]:
    if not path.is_file():
        pytest.skip(f"no test data at {path} (set MT_DATA_DIR to the folder with multi30k/ and chren/)")
    return [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()][:n]


def accuracy(samples: dict[str, list[str]], candidates: list[str]) -> dict[str, float]:
    return {lang: sum(langid.detect(s, candidates)[0][0] == lang for s in texts) / len(texts)
            for lang, texts in samples.items()}


def test_accuracy_on_multi30k_sentences():
    """200 test2016 sentences per language, candidates = the 4 languages (measured: 100%)."""
    samples = {lang: lines(DATA / f"multi30k/test2016.{lang}", 200) for lang in MULTI30K}
    acc = accuracy(samples, MULTI30K)
    assert min(acc.values()) >= 0.98, acc


def test_accuracy_on_three_word_prefixes():
    """Very short texts (the first 3 words of each sentence): the hard case (measured: 99.6%)."""
    samples = {lang: [" ".join(s.split()[:3]) for s in lines(DATA / f"multi30k/test2016.{lang}", 200)]
               for lang in MULTI30K}
    acc = accuracy(samples, MULTI30K)
    assert sum(acc.values()) / len(acc) >= 0.97 and min(acc.values()) >= 0.94, acc


def test_cherokee_test_set_by_the_script_rule():
    chr_lines = lines(DATA / "chren/test.chr", 200)
    en_lines = lines(DATA / "chren/test.en", 200)
    acc = accuracy({"chr": chr_lines, "en": en_lines}, ["en", "chr"])
    assert acc == {"chr": 1.0, "en": 1.0}


def test_ranking_covers_every_candidate_with_probabilities():
    ranked = langid.detect("Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.", ["en", "de", "fr"])
    assert [lang for lang, _ in ranked][0] == "de"
    assert sorted(lang for lang, _ in ranked) == ["de", "en", "fr"]
    assert all(0.0 <= p <= 1.0 for _, p in ranked)
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-4)
    assert ranked == sorted(ranked, key=lambda lp: -lp[1])


def test_restricted_to_candidates():
    text = "Un homme avec un chapeau orange regardant quelque chose."
    assert langid.detect(text, ["fr", "de", "en"])[0][0] == "fr"
    # without French among the candidates, French is never the answer
    ranked = langid.detect(text, ["de", "en"])
    assert {lang for lang, _ in ranked} == {"de", "en"}
    # one candidate: it is the answer, with certainty
    assert langid.detect(text, ["cs"]) == [("cs", 1.0)]
    # duplicates count once
    assert [lang for lang, _ in langid.detect(text, ["fr", "fr", "en"])] == ["fr", "en"]


def test_cherokee_script_rule():
    text = "ᎣᏏᏲ, ᏙᎯᏧ? ᎣᏍᏓ ᏕᏣᏙᎮᎦ."
    assert "chr" not in langid.model_languages()  # the model does not know it: the rule does
    ranked = langid.detect(text, ["en", "de", "chr"])
    assert ranked[0] == ("chr", 1.0)
    assert [p for _, p in ranked[1:]] == [0.0, 0.0]
    # the lower-case Cherokee block (U+AB70-U+ABBF) counts too
    assert langid.detect("\uab70\uab71\uab72 \uab80", ["en", "chr"])[0][0] == "chr"
    # mixed text: Cherokee gets the share of the letters in its script, the rest is shared
    mixed = dict(langid.detect("ᎣᏏᏲ Hello", ["en", "chr"]))
    assert mixed["chr"] == pytest.approx(3 / 8) and mixed["en"] == pytest.approx(5 / 8)
    # Latin text with Cherokee among the candidates: Cherokee gets nothing
    assert dict(langid.detect("The cat sat on the mat.", ["chr", "en"])) == {"en": 1.0, "chr": 0.0}


def test_language_known_to_neither_gets_zero():
    ranked = langid.detect("Der Hund läuft über die Wiese.", ["xx", "de"])
    assert ranked == [("de", 1.0), ("xx", 0.0)]
    assert langid.detect("Der Hund läuft.", ["xx", "chr"]) == [("xx", 0.0), ("chr", 0.0)]  # ties: caller's order


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_empty_text_is_an_error(text):
    with pytest.raises(langid.EmptyTextError, match="empty or only whitespace"):
        langid.detect(text, ["de", "en"])


def test_no_candidates_is_an_error():
    with pytest.raises(ValueError, match="candidates"):
        langid.detect("Hallo Welt", [])
