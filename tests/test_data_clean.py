"""Training-bitext filters: each rule fires, counts add up, output is normalised."""

from __future__ import annotations

import dataclasses

import pytest

from mt.config import CleanConfig
from mt.data.clean import DROP_RULES, Cleaner


def run(pairs: list[tuple[str, str]], **kw) -> tuple[list[tuple[str, str]], Cleaner]:
    cleaner = Cleaner(CleanConfig(**kw), "de", "en")
    return list(cleaner(pairs)), cleaner


def test_each_rule_counts_once() -> None:
    pairs = [
        ("Ein Hund läuft.", "A dog runs."),  # kept
        ("", "empty source"),  # empty
        ("   ", "\t"),  # empty (whitespace only)
        ("eins", "one"),  # too_short (min 2)
        ("a " * 20, "b " * 20),  # too_long (max 10)
        ("ein Hund", "a dog that runs across the big green field"),  # ratio (2 vs 9 > 3)
        ("Hallo Welt", "Hallo Welt"),  # identical
        ("Ein  Hund läuft.", "A dog runs."),  # duplicate after whitespace normalisation
        ("Zwei „Katzen“ schlafen.", 'Two "cats" sleep.'),  # kept, quotes normalised
    ]
    kept, cleaner = run(pairs, min_tokens=2, max_tokens=10, max_ratio=3.0)
    r = cleaner.report
    assert kept == [("Ein Hund läuft.", "A dog runs."), ('Zwei "Katzen" schlafen.', 'Two "cats" sleep.')]
    assert (r.empty, r.too_short, r.too_long, r.ratio, r.identical, r.duplicate) == (2, 1, 1, 1, 1, 1)
    assert r.read == len(pairs) and r.kept == 2 and r.kept + r.dropped == r.read


def test_switches_turn_rules_off() -> None:
    pairs = [("Hallo Welt", "Hallo Welt"), ("Hallo Welt", "Hallo Welt")]
    kept, cleaner = run(pairs, dedup=False, drop_identical=False)
    assert len(kept) == 2 and cleaner.report.dropped == 0


def test_control_chars_strip_or_drop() -> None:
    pairs = [("Ein\x00 Hund\x07", "A dog\x1b"), ("Katze", "cat")]
    kept, cleaner = run(pairs, control_chars="strip")
    assert kept == [("Ein Hund", "A dog"), ("Katze", "cat")]
    assert cleaner.report.control_stripped == 1 and cleaner.report.control_chars == 0
    kept, cleaner = run(pairs, control_chars="drop")
    assert kept == [("Katze", "cat")] and cleaner.report.control_chars == 1


def test_punct_normalisation_per_language() -> None:
    pairs = [("Er sagt „ja“.", "He says „yes“.")]
    kept, _ = run(pairs, normalize_punct={"de": False})  # en not listed: on
    assert kept == [("Er sagt „ja“.", 'He says "yes."')]  # Moses en moves the period inside
    kept, _ = run(pairs, normalize_punct=False)
    assert kept == pairs


def test_invalid_utf8_from_reader_is_reported() -> None:
    cleaner = Cleaner(CleanConfig(), "de", "en")
    list(cleaner([("a b", "c d")]))
    cleaner.add_invalid_utf8(3)
    r = cleaner.report
    assert (r.read, r.invalid_utf8, r.kept) == (4, 3, 1) and r.kept + r.dropped == r.read
    table = r.format()
    assert all(rule in table for rule in DROP_RULES) and "kept" in table


def test_report_fields_cover_rules() -> None:
    names = {f.name for f in dataclasses.fields(Cleaner(CleanConfig(), "de", "en").report)}
    assert set(DROP_RULES) <= names


# --------------------------------------------------------------------------- languages without spaces

# (English, Chinese) and (English, Thai) translations with ordinary length ratios: counted in
# whitespace tokens, every Chinese or Thai sentence is one token, so the ratio rule would drop them.
EN_ZH = [
    ("I like this book very much.", "我非常喜欢这本书。"),
    ("The weather is nice today, let's go for a walk in the park.", "今天天气很好，我们去公园散步吧。"),
    ("Where is the nearest train station?", "最近的火车站在哪里？"),
    ("She has been learning Chinese for three years.", "她学中文已经三年了。"),
    ("Please close the window before you leave.", "你走之前请把窗户关上。"),
]
EN_TH = [
    ("I would like to order a cup of coffee please.", "ฉันต้องการสั่งกาแฟหนึ่งแก้วครับ"),
    ("Where is the bathroom?", "ห้องน้ำอยู่ที่ไหน"),
    ("My brother works at a hospital in Bangkok.", "พี่ชายของฉันทำงานที่โรงพยาบาลในกรุงเทพ"),
]


def calibrated(src: str, tgt: str, pairs: list[tuple[str, str]], **kw) -> Cleaner:
    cleaner = Cleaner(CleanConfig(**kw), src, tgt)
    cleaner.calibrate(pairs)
    return cleaner


def test_unspaced_languages_keep_ordinary_pairs() -> None:
    for src, tgt, pairs in (("en", "zh", EN_ZH), ("en", "th", EN_TH), ("zh", "en", [(t, s) for s, t in EN_ZH])):
        cleaner = calibrated(src, tgt, pairs)
        assert list(cleaner(pairs)) == pairs, (src, tgt, cleaner.report)
        assert cleaner.lengths.rescaled and cleaner.lengths.scale > 0


def test_unspaced_language_ratio_rule_still_drops_misaligned_pairs() -> None:
    cleaner = calibrated("en", "zh", EN_ZH)
    misaligned = [("Yes.", "今天天气很好，我们去公园散步吧。最近的火车站在哪里？"), ("Please close the window before you leave, and lock the door too.", "好。")]
    assert list(cleaner(misaligned)) == [] and cleaner.report.ratio == 2


def test_unspaced_language_max_tokens_is_in_words_of_the_spaced_side() -> None:
    cleaner = calibrated("en", "th", EN_TH, max_tokens=20)
    (en, th), scale = EN_TH[0], cleaner.lengths.scale  # scale: English words per Thai character
    assert list(cleaner([(" ".join([en] * 2), th * 2)]))  # 20 English words, 2 × the Thai: kept
    assert not list(cleaner([(" ".join([en] * 3), th * 3)])) and cleaner.report.too_long == 1
    limits = cleaner.lengths.raw_limits(20)
    assert limits[0] == 20 and abs(limits[1] * scale - 20) < 1e-9
    assert len(th) * 2 <= limits[1] < len(th) * 3  # the Thai side's character limit sits between the two


def test_spaced_pairs_are_not_rescaled() -> None:
    pairs = [("Ein Hund läuft.", "A dog runs."), ("Zwei Katzen schlafen auf dem Sofa.", "Two cats sleep on the sofa.")]
    cleaner = calibrated("de", "en", pairs)
    assert (cleaner.lengths.src_unit, cleaner.lengths.tgt_unit, cleaner.lengths.scale) == ("word", "word", 1.0)
    assert cleaner.lengths.comparable(3, 7) == (3, 7)


def test_lengths_limits_and_swap_agree() -> None:
    from mt.data.clean import Lengths

    for lengths in (Lengths("word", "char", 0.6), Lengths("char", "word", 1.7), Lengths("char", "char", 2.5), Lengths()):
        assert lengths.comparable(*lengths.raw_limits(50)) == pytest.approx((50, 50))
        a, b = lengths.comparable(30, 40)
        c, d = lengths.swapped().comparable(40, 30)
        assert max(a, b) / min(a, b) == pytest.approx(max(c, d) / min(c, d))  # the same ratio read from either side
