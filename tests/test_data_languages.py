"""Per-language defaults (mt/data/languages.py): Cherokee is lossless through the default
pipeline, German/English are what they were, coverage and BLEU tokenizer by language, and
unknown or malformed codes fail with the field named."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import yaml

from mt.config import CleanConfig, ConfigError, SpmConfig, load_config
from mt.data import languages
from mt.data.binarize import IndexedDataset
from mt.data.clean import Cleaner
from mt.data.prepare import prepare
from mt.data.text import TextPipeline, normalize, train_sentencepiece
from mt.evaluate import corpus_scores, length_stats
from _data_support import DATA



def is_cherokee(ch: str) -> bool:
    return "\u13a0" <= ch <= "\u13ff" or "\uab70" <= ch <= "\uabbf"


def first_lines(corpus: str, name: str, n: int) -> list[str] | None:
    """The first ``n`` lines of ``$MT_DATA_DIR/<corpus>/<name>``, or None when it is absent."""
    path = DATA / corpus / name
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def real_lines(corpus: str, name: str, n: int) -> list[str]:
    lines = first_lines(corpus, name, n)
    if lines is None:
        pytest.skip(f"{DATA / corpus / name} not found (set MT_DATA_DIR to the folder holding {corpus}/)")
    return lines


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


# --------------------------------------------------------------------------- Cherokee


@pytest.mark.slow
def test_cherokee_is_lossless_through_the_default_pipeline(tmp_path: Path) -> None:
    """`mt prepare` with default settings on 200 real ChrEn training lines; 200 dev lines
    (unseen by SentencePiece) come back exactly as normalised, every syllable in place."""
    raw = tmp_path / "raw"
    for split, n in (("train", 200), ("dev", 200)):
        for lang in ("chr", "en"):
            write(raw / f"{split}.{lang}", real_lines("chren", f"{split}.{lang}", n))
    cfg = {"run_dir": str(tmp_path / "run"),
           "data": {"src_lang": "chr", "tgt_lang": "en", "data_dir": str(raw),
                    "train": {"src": "train.chr", "tgt": "train.en"}, "valid": {"src": "dev.chr", "tgt": "dev.en"},
                    "spm": {"vocab_size": 1000, "num_threads": 1}}}  # fmt: skip
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = prepare(load_config(tmp_path / "exp.yaml"), progress=False)
    text = TextPipeline.load(out)
    assert text.punct == {"chr": False, "en": True} and text.unicode_form == "NFKC"
    assert json.loads((out / "manifest.json").read_text())["spm"]["character_coverage"]["src"] == 1.0

    def decoded(split: str) -> list[str]:
        ds = IndexedDataset(out / f"{split}.chr")
        return text.decode_source([ds[i].tolist() for i in range(len(ds))])

    # valid is never filtered: line i is dev line i
    for raw_line, back in zip(real_lines("chren", "dev.chr", 200), decoded("valid"), strict=True):
        # the only changes: NFKC compatibility folds (… → ...) and whitespace runs
        assert back == " ".join(unicodedata.normalize("NFKC", raw_line).split())
        assert [c for c in back if is_cherokee(c)] == [c for c in raw_line if is_cherokee(c)]
    # train holds the pairs the cleaner kept, normalised as the cleaner normalised them
    train = zip(real_lines("chren", "train.chr", 200), real_lines("chren", "train.en", 200))
    kept = [s for s, _ in Cleaner(CleanConfig(), "chr", "en")(train)]
    assert len(kept) > 150 and decoded("train") == kept
    # the curly quotes of Cherokee dialogue stay (Moses rules would make them ASCII)
    quoted = [line for line in real_lines("chren", "train.chr", 200) if "\u201d" in line]
    assert quoted and all("\u201d" in text.normalize_source(line) for line in quoted)
    assert any("\u201d" not in normalize(line, "chr", punct=True) for line in quoted)


def test_cherokee_round_trip_through_sentencepiece(tmp_path: Path) -> None:
    """Encode + decode of normalised Cherokee (model trained on other lines) is the identity."""
    lines = real_lines("chren", "train.chr", 400)
    clean = CleanConfig().resolved("chr", "en")
    norm = [normalize(x, "chr", clean.punct_for("chr"), clean.unicode_form) for x in lines]
    write(tmp_path / "spm_in.txt", norm[:200])
    model = train_sentencepiece([tmp_path / "spm_in.txt"], tmp_path / "spm", vocab_size=500, num_threads=1,
                                character_coverage=SpmConfig().coverage_for(("chr",)))  # fmt: skip
    text = TextPipeline("chr", "en", model, normalize_punct=clean.normalize_punct, unicode_form=clean.unicode_form)
    held_out = lines[200:]
    assert text.decode_source(text.encode_source(held_out)) == [text.normalize_source(x) for x in held_out]


# --------------------------------------------------------------------------- German / English as before


def test_german_english_defaults_are_unchanged() -> None:
    clean = CleanConfig()
    assert clean.resolved("de", "en").normalize_punct == {"de": True, "en": True}
    assert clean.unicode_form_for(("de", "en")) == "NFKC" and SpmConfig().coverage_for(("de", "en")) == 1.0
    assert languages.bleu_tokenizer("en") == languages.bleu_tokenizer("de") == "13a"
    examples = {"de": ["Er sagt „ja“ – oder?", "Zwei  Hunde (braun )."], "en": ['He says "yes", fine…', "a ( b )"]}
    for lang, texts in examples.items():
        texts = texts + (first_lines("multi30k", f"val.{lang}", 1014) or [])  # real lines where present
        cleaner = Cleaner(CleanConfig(), "de", "en")
        assert [cleaner._norm(x, lang) for x in texts] == [normalize(x, lang, True, "NFKC") for x in texts]


def test_explicit_settings_still_win() -> None:
    assert CleanConfig(normalize_punct=True).punct_for("chr") is True
    assert CleanConfig(normalize_punct={"en": False}).punct_for("en") is False
    assert CleanConfig(normalize_punct={"en": False}).punct_for("de") is True  # not listed: by language
    assert CleanConfig(unicode_form="NFKC").unicode_form_for(("zh", "en")) == "NFKC"
    assert SpmConfig(character_coverage=0.98).coverage_for(("zh",)) == 0.98


# --------------------------------------------------------------------------- scripts


def test_moses_and_nfkc_stay_away_from_cjk_and_thai() -> None:
    zh = "我们（今天）去，好吗？"
    clean = CleanConfig().resolved("zh", "en")
    assert clean.unicode_form == "NFC" and clean.normalize_punct == {"zh": False, "en": True}
    assert normalize(zh, "zh", clean.punct_for("zh"), clean.unicode_form) == zh
    assert normalize(zh, "zh", True, "NFKC") == "我们 (今天) 去,好吗?"  # what the old defaults did
    thai = "น้ำ"  # SARA AM: NFKC splits it into two characters
    assert CleanConfig().unicode_form_for(("th", "en")) == "NFC"
    assert normalize(thai, "th", False, "NFC") == thai != unicodedata.normalize("NFKC", thai)


@pytest.mark.parametrize(
    "langs, coverage",
    [(("chr",), 1.0), (("en",), 1.0), (("th",), 1.0), (("ru",), 1.0), (("zh",), 0.9995), (("ja",), 0.9995),
     (("ko",), 0.9995), (("zh", "en"), 0.9995), (("chr", "en"), 1.0), (("yue",), 0.9995)],
)  # fmt: skip
def test_character_coverage_by_script(langs: tuple[str, ...], coverage: float) -> None:
    assert SpmConfig().coverage_for(langs) == coverage


@pytest.mark.parametrize(
    "code, unit",
    [("en", "word"), ("de", "word"), ("chr", "word"), ("ko", "word"), ("ar", "word"), ("zh", "char"), ("zh-Hant", "char"),
     ("ja", "char"), ("jpn", "char"), ("th", "char"), ("km", "char"), ("my", "char"), ("bo", "char"), ("ja-Latn", "word")],
)  # fmt: skip
def test_length_unit_by_script(code: str, unit: str) -> None:
    assert languages.length_unit(code) == unit


def test_bleu_tokenizer_by_language(monkeypatch: pytest.MonkeyPatch) -> None:
    assert languages.bleu_tokenizer("zh") == languages.bleu_tokenizer("zh-Hant") == "zh"
    assert languages.bleu_tokenizer("en") == languages.bleu_tokenizer("chr") == "13a"
    assert languages.bleu_tokenizer("th") == "char"
    mecab_ja, mecab_ko = languages.tokenizer_available("ja-mecab"), languages.tokenizer_available("ko-mecab")
    assert languages.bleu_tokenizer("ja") == ("ja-mecab" if mecab_ja else "char")
    assert languages.bleu_tokenizer("ko") == ("ko-mecab" if mecab_ko else "intl")
    assert languages.bleu_tokenizer("ja-Latn") == "13a"  # romaji is spaced Latin text
    assert languages.bleu_tokenizer("zh", {"zh": "char"}) == "char"
    # with the MeCab packages installed, ja/ko get them
    monkeypatch.setattr(languages, "tokenizer_available", lambda name: True)
    languages.language.cache_clear()
    try:
        assert languages.bleu_tokenizer("ja") == "ja-mecab" and languages.bleu_tokenizer("ko") == "ko-mecab"
    finally:
        monkeypatch.undo()
        languages.language.cache_clear()


def test_output_lengths_count_characters_where_there_are_no_spaces() -> None:
    hyps = ["我们今天去公园。", "", "好"]
    assert length_stats(hyps, "zh") == {"mean_len": 3.0, "empty": 1}  # (8 + 0 + 1) / 3 characters
    assert length_stats(hyps) == length_stats(hyps, "de") == {"mean_len": 0.67, "empty": 1}  # whitespace words
    assert length_stats(["a  dog runs "], "en") == {"mean_len": 3.0, "empty": 0}


def test_scores_use_the_target_tokenizer_and_always_chrf() -> None:
    hyps, refs = ["我们今天去公园。"], ["我们明天去公园。"]
    zh, plain = corpus_scores(hyps, refs, lang="zh"), corpus_scores(hyps, refs)
    assert "tok:zh" in zh["bleu_signature"] and "tok:13a" in plain["bleu_signature"]
    assert zh["bleu"] > 0 == plain["bleu"]  # 13a sees one unsplit "word" per sentence
    assert zh["chrf"] == plain["chrf"] > 0
    assert "tok:char" in corpus_scores(hyps, refs, tokenize="char")["bleu_signature"]


# --------------------------------------------------------------------------- codes


@pytest.mark.parametrize("code", ["de", "chr", "yue", "deu", "pt-BR", "zh_Hant", "sr-Latn", "haw", "DE"])
def test_known_codes_are_accepted(code: str) -> None:
    assert languages.check_code(code, "data.src_lang") == code


def test_three_letter_iso639_2_codes_behave_as_their_two_letter_language() -> None:
    assert languages.language("deu").moses_punct and languages.language("ger").base == "de"
    assert languages.language("zho").bleu_tokenize == "zh" and languages.language("tha").nfkc is False
    unknown = languages.language("xyz")  # well-formed, not in the table: conservative
    assert (unknown.moses_punct, unknown.nfkc, unknown.bleu_tokenize) == (False, False, "13a")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("src_lang", "xx", r"data\.src_lang: unknown language code 'xx' \('xx' is not an ISO 639-1 code\)"),
        ("tgt_lang", "eb", r"data\.tgt_lang: unknown language code 'eb'"),
        ("src_lang", "english", r"data\.src_lang: malformed language code 'english'"),
        ("tgt_lang", "de-", r"data\.tgt_lang: malformed language code"),
        ("tgt_lang", "d3", r"data\.tgt_lang: malformed language code"),
        ("src_lang", 5, r"data\.src_lang: malformed language code '5'"),
        ("src_lang", "", r"data\.src_lang: malformed language code ''"),
    ],
)
def test_bad_codes_fail_naming_the_field(tmp_path: Path, field: str, value: object, message: str) -> None:
    data = {"src_lang": "de", "tgt_lang": "en", "train": {"src": "a", "tgt": "b"}, field: value}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "\n" not in str(e.value)


def test_bleu_tokenize_override_is_checked(tmp_path: Path) -> None:
    def load(tokenize: dict) -> object:
        data = {"src_lang": "de", "tgt_lang": "zh", "train": {"src": "a", "tgt": "b"}, "bleu_tokenize": tokenize}
        (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
        return load_config(tmp_path / "exp.yaml")

    assert load({"zh": "char"}).data.bleu_tokenize_for("zh") == "char"
    assert load({}).data.bleu_tokenize_for("zh") == "zh"
    with pytest.raises(ConfigError, match=r"data\.bleu_tokenize\.zh: unknown BLEU tokenizer 'flores200'"):
        load({"zh": "flores200"})
    with pytest.raises(ConfigError, match=r"data\.bleu_tokenize\.xx: unknown language code"):
        load({"xx": "13a"})
    if not languages.tokenizer_available("ja-mecab"):
        with pytest.raises(ConfigError, match=r"data\.bleu_tokenize\.ja: .*'ja-mecab' needs extra packages"):
            load({"ja": "ja-mecab"})
