"""mt.documents: documents ↔ segments. Sentence splitting (abbreviations, numbers, ellipses,
languages without rules), the layout kept exactly, long sentences cut to a token limit, HTML
with its markup kept byte-for-byte and inline tags carried into translations."""

from __future__ import annotations

import re

import pytest

from mt.documents import (DocumentError, Segment, Tag, cut_span, join_all, place_tags, sentence_spans, split,
                          split_html, split_text)
from mt.errors import UserError

EXAMPLE = ("Ein Mann fährt Fahrrad auf der Straße.\nZwei Hunde spielen im Schnee. Eine Frau sieht zu.\n\n"
           "Kinder laufen am Strand.")


def marked(segments: list[str]) -> list[str]:
    """A translation double: each segment marked, so every sentence shows once, in place."""
    return [f"[{s.upper()}]" for s in segments]


def sentences(text: str, lang: str | None) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text, lang)]


# ---------------------------------------------------------------------------- plain text


def test_paragraphs_and_lines_come_back_with_every_sentence_in_place():
    doc = split_text(EXAMPLE, "de")
    assert doc.segments == ["Ein Mann fährt Fahrrad auf der Straße.", "Zwei Hunde spielen im Schnee.",
                            "Eine Frau sieht zu.", "Kinder laufen am Strand."]
    assert doc.join(marked(doc.segments)) == (
        "[EIN MANN FÄHRT FAHRRAD AUF DER STRASSE.]\n[ZWEI HUNDE SPIELEN IM SCHNEE.] [EINE FRAU SIEHT ZU.]\n\n"
        "[KINDER LAUFEN AM STRAND.]")


@pytest.mark.parametrize("text", [
    "", " ", "\n", "\n\n\n", "  Hallo.  ", "Eins. Zwei.\r\n\r\nDrei.\r\n",
    "\tEingerückt. Zwei  Leerzeichen.   Ende.\n",
    "Ohne Punkt am Ende\n\n\n  \nNach Leerzeilen.", "\u00a0Geschütztes Leerzeichen.\u00a0", "Nur\u2028eine Zeile.",
])
def test_layout_is_kept_exactly(text):
    doc = split_text(text, "de")
    assert doc.join(doc.segments) == text
    assert all(s == s.strip() and s for s in doc.segments)
    assert doc.join(["X"] * len(doc.segments)).count("\n") == text.count("\n")


def test_a_line_break_always_ends_a_sentence():
    doc = split_text("Ein Satz, der\nweitergeht.", "de")
    assert doc.segments == ["Ein Satz, der", "weitergeht."]


def test_split_false_keeps_each_line_one_segment():
    assert split_text(EXAMPLE, "de", sentences=False).segments == [
        "Ein Mann fährt Fahrrad auf der Straße.", "Zwei Hunde spielen im Schnee. Eine Frau sieht zu.",
        "Kinder laufen am Strand."]


def test_join_checks_the_number_of_translations():
    doc = split_text("Eins. Zwei.", "de")
    with pytest.raises(ValueError, match="1 translations for 2 segments"):
        doc.join(["x"])
    docs = [split_text("Eins. Zwei.", "de"), split_text("", "de"), split_text("Drei.", "de")]
    assert join_all(docs, ["a", "b", "c"]) == ["a b", "", "c"]
    with pytest.raises(ValueError):
        join_all(docs, ["a", "b"])


# ---------------------------------------------------------------------------- sentences

ABBREVIATIONS = {
    "de": [["Dr. Müller kommt morgen.", "Er bringt Kuchen mit."],
           ["Wir brauchen z. B. Mehl und Zucker.", "Der Rest ist da."],
           ["Das kostet 3.5 Euro.", "Das ist billig."],
           ["Am 3. Oktober ist Feiertag.", "Dann haben alle frei."],
           ["Ich weiß nicht...", "Vielleicht morgen."],
           ["Die U.S. Army ist groß.", "Das weiß jeder."],
           ["Das ist u. a. wichtig, d. h. wir müssen los.", "Sofort."]],
    "en": [["Dr. Smith arrived at 5 p.m. yesterday.", "He was late."],
           ["The U.S. economy grew 3.5 percent.", "Analysts were surprised."],
           ["Mr. and Mrs. Brown, e.g. our neighbours, left.", "We stayed."],
           ["Wait...", "What happened?", "Nobody knows!"],
           ["J. R. R. Tolkien wrote books.", "They are famous."]],
    "fr": [["M. Dupont est arrivé hier.", "Il était en retard."],
           ["Il a payé 3,5 euros, c.-à-d. presque rien.", "C'était bon marché."],
           ["Attends...", "Quoi ?", "Personne ne sait !"],
           ["Le chapitre 3.2 explique tout.", "Lisez-le."]],
    "cs": [["Prof. Novák přišel včera.", "Byl unavený."],
           ["Potřebujeme např. mouku a cukr.", "Zbytek máme."],
           ["Dne 3. října je svátek.", "Pak je volno."],
           ["Čekal jsem...", "Nikdo nepřišel."]],
}


