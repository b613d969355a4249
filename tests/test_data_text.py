"""Normalisation and the SentencePiece text pipeline: exact round trips, ids, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from mt.data.text import SMALL_LIST, TextPipeline, normalize, train_sentencepiece
from _data_support import DATA, multi30k_dir


TRICKY = [
    "  Zwei   Männer\tstehen \u00a0am  Strand.  ",
    "Ein Schild: „Welcome Bikers“.",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３",
    "ﬁne ligature … and dashes – —",
    "ctrl\x00char\x07s and\x1b[0m escapes\x85next",
    "spm space \u2581 marker",
    "emoji 😀 and 中文 and ελληνικά",
    "( Cæ\x85) quote \" , here",
    "'single' « guillemets » ‚low‘",
    "",
    "   ",
]


# --------------------------------------------------------------------------- normalize


def test_normalize_examples() -> None:
    assert normalize("  a   b\tc\u00a0d  ", "en") == "a b c d"
    assert normalize("Ｆｕｌｌ ＡＢＣ １２３", "en") == "Full ABC 123"  # NFKC
    assert normalize("Schild „Welcome“.", "de") == 'Schild "Welcome".'  # Moses quotes
    assert normalize("Schild „Welcome“.", "de", punct=False) == "Schild „Welcome“."
    assert normalize("a\x00b\x07c", "en") == "abc"  # control characters removed
    assert normalize("x \u2581 y", "en") == "x _ y"
    assert normalize("ﬁ", "en", unicode_form="none") == "ﬁ"


@pytest.mark.parametrize("lang", ["de", "en", "fr"])
def test_normalize_is_idempotent(lang: str) -> None:
    for text in TRICKY:
        once = normalize(text, lang)
        assert normalize(once, lang) == once, repr(text)
        assert once == once.strip() and "  " not in once


@pytest.mark.parametrize("lang", ["de", "en", "fr", "cs", "zh"])
def test_compiled_moses_rules_equal_sacremoses(lang: str) -> None:
    """mt compiles sacremoses' punctuation rules once; the output must stay sacremoses' own."""
    import random

    from sacremoses import MosesPunctNormalizer

    from mt.data.text import _punct_normalizer

    moses, ours = MosesPunctNormalizer(lang=lang), _punct_normalizer(lang)
    pieces = ["a", "b", " ", "  ", ".", ",", ";", ":", "!", "?", "'", '"', "„", "“", "”", "«", "»", "‘", "’", "–", "—",
              "(", ")", "%", "…", "1", "2,5", " ", "``", "''", "´", "`", "€", "’s", " nº ", "º", "ª"]  # fmt: skip
    rng = random.Random(lang)
    texts = TRICKY + ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) for _ in range(3000)]
    root = DATA / "multi30k"  # real sentences too, where the data directory is present
    for name in ("val.de", "val.en", "val.fr"):
        if (root / name).is_file():
            texts += (root / name).read_text(encoding="utf-8").splitlines()
    for text in texts:
        assert ours.normalize(text) == moses.normalize(text), repr(text)


# --------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A joint model trained on a tiny synthetic corpus (well under a second)."""
    d = tmp_path_factory.mktemp("spm")
    words = "ein zwei drei hund katze mann frau läuft springt one two three dog cat man woman runs jumps".split()
    lines = [" ".join(words[(i * k) % len(words)] for k in range(1, 8)) + "." for i in range(400)]
    (d / "train.txt").write_text("\n".join(normalize(x, "en") for x in lines) + "\n", encoding="utf-8")
    return train_sentencepiece([d / "train.txt"], d / "spm", vocab_size=400, user_symbols=["<bt>", "<2en>"])


def test_special_and_user_ids(tiny_spm: Path) -> None:
    text = TextPipeline("de", "en", tiny_spm, tiny_spm)
    assert [text.piece_to_id(p) for p in ("<pad>", "<unk>", "<s>", "</s>", "<bt>", "<2en>")] == [0, 1, 2, 3, 4, 5]
    assert text.joint and text.vocab_size == text.src_vocab_size == text.tgt_vocab_size
    ids = text.encode_source(["ein hund läuft."])[0]
    assert ids and all(4 <= i < text.vocab_size for i in ids)  # no BOS/EOS, no unk


