"""Training-bitext filters: each rule fires, counts add up, output is normalised."""

from __future__ import annotations

import dataclasses

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