@pytest.mark.parametrize("lang, gold", [(lang, g) for lang, cases in ABBREVIATIONS.items() for g in cases])
def test_abbreviations_numbers_and_ellipses(lang, gold):
    assert sentences(" ".join(gold), lang) == gold


def test_library_breaks_that_no_sentence_starts_like_are_repaired():
    # sentencex alone breaks after "M." and "c." and before "října"; the repairs undo those
    assert sentences("M. Dupont est là. Il attend.", "fr") == ["M. Dupont est là.", "Il attend."]
    assert sentences("Dne 3. října je svátek. Pak je volno.", "cs") == [
        "Dne 3. října je svátek.", "Pak je volno."]
    # ... and keep real breaks: a possessive "'s." is no initial
    assert sentences("This watch was your grandfather's. It is old.", "en") == [
        "This watch was your grandfather's.", "It is old."]


def test_regional_codes_get_their_language_and_unknown_codes_a_fallback():
    text = "Am 3. Oktober ist Feiertag. Dann frei."
    assert sentences(text, "de-AT") == sentences(text, "de_DE") == sentences(text, "de") == [
        "Am 3. Oktober ist Feiertag.", "Dann frei."]
    # no German rules: the library's fallback (English) splits after the ordinal
    assert sentences(text, "en") == ["Am 3.", "Oktober ist Feiertag.", "Dann frei."]
    for lang in ("xx", "chr", None, ""):
        assert sentences("Hello there. How are you?", lang) == ["Hello there.", "How are you?"]


def test_blank_text_has_no_sentences():
    assert sentence_spans("", "de") == [] and sentence_spans(" \t ", "de") == []


# ---------------------------------------------------------------------------- long sentences


def words(text: str) -> int:
    return len(text.split())


def test_long_sentence_is_cut_at_clause_punctuation_first():
    text = "eins zwei drei, vier fünf sechs sieben; acht neun zehn elf zwölf"
    pieces = [text[s:e] for s, e in cut_span(text, 0, len(text), words, 5)]
    assert pieces == ["eins zwei drei,", "vier fünf sechs sieben;", "acht neun zehn elf zwölf"]


def test_long_sentence_without_punctuation_is_cut_between_words():
    text = " ".join(f"w{i}" for i in range(23))
    pieces = [text[s:e] for s, e in cut_span(text, 0, len(text), words, 5)]
    assert [words(p) for p in pieces] == [5, 5, 5, 5, 3]
    assert " ".join(pieces) == text


def test_a_word_longer_than_the_limit_is_cut_between_characters():
    text = "kurz " + "x" * 23 + " ende"
    pieces = [text[s:e] for s, e in cut_span(text, 0, len(text), len, 10)]
    assert pieces == ["kurz", "x" * 10, "x" * 10, "xxx ende"]


def test_split_text_cuts_only_sentences_over_the_limit():
    long = "Ein sehr langer Satz, " + "mit vielen Wörtern " * 6 + "am Ende."
    doc = split_text(f"Kurz. {long}\nNoch einer.", "de", count=words, max_tokens=8)
    assert doc.segments[0] == "Kurz." and doc.segments[-1] == "Noch einer."
    assert all(words(s) <= 8 for s in doc.segments) and len(doc.segments) > 4
    assert doc.segments[1] == "Ein sehr langer Satz,"
    assert doc.join(doc.segments) == f"Kurz. {long}\nNoch einer."


# ---------------------------------------------------------------------------- HTML


def upper(doc) -> str:
    return doc.join([s.upper() for s in doc.segments])


def test_html_markup_is_kept_byte_for_byte():
    src = ('<!DOCTYPE html>\n<div title="a>b" data-x=\'1 > 0\'>\n  <p>Satz eins. Satz zwei.</p>'
           '<!-- ein <b>Kommentar</b> --><script>if (a<b) { x = "</p>"; }</script><style>p > b {}</style>'
           '<BR/>Noch &nbsp;ein Satz &amp; mehr.\n</div>\n')
    doc = split_html(src, "de")
    assert doc.segments == ["Satz eins.", "Satz zwei.", "Noch \u00a0ein Satz & mehr."]
    assert upper(doc) == src.replace("Satz eins. Satz zwei.", "SATZ EINS. SATZ ZWEI.").replace(
        "Noch &nbsp;ein Satz &amp; mehr.", "NOCH \u00a0EIN SATZ &amp; MEHR.")


def test_inline_tags_stay_inside_one_sentence_and_come_back_around_their_words():
    src = '<p class="x">Das ist <b>sehr <i>wichtig</i></b> &amp; <a href="/a?b=1&amp;c=2">hier</a> klar.</p>'
    doc = split_html(src, "de")
    assert doc.segments == ["Das ist sehr wichtig & hier klar."]
    assert upper(doc) == ('<p class="x">DAS IST <b>SEHR <i>WICHTIG</i></b> &amp; <a href="/a?b=1&amp;c=2">HIER</a> '
                          'KLAR.</p>')