def test_round_trip_exact_on_unseen_text(tiny_spm: Path) -> None:
    """Characters never seen in training come back through byte fallback, not as ⁇."""
    text = TextPipeline("de", "en", tiny_spm)
    ids = text.encode_target(TRICKY)
    assert 1 not in {i for seq in ids for i in seq}  # never <unk>
    assert text.decode_target(ids) == [normalize(x, "en") for x in TRICKY]
    assert text.decode_source(text.encode_source(TRICKY)) == [normalize(x, "de") for x in TRICKY]


def test_short_and_long_lists_encode_alike(tiny_spm: Path) -> None:
    """Lists shorter than SMALL_LIST go one string at a time (SentencePiece's list call costs
    ~0.1 ms of thread-pool start-up); both paths must give the same ids and texts."""
    text = TextPipeline("de", "en", tiny_spm, target_lang_tag=True)
    texts = [f"ein hund {w} läuft." for w in TRICKY * (SMALL_LIST // len(TRICKY) + 2)][: SMALL_LIST + 3]
    assert len(texts) >= SMALL_LIST
    whole = text.encode_source(texts)  # the list path
    assert [text.encode_source([t])[0] for t in texts] == whole
    assert [text.encode_target([t])[0] for t in texts] == text.encode_target(texts)
    assert [text.decode_source([ids])[0] for ids in whole] == text.decode_source(whole)
    assert text.decode_source(whole[:3]) == [normalize(t, "de") for t in texts[:3]]
    assert all(isinstance(i, int) for seq in text.encode_source(texts[:2]) for i in seq)


def test_save_load_and_lang_tag(tiny_spm: Path, tmp_path: Path) -> None:
    text = TextPipeline("de", "en", tiny_spm, normalize_punct={"de": False}, target_lang_tag=True)
    text.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spm.model", "text.json"]
    loaded = TextPipeline.load(tmp_path)
    src = ["Ein „Hund“ läuft."]
    assert loaded.encode_source(src) == text.encode_source(src)
    assert loaded.encode_source(src)[0][0] == loaded.piece_to_id("<2en>")  # tag first
    assert loaded.punct == {"de": False, "en": True}
    assert loaded.decode_source(loaded.encode_source(src)) == ["Ein „Hund“ läuft."]  # de: no punct norm


def test_separate_vocabularies(tiny_spm: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("\n".join(f"wort{i % 37} satz{i % 11}" for i in range(300)) + "\n", encoding="utf-8")
    tgt = train_sentencepiece([other], tmp_path / "tgt", vocab_size=300, user_symbols=["<bt>", "<2en>"])
    text = TextPipeline("de", "en", tiny_spm, tgt)
    assert not text.joint and text.vocab_size == max(text.src_vocab_size, text.tgt_vocab_size)
    text.save(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {"spm.src.model", "spm.tgt.model", "text.json"}
    again = TextPipeline.load(tmp_path / "saved")
    assert again.decode_target(again.encode_target(["wort3 satz4"])) == ["wort3 satz4"]
    assert again.piece_to_id("<bt>") == 4


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_multi30k_val_round_trip(tmp_path: Path) -> None:
    """Acceptance: decode(encode(x)) == normalize(x), exactly, for every line of val (and test2016).

    The model is trained on a 3000-pair slice of train; test2016 holds characters that slice
    never shows (``#``, ``6``-``8``, ``Ä``), which must come back through byte fallback.
    """
    data = multi30k_dir()
    files = []
    for lang in ("de", "en"):
        with open(data / f"train.{lang}", encoding="utf-8") as f:
            lines = [normalize(next(f), lang) for _ in range(3000)]
        (tmp_path / lang).write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(tmp_path / lang)
    model = train_sentencepiece(files, tmp_path / "spm", vocab_size=2000, num_threads=2)
    text = TextPipeline("de", "en", model)
    for split, n in (("val", 1014), ("test2016", 1000)):
        src = (data / f"{split}.de").read_text(encoding="utf-8").splitlines()
        tgt = (data / f"{split}.en").read_text(encoding="utf-8").splitlines()
        assert len(src) == len(tgt) == n
        assert text.decode_source(text.encode_source(src)) == [normalize(x, "de") for x in src], split
        assert text.decode_target(text.encode_target(tgt)) == [normalize(x, "en") for x in tgt], split
