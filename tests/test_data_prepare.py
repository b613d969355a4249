"""`mt prepare` end to end on tiny corpora, bad input, and a slice of the real Multi30k."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from mt.cli import main
from mt.config import ConfigError, load_config
from mt.data import DataError
from mt.data.binarize import IndexedDataset
from mt.data.prepare import expected_files, prepare
from mt.data.text import TextPipeline, normalize

REPO = Path(__file__).resolve().parents[1]

WORDS_DE = "ein zwei drei hund katze mann frau kind läuft springt spielt am im auf dem der die das".split()
WORDS_EN = "a two three dog cat man woman child runs jumps plays at in on the of big small".split()


def corpus(n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    de, en = [], []
    for i in range(offset, offset + n):
        k = 3 + i % 5
        de.append(" ".join(WORDS_DE[(i * j) % len(WORDS_DE)] for j in range(1, k + 1)) + ".")
        en.append(" ".join(WORDS_EN[(i * j) % len(WORDS_EN)] for j in range(1, k + 1)) + ".")
    return de, en


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def make_config(tmp_path: Path, data: dict | None = None, **extra) -> Path:
    """A tiny experiment: data files under tmp/raw, run dir tmp/run; returns the YAML path."""
    raw = tmp_path / "raw"
    if not (raw / "train.de").exists():
        for split, (n, off) in {"train": (300, 0), "val": (20, 1000), "test": (10, 2000)}.items():
            de, en = corpus(n, off)
            write(raw / f"{split}.de", de)
            write(raw / f"{split}.en", en)
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "data": {
            "src_lang": "de",
            "tgt_lang": "en",
            "data_dir": str(raw),
            "train": {"src": "train.de", "tgt": "train.en"},
            "valid": {"src": "val.de", "tgt": "val.en"},
            "test": {"test1": {"src": "test.de", "tgt": "test.en"}},
            "spm": {"vocab_size": 320, "num_threads": 1},
            **(data or {}),
        },
        "train": {"max_tokens": 256},
        **extra,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_prepare_layout_manifest_and_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = load_config(make_config(tmp_path))
    out = prepare(cfg, progress=False)
    assert out == tmp_path / "run" / "data"
    names = {p.name for p in out.iterdir()}
    assert set(expected_files(cfg)) | {"spm.model"} == names  # nothing else (no temp files, no text copies)
    manifest = json.loads((out / "manifest.json").read_text())
    train_de = manifest["inputs"]["train"]["files"][0]
    assert train_de["path"].endswith("train.de") and len(train_de["sha256"]) == 64
    assert manifest["counts"]["train"]["pairs"] == manifest["clean"]["kept"] == len(IndexedDataset(out / "train.de"))
    assert manifest["clean"]["read"] == 300 and manifest["counts"]["valid"]["pairs"] == 20
    assert manifest["spm"]["settings"]["vocab_size"] == 320 and manifest["config"]["src_lang"] == "de"
    assert 0.0 <= manifest["padding"]["padding_waste"] < 1.0 and manifest["padding"]["max_tokens"] == 256
    printed = capsys.readouterr().out
    assert "cleaning report" in printed and "padding waste" in printed and "timings:" in printed
    # valid: .txt holds the original lines; ids decode to their normalised form
    text = TextPipeline.load(out)
    raw = (tmp_path / "raw" / "val.en").read_text(encoding="utf-8").splitlines()
    assert (out / "valid.en.txt").read_text(encoding="utf-8").splitlines() == raw
    ds = IndexedDataset(out / "valid.en")
    assert text.decode_target([ds[i].tolist() for i in range(len(ds))]) == [normalize(x, "en") for x in raw]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir would make it, not mkdtemp's 0700


def test_rerun_is_noop_and_changes_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = make_config(tmp_path)
    out = prepare(load_config(path), progress=False)
    first = json.loads((out / "manifest.json").read_text())
    capsys.readouterr()

    prepare(load_config(path), progress=False)
    assert "up to date" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["created"] == first["created"]

    # a changed input rebuilds
    de, en = corpus(5, 5000)
    with open(tmp_path / "raw" / "train.de", "a", encoding="utf-8") as f:
        f.write(de[0] + "\n")
    with open(tmp_path / "raw" / "train.en", "a", encoding="utf-8") as f:
        f.write(en[0] + "\n")
    prepare(load_config(path), progress=False)
    assert "up to date" not in capsys.readouterr().out
    second = json.loads((out / "manifest.json").read_text())
    assert second["clean"]["read"] == 301 and second["fingerprint"] != first["fingerprint"]

    # a changed data config rebuilds; a changed train config does not matter to the data
    prepare(load_config(path, ["data.clean.max_ratio=1.5"]), progress=False)
    assert "up to date" not in capsys.readouterr().out
    third = json.loads((out / "manifest.json").read_text())
    assert third["fingerprint"] != second["fingerprint"] and third["config"]["clean"]["max_ratio"] == 1.5
    prepare(load_config(path, ["data.clean.max_ratio=1.5", "train.lr=0.1"]), progress=False)
    assert "up to date" in capsys.readouterr().out
    prepare(load_config(path, ["data.clean.max_ratio=1.5"]), force=True, progress=False)
    assert "up to date" not in capsys.readouterr().out


def test_jsonl_train_and_lang_tag(tmp_path: Path) -> None:
    de, en = corpus(200)
    write(tmp_path / "raw" / "train.jsonl", [json.dumps({"translation": {"de": s, "en": t}}) for s, t in zip(de, en)])
    path = make_config(
        tmp_path, {"train": {"format": "jsonl", "path": "train.jsonl"}, "target_lang_tag": True, "test": {}}
    )
    out = prepare(load_config(path), progress=False)
    text = TextPipeline.load(out)
    tag = text.piece_to_id("<2en>")
    src = IndexedDataset(out / "train.de")
    assert tag > 3 and all(src[i][0] == tag for i in range(len(src)))
    assert json.loads((out / "manifest.json").read_text())["spm"]["user_symbols"] == ["<bt>", "<2en>"]


ZH = dict(zip(WORDS_EN, "一 二 三 狗 猫 男人 女人 孩子 跑 跳 玩 在 里 上 这 的 大 小".split()))


def test_unspaced_target_is_cleaned_in_characters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, en = corpus(300)
    zh = ["".join(ZH[w.rstrip(".")] for w in s.split()) + "。" for s in en]  # one whitespace token per sentence
    for split, n in (("train", 300), ("val", 20), ("test", 10)):
        write(tmp_path / "raw" / f"{split}.de", en[:n])  # make_config's file names; the languages are en → zh
        write(tmp_path / "raw" / f"{split}.en", zh[:n])
    out = prepare(load_config(make_config(tmp_path, {"src_lang": "en", "tgt_lang": "zh"})), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clean"]["ratio"] == 0 and manifest["clean"]["kept"] == 300 - manifest["clean"]["duplicate"]
    lengths = manifest["train_corpora"][0]["lengths"]
    assert (lengths["src_unit"], lengths["tgt_unit"]) == ("word", "char") and 0.3 < lengths["scale"] < 1.0
    assert "typical ratio" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad input


def test_mismatched_line_counts(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    write(tmp_path / "raw" / "val.en", corpus(19, 1000)[1])
    with pytest.raises(DataError, match=r"data\.valid: line counts differ: .*val\.de has 20 lines, .*val\.en has 19 lines"):
        prepare(load_config(path), progress=False)
    assert not (tmp_path / "run" / "data").exists()
    assert list((tmp_path / "run").iterdir()) == []  # the temp dir was removed


def test_fetch_runs_only_when_a_named_file_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mt.data.fetch

    calls = []
    monkeypatch.setattr(mt.data.fetch, "fetch_dataset", lambda name, **kw: calls.append(name))
    prepare(load_config(make_config(tmp_path, {"fetch": "multi30k"})), progress=False)
    assert calls == []  # every file the config reads is there: nothing to download
    path = make_config(tmp_path, {"fetch": "multi30k", "test": {"t": {"src": "test.de", "tgt": "absent.en"}}})
    with pytest.raises(FileNotFoundError, match="absent.en"):
        prepare(load_config(path), progress=False)
    assert calls == ["multi30k"]


def test_missing_file(tmp_path: Path) -> None:
    path = make_config(tmp_path, {"test": {"t": {"src": "test.de", "tgt": "nowhere.en"}}})
    with pytest.raises(FileNotFoundError, match=r"data\.test\.t\.tgt: file not found: .*nowhere\.en"):
        prepare(load_config(path), progress=False)


def test_invalid_utf8_error_or_drop(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_config(tmp_path)
    lines = (raw / "train.en").read_bytes().split(b"\n")
    lines[6] = b"caf\xe9 latin-1"  # line 7
    (raw / "train.en").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"train\.en:7: invalid UTF-8"):
        prepare(load_config(make_config(tmp_path, {"clean": {"invalid_utf8": "error"}})), progress=False)
    out = prepare(load_config(make_config(tmp_path, {"clean": {"invalid_utf8": "drop"}})), progress=False)
    clean = json.loads((out / "manifest.json").read_text())["clean"]
    assert clean["invalid_utf8"] == 1 and clean["read"] == 300


def test_empty_after_cleaning(tmp_path: Path) -> None:
    make_config(tmp_path)
    de = corpus(300)[0]
    write(tmp_path / "raw" / "train.en", de)  # every pair identical → all dropped
    with pytest.raises(DataError, match=r"data\.train: no pairs left after cleaning(.|\n)*identical\s+300"):
        prepare(load_config(make_config(tmp_path)), progress=False)
    assert not (tmp_path / "run" / "data").exists()


def test_unwritable_output_dir(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    path = make_config(tmp_path, run_dir=str(tmp_path / "blocker" / "run"))
    with pytest.raises(DataError, match=r"cannot write prepared data to .*blocker/run/data"):
        prepare(load_config(path), progress=False)
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        path = make_config(tmp_path, run_dir=str(locked / "run"))
        with pytest.raises(DataError, match="cannot write prepared data"):
            prepare(load_config(path), progress=False)


def test_config_errors_name_field_and_file(tmp_path: Path) -> None:
    path = make_config(tmp_path, {"clean": {"max_ratoi": 2.0}})
    with pytest.raises(ConfigError, match=rf"{path}: data\.clean\.max_ratoi: unknown key"):
        load_config(path)
    path = make_config(tmp_path, {"spm": {"vocab_size": "big"}})
    with pytest.raises(ConfigError, match=rf"{path}: data\.spm\.vocab_size: expected an integer"):
        load_config(path)
    path = make_config(tmp_path, {"clean": {"invalid_utf8": "ignore"}})
    with pytest.raises(ConfigError, match=r"data\.clean\.invalid_utf8"):
        load_config(path)
    path = make_config(tmp_path, {"train": {"format": "tsv", "path": "x.tsv", "src_field": "de"}})
    with pytest.raises(ConfigError, match=r"data\.train\.src_field: a TSV without header"):
        load_config(path)


def test_cli_reports_data_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = make_config(tmp_path)
    write(tmp_path / "raw" / "train.en", corpus(3)[1])
    assert main(["prepare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mt prepare: error:" in err and "train.de has 300 lines" in err and "train.en has 3 lines" in err


# --------------------------------------------------------------------------- real data


def test_recipe_configs_load() -> None:
    for name in ("multi30k_de_en", "multi30k_en_de"):
        cfg = load_config(REPO / "recipes" / "configs" / f"{name}.yaml")
        assert cfg.data.spm.vocab_size == 8000 and cfg.data.spm.joint and cfg.train.max_tokens == 4096
        assert cfg.data.train.src == f"multi30k/train.{cfg.data.src_lang}" and "test2016" in cfg.data.test


@pytest.mark.slow
def test_multi30k_slice(tmp_path: Path) -> None:
    root = Path(os.environ.get("MT_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (root / "multi30k" / "train.de").is_file():
        pytest.skip(f"Multi30k not found at {root / 'multi30k'} (set MT_DATA_DIR to the folder holding multi30k/)")
    raw = tmp_path / "raw"
    for split, n in (("train", 2000), ("val", 1014)):
        for lang in ("de", "en"):
            with open(root / "multi30k" / f"{split}.{lang}", encoding="utf-8") as f:
                write(raw / f"{split}.{lang}", [next(f).rstrip("\n") for _ in range(n)])
    path = make_config(
        tmp_path, {"test": {}, "spm": {"vocab_size": 1000, "num_threads": 2}}, train={"max_tokens": 4096}
    )
    out = prepare(load_config(path), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clean"]["read"] == 2000 and manifest["clean"]["kept"] > 1990
    text = TextPipeline.load(out)
    for lang, decode in (("de", text.decode_source), ("en", text.decode_target)):
        ds = IndexedDataset(out / f"valid.{lang}")
        refs = (out / f"valid.{lang}.txt").read_text(encoding="utf-8").splitlines()
        assert decode([ds[i].tolist() for i in range(len(ds))]) == [normalize(x, lang) for x in refs]
    assert manifest["padding"]["padding_waste"] < 0.25
