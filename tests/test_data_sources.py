"""Readers for parallel/monolingual corpora: formats, streaming, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mt.config import CorpusConfig
from mt.data import DataError
from mt.data.sources import ReadStats, open_corpus, read_monolingual, read_text_pair

PAIRS = [("Ein Hund läuft.", "A dog runs."), ("Zwei Männer.", "Two men."), ("Ça va « bien »", "Fine")]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return path


def read_all(corpus: CorpusConfig, data_dir: Path, **kw) -> list[tuple[str, str]]:
    return list(open_corpus(corpus, "de", "en", data_dir, **kw))


def test_text_pair(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.de", [p[0] for p in PAIRS])
    write_lines(tmp_path / "a.en", [p[1] for p in PAIRS])
    assert read_all(CorpusConfig(src="a.de", tgt="a.en"), tmp_path) == PAIRS


def test_crlf_and_bom_are_not_text(tmp_path: Path) -> None:
    (tmp_path / "a.de").write_bytes(b"\xef\xbb\xbfeins\r\nzwei\r\n")
    (tmp_path / "a.en").write_bytes(b"one\ntwo")  # no final newline
    assert read_all(CorpusConfig(src="a.de", tgt="a.en"), tmp_path) == [("eins", "one"), ("zwei", "two")]


def test_tsv_by_index_and_header(tmp_path: Path) -> None:
    write_lines(tmp_path / "c.tsv", [f"{i}\t{s}\t{t}" for i, (s, t) in enumerate(PAIRS)])
    corpus = CorpusConfig(format="tsv", path="c.tsv", src_field="1", tgt_field="2")
    assert read_all(corpus, tmp_path) == PAIRS
    write_lines(tmp_path / "h.tsv", ["en\tde"] + [f"{t}\t{s}" for s, t in PAIRS])
    corpus = CorpusConfig(format="tsv", path="h.tsv", header=True, src_field="de", tgt_field="en")
    assert read_all(corpus, tmp_path) == PAIRS


def test_tsv_missing_column_names_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "c.tsv", ["a\tb", "only-one-column"])
    with pytest.raises(DataError, match=r"c\.tsv:2: expected at least 2"):
        read_all(CorpusConfig(format="tsv", path="c.tsv"), tmp_path)


def test_jsonl_flat_and_translation_style(tmp_path: Path) -> None:
    write_lines(tmp_path / "flat.jsonl", [json.dumps({"de": s, "en": t}, ensure_ascii=False) for s, t in PAIRS])
    write_lines(tmp_path / "tr.jsonl", [json.dumps({"translation": {"de": s, "en": t}}) for s, t in PAIRS] + [""])
    assert read_all(CorpusConfig(format="jsonl", path="flat.jsonl"), tmp_path) == PAIRS
    assert read_all(CorpusConfig(format="jsonl", path="tr.jsonl"), tmp_path) == PAIRS


def test_jsonl_bad_record_names_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "x.jsonl", [json.dumps({"de": "a", "en": "b"}), json.dumps({"de": "a"})])
    with pytest.raises(DataError, match=r"x\.jsonl:2: record has no field 'en'"):
        read_all(CorpusConfig(format="jsonl", path="x.jsonl"), tmp_path)
    write_lines(tmp_path / "y.jsonl", ["{not json"])
    with pytest.raises(DataError, match=r"y\.jsonl:1: invalid JSON"):
        read_all(CorpusConfig(format="jsonl", path="y.jsonl"), tmp_path)


def test_hf_save_to_disk_and_local_json(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"translation": [{"de": s, "en": t} for s, t in PAIRS]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dd"))
    assert read_all(CorpusConfig(format="hf", path="dd", split="train"), tmp_path) == PAIRS
    # streaming over a local saved dataset gives the same pairs
    assert read_all(CorpusConfig(format="hf", path="dd", streaming=True), tmp_path) == PAIRS
    flat = [json.dumps({"src": s, "tgt": t}) for s, t in PAIRS]
    write_lines(tmp_path / "rows.jsonl", flat)
    corpus = CorpusConfig(format="hf", path="rows.jsonl", src_field="src", tgt_field="tgt", streaming=True)
    assert read_all(corpus, tmp_path) == PAIRS


def test_hf_missing_split_is_named(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"de": ["a"], "en": ["b"]})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="no split 'validation'"):
        read_all(CorpusConfig(format="hf", path="dd", split="validation"), tmp_path)


def test_streaming_reads_lazily(tmp_path: Path) -> None:
    """The reader is a generator: the first pair arrives before a later bad line is decoded."""
    (tmp_path / "a.de").write_bytes(b"gut\n\xff\n")
    (tmp_path / "a.en").write_bytes(b"good\nbad\n")
    it = iter(open_corpus(CorpusConfig(src="a.de", tgt="a.en"), "de", "en", tmp_path, "error"))
    assert next(it) == ("gut", "good")
    with pytest.raises(DataError):
        next(it)


# --------------------------------------------------------------------------- bad input


def test_mismatched_line_counts_names_both_files_and_counts(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.de", ["1", "2", "3", "4", "5"])
    write_lines(tmp_path / "a.en", ["1", "2", "3"])
    with pytest.raises(DataError) as e:
        read_all(CorpusConfig(src="a.de", tgt="a.en"), tmp_path)
    msg = str(e.value)
    assert f"{tmp_path / 'a.de'} has 5 lines" in msg and f"{tmp_path / 'a.en'} has 3 lines" in msg
    # the other way round too (target longer)
    with pytest.raises(DataError, match=r"a\.en has 3 lines, .*a\.de has 5 lines"):
        read_all(CorpusConfig(src="a.en", tgt="a.de"), tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.de", ["x"])
    with pytest.raises(FileNotFoundError, match=r"data\.train\.tgt: file not found: .*nope\.en"):
        list(open_corpus(CorpusConfig(src="a.de", tgt="nope.en"), "de", "en", tmp_path, what="data.train"))
    with pytest.raises(FileNotFoundError, match=r"mono\.txt"):
        list(read_monolingual(tmp_path / "mono.txt"))


def test_invalid_utf8_error_names_file_and_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.de", ["eins", "zwei", "drei"])
    (tmp_path / "a.en").write_bytes(b"one\ntwo\nthr\xe9e\n")  # latin-1 é
    with pytest.raises(DataError, match=r"a\.en:3: invalid UTF-8"):
        read_all(CorpusConfig(src="a.de", tgt="a.en"), tmp_path, invalid_utf8="error")


def test_invalid_utf8_drop_drops_pair_and_counts(tmp_path: Path) -> None:
    (tmp_path / "a.de").write_bytes(b"eins\n\xc3\x28zwei\ndrei\n")  # invalid 2-byte sequence
    (tmp_path / "a.en").write_bytes(b"one\ntwo\nthr\xe9e\n")
    source = open_corpus(CorpusConfig(src="a.de", tgt="a.en"), "de", "en", tmp_path, "drop")
    assert list(source) == [("eins", "one")]  # both other pairs dropped: alignment kept
    assert source.stats.invalid_utf8 == 2 and source.stats.yielded == 1


def test_monolingual_reader(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_bytes(b"a b\n\xff\nc\n")
    stats = ReadStats()
    assert list(read_monolingual(tmp_path / "m.txt", "drop", stats)) == ["a b", "c"]
    assert stats.invalid_utf8 == 1
    with pytest.raises(DataError, match=r"m\.txt:2"):
        list(read_monolingual(tmp_path / "m.txt"))


def test_read_text_pair_direct(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "x", ["1", "2"])
    b = write_lines(tmp_path / "y", ["one", "two"])
    assert list(read_text_pair(a, b)) == [("1", "one"), ("2", "two")]
