"""The text pipeline with an explicit vocabulary (imported MarianMT models): SentencePiece
gives pieces, ``vocab.json`` gives their model ids; text.json format 2; its validation; and
``data.spm_from`` reusing such a directory. No transformers needed (tests/test_marian_import.py
checks the same pipeline against MarianTokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
import yaml

from mt.data import DataError
from mt.data.text import SMALL_LIST, TextPipeline, Vocabulary, read_vocab, train_sentencepiece
from mt.errors import UserError

WORDS = "ein zwei drei hund katze mann frau läuft springt one two three dog cat man woman runs jumps".split()


def _spm(d: Path, name: str, words: list[str]) -> Path:
    """A SentencePiece model with its own ids (unk 0, bos 1, eos 2) and normaliser (nmt_nfkc),
    as Marian's are."""
    lines = [" ".join(words[(i * k) % len(words)] for k in range(1, 7)) + "." for i in range(300)]
    spm.set_random_generator_seed(1)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(d / name), vocab_size=60,
                                   normalization_rule_name="nmt_nfkc", hard_vocab_limit=False, num_threads=1,
                                   minloglevel=2)  # fmt: skip
    return d / f"{name}.model"


def _pieces(*models: Path) -> list[str]:
    """Marian's layout: </s> 0, <unk> 1, language tokens, the spm pieces (reversed: no relation
    to SentencePiece's ids), <pad> last."""
    out = ["</s>", "<unk>", ">>fra<<", ">>eng<<"]
    for m in models:
        sp = spm.SentencePieceProcessor(model_file=str(m))
        ordinary = [i for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
        out += [sp.id_to_piece(i) for i in reversed(ordinary)]
    return list(dict.fromkeys(out)) + ["<pad>"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("vocab")
    src, tgt = _spm(d, "src", WORDS[:9]), _spm(d, "tgt", WORDS[9:])
    pieces = tuple(_pieces(src, tgt))
    vocab = Vocabulary(pieces, pieces, pad_id=len(pieces) - 1, unk_id=1, eos_id=0)
    return {"dir": d, "src": src, "tgt": tgt, "vocab": vocab}


def _pipeline(models, vocab=None, **kw) -> TextPipeline:
    return TextPipeline("de", "en", models["src"], models["tgt"], False, unicode_form="none",
                        vocab=vocab or models["vocab"], **kw)  # fmt: skip


def test_encode_maps_pieces_to_vocabulary_ids(models) -> None:
    text, v = _pipeline(models), models["vocab"]
    sp = spm.SentencePieceProcessor(model_file=str(models["src"]))
    sentence = "ein hund läuft."  # German: the source model's words
    assert text.encode_source([sentence]) == [[v.src_index[p] for p in sp.encode(sentence, out_type=str)]]
    # a leading language token is one id, never split; an unknown one is <unk>; inside the text it is text
    ids = text.encode_source([">>fra<< ein hund", ">>eng<<ein hund", ">>xyz<< ein", "ein >>fra<<"])
    assert ids[0][0] == v.src_index[">>fra<<"] and ids[0][1:] == text.encode_source(["ein hund"])[0]
    assert ids[1] == [v.src_index[">>eng<<"]] + text.encode_source(["ein hund"])[0]
    assert ids[2][0] == v.unk_id
    assert v.src_index[">>fra<<"] not in ids[3]
    # a piece the vocabulary lacks (the byte of "€", never seen) encodes as <unk>; no mt normalisation
    assert v.unk_id in text.encode_source(["ein € hund"])[0]
    assert text.normalize_source("„Ein“  Hund\u00a0") == "„Ein“ Hund"
    assert text.unk_id == 1 and text.piece_to_id(">>fra<<") == 2 and text.piece_to_id("nope") == 1


def test_decode_drops_special_ids_and_language_tokens(models) -> None:
    text, v = _pipeline(models), models["vocab"]
    ids = text.encode_target(["two dog runs.", "one cat"])
    noisy = [[v.src_index[">>fra<<"], *ids[0], v.pad_id, v.eos_id, 10_000, -1], [v.unk_id, *ids[1]]]
    assert text.decode_target(noisy) == ["two dog runs.", "one cat"]
    assert text.decode_source([[v.src_index[">>eng<<"], *text.encode_source(["ein hund"])[0]]]) == ["ein hund"]
    # pieces only the source model knows, decoded by the target model: their text, not ⁇
    tgt_sp = spm.SentencePieceProcessor(model_file=str(models["tgt"]))
    german = text.encode_source(["ein hund läuft"])[0]
    assert any(tgt_sp.piece_to_id(v.src[i]) == tgt_sp.unk_id() for i in german)
    assert text.decode_target([german + text.encode_target(["dog"])[0]]) == ["ein hund läuft dog"]


def test_short_and_long_lists_alike(models) -> None:
    text = _pipeline(models)
    texts = [f">>fra<< ein hund {w} läuft." for w in WORDS * 3][: SMALL_LIST + 5]
    whole = text.encode_source(texts)
    assert [text.encode_source([t])[0] for t in texts] == whole
    assert [text.decode_source([ids])[0] for ids in whole] == text.decode_source(whole)
    tgt = text.encode_target(texts)
    assert text.decode_target(tgt) == [text.decode_target([ids])[0] for ids in tgt]


def test_vocabularies_and_sizes(models, tmp_path) -> None:
    text, v = _pipeline(models), models["vocab"]
    assert text.source_vocabulary() == text.target_vocabulary() == list(v.src)
    assert text.joint and not text.same_spm and text.vocab_size == len(v.src)
    # separate vocabularies: each side its own list, special ids shared
    tgt = tuple(v.src[:4]) + tuple(reversed(v.src[4:-1])) + ("<pad>",)
    sep = _pipeline(models, Vocabulary(v.src, tgt, v.pad_id, v.unk_id, v.eos_id))
    assert not sep.joint and sep.target_vocabulary() == list(tgt) and sep.id_to_piece(4) == tgt[4]
    assert sep.decode_target(sep.encode_target(["two dog runs."])) == ["two dog runs."]
    sep.save(tmp_path)
    names = {"text.json", "spm.src.model", "spm.tgt.model", "vocab.src.json", "vocab.tgt.json"}
    assert {p.name for p in tmp_path.iterdir()} == names
    again = TextPipeline.load(tmp_path)
    assert again.vocab == sep.vocab and again.encode_target(["two dog"]) == sep.encode_target(["two dog"])
    # mt's own pipeline: SentencePiece's ids are the model ids, as before
    own = _own_spm(tmp_path)
    native = TextPipeline("de", "en", own)
    sp = spm.SentencePieceProcessor(model_file=str(own))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert native.source_vocabulary() == pieces == native.target_vocabulary()
    assert native.vocab is None and native.unk_id == 1


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _own_spm(d: Path) -> Path:
    """An mt-trained model (ids 0..3 = pad, unk, bos, eos; no vocabulary file)."""
    return train_sentencepiece([_write(d / "c.txt", WORDS)], d / "own", vocab_size=40, byte_fallback=False, user_symbols=[])


def test_save_load_format_2(models, tmp_path) -> None:
    text = _pipeline(models, target_lang_tag=False)
    text.save(tmp_path)
    cfg = json.loads((tmp_path / "text.json").read_text())
    v = models["vocab"]
    assert cfg == {
        "format": 2, "src_lang": "de", "tgt_lang": "en", "normalize_punct": {"de": False, "en": False},
        "unicode_form": "none", "target_lang_tag": False, "spm": {"src": "spm.src.model", "tgt": "spm.tgt.model"},
        "vocab": {"src": "vocab.json", "tgt": "vocab.json", "pad_id": v.pad_id, "unk_id": 1, "eos_id": 0},
    }  # fmt: skip
    assert read_vocab(tmp_path / "vocab.json") == v.src  # Marian's {piece: id} format
    loaded = TextPipeline.load(tmp_path)
    texts = [">>fra<< Ein Hund läuft.", "two cat"]
    assert loaded.vocab == v and loaded.encode_source(texts) == text.encode_source(texts)
    assert loaded.decode_target(loaded.encode_target(texts)) == text.decode_target(text.encode_target(texts))


def test_format_1_is_unchanged(tmp_path) -> None:
    """mt's own directories keep writing (and reading) format 1, with no vocab entry."""
    own = _own_spm(tmp_path)
    TextPipeline("de", "en", own).save(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "text.json").read_text())
    assert list(cfg) == ["format", "src_lang", "tgt_lang", "normalize_punct", "unicode_form", "target_lang_tag", "spm"]
    assert cfg["format"] == 1 and sorted(p.name for p in (tmp_path / "d").iterdir()) == ["spm.model", "text.json"]
    del cfg["format"]  # the oldest files have no format field
    (tmp_path / "d" / "text.json").write_text(json.dumps(cfg))
    assert TextPipeline.load(tmp_path / "d").vocab is None


def _corrupt(models, tmp_path: Path, edit=None, files=None) -> Path:
    d = tmp_path / "bad"
    _pipeline(models).save(d)
    if edit:
        cfg = json.loads((d / "text.json").read_text())
        edit(cfg)
        (d / "text.json").write_text(json.dumps(cfg))
    for name, content in (files or {}).items():
        (d / name).write_text(content)
    return d


BAD_TEXT_JSON = {
    "format-3": (lambda c: c.update(format=3), None, "format"),
    "vocab-in-format-1": (lambda c: c.update(format=1), None, "vocab: needs format 2"),
    "format-2-no-vocab": (lambda c: c.pop("vocab"), None, "vocab: missing"),
    "vocab-not-mapping": (lambda c: c.update(vocab="vocab.json"), None, "vocab: expected a mapping"),
    "vocab-file-outside": (lambda c: c["vocab"].update(src="../vocab.json"), None, "vocab.src"),
    "vocab-file-missing": (lambda c: c["vocab"].update(tgt="other.json"), None, "vocab.tgt"),
    "pad-not-int": (lambda c: c["vocab"].update(pad_id=True), None, "vocab.pad_id"),
    "unk-negative": (lambda c: c["vocab"].update(unk_id=-1), None, "vocab.unk_id"),
    "eos-out-of-range": (lambda c: c["vocab"].update(eos_id=10_000), None, "vocab.eos_id"),
    "vocab-list": (None, {"vocab.json": '["</s>", "<unk>"]'}, "vocab.json: expected a JSON object"),
    "vocab-duplicate-id": (None, {"vocab.json": '{"a": 0, "b": 0}'}, "same id 0"),
    "vocab-gap": (None, {"vocab.json": '{"a": 0, "b": 2}'}, "'b': expected an id in [0, 2)"),
    "vocab-empty": (None, {"vocab.json": "{}"}, "empty vocabulary"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT_JSON))
def test_bad_format_2_files(models, tmp_path, case) -> None:
    edit, files, message = BAD_TEXT_JSON[case]
    d = _corrupt(models, tmp_path, edit, files)
    with pytest.raises(UserError) as e:
        TextPipeline.load(d)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert ("text.json" in str(e.value)) or ("vocab.json" in str(e.value))


def test_bad_vocabulary_object(models) -> None:
    v = models["vocab"]
    with pytest.raises(DataError, match="vocab.pad_id"):
        _pipeline(models, Vocabulary(v.src, v.tgt, len(v.src), 1, 0))
    with pytest.raises(DataError, match="target_lang_tag: piece '<2en>' is not in the source vocabulary"):
        _pipeline(models, target_lang_tag=True)


def test_spm_from_reuses_the_vocabulary(models, tmp_path, capsys) -> None:
    """`mt prepare` with data.spm_from = a directory with a vocabulary: the bitext is encoded
    through it (in the reverse direction too, the vocabulary turned around), and the prepared
    pipeline keeps it; a changed vocab.json makes the data stale."""
    from mt.config import load_config
    from mt.data.binarize import IndexedDataset
    from mt.data.prepare import prepare

    v = models["vocab"]
    tgt = tuple(v.src[:4]) + tuple(reversed(v.src[4:-1])) + ("<pad>",)
    source = tmp_path / "imported"
    _pipeline(models, Vocabulary(v.src, tgt, v.pad_id, v.unk_id, v.eos_id)).save(source)
    raw = tmp_path / "raw"
    raw.mkdir()
    de = [" ".join(WORDS[(i + k) % 9] for k in range(4)) for i in range(60)]
    en = [" ".join(WORDS[9 + (i + k) % 9] for k in range(3)) + "." for i in range(60)]
    _write(raw / "t.de", de), _write(raw / "t.en", en)
    data = {"src_lang": "en", "tgt_lang": "de", "data_dir": str(raw), "spm_from": str(source),
            "train": {"src": "t.en", "tgt": "t.de"}, "clean": {"normalize_punct": False, "unicode_form": "none"}}
    cfg = {"run_dir": str(tmp_path / "run"), "data": data}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = prepare(load_config(path), progress=False)
    prepared, original = TextPipeline.load(out), TextPipeline.load(source)
    assert prepared.vocab == original.vocab.swapped() and (prepared.src_lang, prepared.tgt_lang) == ("en", "de")
    assert prepared.spm_paths[0].read_bytes() == models["tgt"].read_bytes()  # en: the target model of de-en
    ids = IndexedDataset(out / "train.en")
    assert [ids[i].tolist() for i in range(3)] == original.encode_target(en[:3])  # en ids of the de-en model
    assert [IndexedDataset(out / "train.de")[i].tolist() for i in range(3)] == original.encode_source(de[:3])
    # the vocabulary is an input: changing it re-prepares
    capsys.readouterr()
    prepare(load_config(path), progress=False)
    assert "up to date" in capsys.readouterr().out
    swapped = list(v.src)
    swapped[4], swapped[5] = swapped[5], swapped[4]
    (source / "vocab.src.json").write_text(json.dumps({p: i for i, p in enumerate(swapped)}))
    prepare(load_config(path), progress=False)
    assert "up to date" not in capsys.readouterr().out
    assert TextPipeline.load(out).vocab.tgt == tuple(swapped)