def test_inline_tags_keep_their_order_and_nesting_whatever_the_translation():
    src = "<p>Ein <b>roter <i>Ball</i> und</b> ein <em>blauer</em> Hut.</p>"
    doc = split_html(src, "de")
    for translation in ["A red ball and a blue hat.", "Hat.", "",
                        "Un ballon rouge et un très grand chapeau bleu ici."]:
        out = doc.join([translation])
        assert re.findall(r"</?\w+>", out) == re.findall(r"</?\w+>", src)
        assert re.sub(r"</?(b|i|em)>", "", out) == f"<p>{translation}</p>"  # tags only between words


def test_tag_positions_follow_the_words():
    tags = (Tag(4, "<b>", "open", "b"), Tag(9, "</b>", "close", "b"))
    assert place_tags("Ein roter Ball.", tags, "A red ball.") == [2, 5]
    # a pair that held a word keeps one even when the target has fewer words
    tags = (Tag(9, "<b>", "open", "b"), Tag(12, "</b>", "close", "b"))
    assert place_tags("Ein Ball ist rot.", tags, "A ball is red.") == [7, 9]
    assert place_tags("Ein Ball ist rot.", tags, "Ball is red.") == [8, 12]  # proportional: "<b>red.</b>"
    assert place_tags("Ein Ball ist rot.", tags, "Rot.") == [0, 4]  # no word after: the one before


def test_tags_at_sentence_edges_stay_between_the_sentences():
    doc = split_html("<p><b>Erster Satz.</b> <i>Zweiter Satz.</i></p>", "de")
    assert doc.segments == ["Erster Satz.", "Zweiter Satz."]
    assert doc.parts[0] == "<p><b>" and doc.parts[2] == "</b> <i>"
    assert upper(doc) == "<p><b>ERSTER SATZ.</b> <i>ZWEITER SATZ.</i></p>"


def test_block_tags_end_segments_and_code_is_not_translated():
    src = ('<ul><li>Eins<li>Zwei</ul><table><tr><td>Drei<td>Vier</table>Fünf<br>Sechs'
           '<p>Run <code>ls -l</code> now.</p><p translate="no">Nicht übersetzen.</p>'
           '<span class="notranslate">Auch nicht.</span><pre>Vorformatiert.</pre>')
    doc = split_html(src, "de")
    assert doc.segments == ["Eins", "Zwei", "Drei", "Vier", "Fünf", "Sechs", "Run  now."]
    assert doc.join(["One", "Two", "Three", "Four", "Five", "Six", "Run now."]) == src.replace(
        "Eins", "One").replace("Zwei", "Two").replace("Drei", "Three").replace("Vier", "Four").replace(
        "Fünf", "Five").replace("Sechs", "Six")


def test_html_translations_are_escaped():
    doc = split_html("<p>a &lt; b</p>", "de")
    assert doc.segments == ["a < b"]
    assert doc.join(["x < y & z"]) == "<p>x &lt; y &amp; z</p>"


@pytest.mark.parametrize("src, where", [
    ("<p>Hallo <b class='x", "line 1, column 10"),
    ("<p>Hallo</p>\n<!-- nie geschlossen", "line 2, column 1"),
    ("<p>Hallo <b", "line 1, column 10"),
])
def test_html_that_does_not_parse_is_a_one_line_user_error(src, where):
    with pytest.raises(DocumentError, match=where) as e:
        split_html(src, "de")
    assert isinstance(e.value, UserError) and "\n" not in str(e.value) and str(e.value).startswith("html: ")


def test_html_nesting_has_a_limit():
    with pytest.raises(DocumentError, match="nested deeper than 4"):
        split_html("<div>" * 5 + "x", "de", max_depth=4)
    assert split_html("<div>" * 4 + "x", "de", max_depth=4).segments == ["x"]
    # void elements and closed siblings do not nest
    assert len(split_html("<ul>" + "<li>x<br>" * 50 + "</ul>", "de", max_depth=4).segments) == 50


def test_text_that_merely_looks_like_markup_is_text():
    doc = split_html("a < b and 3 <4 > 2", "en")
    assert doc.segments == ["a < b and 3 <4 > 2"]


def test_html_long_sentences_are_cut_too():
    doc = split_html("<p>" + "wort " * 20 + "</p>", "de", count=words, max_tokens=6)
    assert [words(s) for s in doc.segments] == [6, 6, 6, 2]


def test_split_dispatches_by_format():
    assert split("<b>x</b>", "text", "de").segments == ["<b>x</b>"]
    assert split("<b>x</b>", "html", "de").segments == ["x"]
    with pytest.raises(ValueError, match="format"):
        split("x", "xml", "de")  # type: ignore[arg-type]
    assert Segment("x").tags == ()
