"""Several training corpora in one run: weights and upsampling per epoch, determinism, resume,
config and data errors that name the corpus, and `mt prepare` on real Tatoeba + Multi30k slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mt.config import ConfigError, load_config
from mt.data import DataError
from mt.data.batching import CorpusMix, TokenBatchSampler, epoch_counts
from mt.data.binarize import IndexedDataset
from mt.data.prepare import expected_files, prepare, valid_parts
from mt.data.sources import interleave, interleave_order, read_monolingual
from mt.data.text import TextPipeline
from _data_support import DATA


WORDS_DE = "ein zwei drei hund katze mann frau kind läuft springt spielt am im auf dem".split()
WORDS_EN = "a two three dog cat man woman child runs jumps plays at in on the".split()


def pairs(n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    """``n`` distinct synthetic de/en pairs (3-6 words)."""
    de, en = [], []
    for i in range(offset, offset + n):
        k = 3 + i % 4
        de.append(" ".join(WORDS_DE[(i * j + i // 7) % len(WORDS_DE)] for j in range(1, k + 1)) + f" {i}.")
        en.append(" ".join(WORDS_EN[(i * j + i // 7) % len(WORDS_EN)] for j in range(1, k + 1)) + f" {i}.")
    return de, en


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def sizes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 40, n)
    return src, np.maximum(1, src + rng.integers(-3, 4, n))


def drawn_per_corpus(batches: list[np.ndarray], mix: CorpusMix) -> list[int]:
    """How many of an epoch's examples fall into each corpus's index range."""
    idx = np.concatenate(batches)
    bounds = np.cumsum((0,) + mix.sizes)
    return [int(((idx >= lo) & (idx < hi)).sum()) for lo, hi in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------- counts per epoch


def test_epoch_counts_upsample_and_weights_are_exact() -> None:
    assert epoch_counts([100, 30], upsample=[1, 3]) == [100, 90]
    assert epoch_counts([100, 30]) == [100, 30]
    # weights share the N = 130 examples: 1/3 and 2/3 of 130 = 43.33 / 86.67 → 43 / 87
    assert epoch_counts([100, 30], weights=[1, 2]) == [43, 87]
    # equal remainders: the earlier corpus gets the spare example; the total is always N
    assert epoch_counts([3, 3, 4], weights=[1, 1, 1]) == [4, 3, 3]
    assert epoch_counts([6, 6], weights=[0.1, 0.3]) == [3, 9]  # decimal weights taken exactly
    assert epoch_counts([5, 5], weights=[0.1, 0.3]) == [3, 7]  # 2.5 / 7.5: the tie goes to the first
    assert sum(epoch_counts([997, 13, 40], weights=[0.7, 0.2, 0.1])) == 1050


def test_epoch_pool_draws_without_replacement_when_possible() -> None:
    mix = CorpusMix(("big", "small"), (100, 30), (43, 87))
    pool = mix.epoch_pool(seed=1, epoch=0)
    big, small = pool[pool < 100], pool[pool >= 100]
    assert len(big) == 43 and len(np.unique(big)) == 43  # a subset, no pair twice
    counts = np.bincount(small - 100, minlength=30)
    assert len(small) == 87 and set(counts.tolist()) == {2, 3}  # 87 = 2 * 30 + 27: each pair 2 or 3 times
    assert (counts == 3).sum() == 27
    other = mix.epoch_pool(seed=1, epoch=1)
    assert set(big.tolist()) != set(other[other < 100].tolist())  # a fresh subset each epoch
    assert np.array_equal(pool, mix.epoch_pool(seed=1, epoch=0))


@pytest.mark.parametrize("counts", [(43, 87), (100, 90), (20, 5)])
def test_sampler_epoch_holds_exact_counts_per_corpus(counts: tuple[int, int]) -> None:
    src, tgt = sizes(130)
    mix = CorpusMix(("a", "b"), (100, 30), counts)
    sampler = TokenBatchSampler(src, tgt, 120, seed=3, mix=mix)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert drawn_per_corpus(batches, mix) == list(counts)
        assert all(len(b) * (max(src[b].max(), tgt[b].max()) + 1) <= 120 for b in batches if len(b) > 1)


def test_plain_mix_is_the_single_corpus_sampler() -> None:
    src, tgt = sizes(500)
    plain = CorpusMix(("a", "b"), (200, 300), (200, 300))
    one = [b.tolist() for b in TokenBatchSampler(src, tgt, 300, seed=4).batches()]
    assert [b.tolist() for b in TokenBatchSampler(src, tgt, 300, seed=4, mix=plain).batches()] == one
    assert "epoch_examples" not in TokenBatchSampler(src, tgt, 300, mix=plain).state_dict()


def test_mix_is_deterministic_for_the_seed() -> None:
    src, tgt = sizes(400)
    mix = CorpusMix(("a", "b"), (300, 100), (150, 250))
    a = [b.tolist() for b in TokenBatchSampler(src, tgt, 200, seed=5, mix=mix).batches()]
    b = [b.tolist() for b in TokenBatchSampler(src, tgt, 200, seed=5, mix=mix).batches()]
    c = [b.tolist() for b in TokenBatchSampler(src, tgt, 200, seed=6, mix=mix).batches()]
    assert a == b and a != c


def test_mix_resumes_mid_epoch() -> None:
    src, tgt = sizes(400)
    mix = CorpusMix(("a", "b"), (300, 100), (150, 250))
    full = TokenBatchSampler(src, tgt, 200, seed=2, mix=mix)
    expected = [b.tolist() for b in full] + [b.tolist() for b in full]  # two epochs
    first = TokenBatchSampler(src, tgt, 200, seed=2, mix=mix)
    it = iter(first)
    got = [next(it).tolist() for _ in range(9)]
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    resumed = TokenBatchSampler(src, tgt, 200, seed=2, mix=mix)
    resumed.load_state_dict(state)
    got += [b.tolist() for b in resumed] + [b.tolist() for b in resumed]
    assert got == expected
    reweighted = TokenBatchSampler(src, tgt, 200, seed=2, mix=CorpusMix(("a", "b"), (300, 100), (200, 200)))
    with pytest.raises(ValueError, match="examples per epoch and corpus"):
        reweighted.load_state_dict(state)


def test_mix_must_cover_the_data() -> None:
    src, tgt = sizes(10)
    with pytest.raises(ValueError, match="covers 12 examples"):
        TokenBatchSampler(src, tgt, 100, mix=CorpusMix(("a", "b"), (6, 6), (6, 6)))


# --------------------------------------------------------------------------- config


def config(tmp_path: Path, train: object, **data: object) -> Path:
    cfg = {"run_dir": str(tmp_path / "run"),
           "data": {"src_lang": "de", "tgt_lang": "en", "data_dir": str(tmp_path / "raw"), "train": train,
                    "spm": {"vocab_size": 400, "num_threads": 1}, **data},
           "train": {"max_tokens": 256}}  # fmt: skip
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def two(a: dict | None = None, b: dict | None = None) -> list[dict]:
    return [{"name": "a", "src": "a.de", "tgt": "a.en", **(a or {})}, {"name": "b", "src": "b.de", "tgt": "b.en", **(b or {})}]


def test_list_config_loads_and_single_corpus_is_unchanged(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, two({"weight": 1, "test": {"ta": {"src": "t.de", "tgt": "t.en"}}}, {"weight": 2.5})))
    a, b = cfg.data.train
    assert (a.name, a.weight, b.weight) == ("a", 1.0, 2.5) and "ta" in cfg.data.test  # a corpus's test set joins data.test
    single = load_config(config(tmp_path, {"src": "x.de", "tgt": "x.en"})).data
    assert [c.name for c in single.train_corpora()] == ["train"] and single.train_corpora()[0].src == "x.de"


@pytest.mark.parametrize(
    "train, message",
    [
        (two({"weight": 0}), r"data\.train\[0\]\.weight: corpus 'a': must be > 0"),
        (two(b={"weight": -1}), r"data\.train\[1\]\.weight: corpus 'b': must be > 0"),
        (two(b={"weight": float("nan")}), r"data\.train\[1\]\.weight: corpus 'b': must be > 0, got nan"),
        (two(b={"upsample": 0}), r"data\.train\[1\]\.upsample: corpus 'b': must be an integer >= 1"),
        (two(b={"upsample": 1.5}), r"data\.train\[1\]\.upsample: expected an integer"),
        (two({"weight": 1}, {"upsample": 2}), r"data\.train\[1\]\.upsample: corpus 'b': the list mixes weight and upsample"),
        (two({"weight": 1, "upsample": 2}), r"data\.train\[0\]\.upsample: corpus 'a': set weight or upsample, not both"),
        (two(b={"name": "a"}), r"data\.train\[1\]\.name: 'a' is also the name of data\.train\[0\]"),
        (two(b={"name": "../b"}), r"data\.train\[1\]\.name: .*letters/digits"),
        (two(b={"name": None}), r"data\.train\[1\]\.name"),
        (two(b={"clean": {"max_ratoi": 2}}), r"data\.train\[1\]\.clean\.max_ratoi: unknown key"),
        (two(b={"clean": {"max_ratio": 0.5}}), r"data\.train\[1\]\.clean\.max_ratio: must be >= 1\.0"),
        (two(b={"clean": {"unicode_form": "NFC"}}), r"data\.train\[1\]\.clean\.unicode_form: corpus 'b': normalisation is shared"),
        (two(b={"tgt": None}), r"data\.train\[1\]: format 'text' needs both"),
        (two(b={"weight": 1, "test": {"valid": {"src": "t.de", "tgt": "t.en"}}}), r"data\.test\.valid: test set names"),
        ([], r"data\.train: a training corpus is required"),
        ({"src": "x.de", "tgt": "x.en", "weight": 2}, r"data\.train\.weight: unknown key"),
        ({"src": "x.de", "tgt": "x.en", "formt": "tsv"}, r"data\.train\.formt: unknown key"),
    ],
)
def test_config_errors_name_the_field_and_corpus(tmp_path: Path, train: object, message: str) -> None:
    path = config(tmp_path, train)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_test_set_names_are_unique_across_corpora(tmp_path: Path) -> None:
    t1, t2 = {"src": "t.de", "tgt": "t.en"}, {"src": "u.de", "tgt": "u.en"}
    with pytest.raises(ConfigError, match=r"data\.test\.t: corpus 'b' names a test set that already exists"):
        load_config(config(tmp_path, two({"test": {"t": t1}}, {"test": {"t": t2}})))
    with pytest.raises(ConfigError, match=r"data\.test\.t: corpus 'a'"):
        load_config(config(tmp_path, two({"test": {"t": t1}}), test={"t": t2}))
    cfg = load_config(config(tmp_path, two({"test": {"t": t1}}), test={"t": t1}))  # the same set twice is one
    assert list(cfg.data.test) == ["t"]


# --------------------------------------------------------------------------- mt prepare on tiny corpora


def make_raw(tmp_path: Path, n_a: int = 120, n_b: int = 60) -> None:
    raw = tmp_path / "raw"
    for name, n, off in (("a", n_a, 0), ("b", n_b, 5000), ("t", 10, 9000), ("v", 12, 9500)):
        de, en = pairs(n, off)
        write(raw / f"{name}.de", de)
        write(raw / f"{name}.en", en)


def test_prepare_records_each_corpus_and_its_clean_counts(tmp_path: Path) -> None:
    make_raw(tmp_path)
    raw = tmp_path / "raw"
    write(raw / "b.en", (raw / "b.en").read_text().splitlines()[:-1] + ["ein zwei"])  # one pair identical after b's
    write(raw / "b.de", (raw / "b.de").read_text().splitlines()[:-1] + ["ein zwei"])
    train = two({"upsample": 1, "test": {"ta": {"src": "t.de", "tgt": "t.en"}}}, {"upsample": 3, "clean": {"max_ratio": 1.2}})
    cfg = load_config(config(tmp_path, train, valid={"src": "v.de", "tgt": "v.en"}))
    out = prepare(cfg, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    a, b = m["train_corpora"]
    assert (a["name"], a["pairs"], a["epoch_examples"], a["upsample"], a["test"]) == ("a", 120, 120, 1, ["ta"])
    assert (b["name"], b["clean"]["read"], b["clean"]["identical"]) == ("b", 60, 1)
    assert b["pairs"] == b["clean"]["kept"] and b["epoch_examples"] == 3 * b["pairs"]
    assert m["clean"]["read"] == 180 and m["clean"]["kept"] == a["pairs"] + b["pairs"] == len(IndexedDataset(out / "train.de"))
    assert set(m["inputs"]) >= {"train.a", "train.b", "valid", "ta"} and (out / "ta.en.txt").is_file()
    assert set(expected_files(cfg)) <= {p.name for p in out.iterdir()}
    assert CorpusMix.from_manifest(out) == CorpusMix(("a", "b"), (120, b["pairs"]), (120, 3 * b["pairs"]))
    assert m["padding"]["sentences"] == 120 + 3 * b["pairs"]  # padding measured on a mixed epoch


def test_interleave_spreads_each_list_in_proportion() -> None:
    out = interleave([list("aaaaaa"), list("bb"), list("c"), []])
    assert sorted(out) == sorted("aaaaaabbc")
    assert out == list("aabacaaba")  # a at 1/12, 3/12, ...; b at 1/4, 3/4; c at 1/2 (ties in list order)
    for n in range(1, len(out) + 1):  # every prefix holds each list within one item of its share
        assert abs(out[:n].count("a") - n * 6 / 9) <= 1 and abs(out[:n].count("b") - n * 2 / 9) <= 1


def test_a_valid_list_is_read_as_one_set_interleaved(tmp_path: Path) -> None:
    """data.valid as a list: one tuning set whose first pairs (what validation decodes) come
    from every corpus in proportion; editing any part changes the fingerprint."""
    make_raw(tmp_path)  # v: 12 pairs, t: 10
    valid = [{"src": "v.de", "tgt": "v.en"}, {"src": "t.de", "tgt": "t.en"}]
    cfg = load_config(config(tmp_path, two(), valid=valid))
    out = prepare(cfg, progress=False)
    raw = tmp_path / "raw"
    v, t = ((raw / f"{n}.de").read_text().splitlines() for n in ("v", "t"))
    got = (out / "valid.de.txt").read_text().splitlines()
    assert got == interleave([v, t]) and sorted(got) == sorted(v + t)
    assert sum(x in t for x in got[:11]) == 5  # 10 of 22 pairs are t's, so 5 of the first 11
    en = dict(zip(v + t, (raw / "v.en").read_text().splitlines() + (raw / "t.en").read_text().splitlines()))
    assert (out / "valid.en.txt").read_text().splitlines() == [en[x] for x in got]  # sides stay aligned
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"]["valid"]["format"] == "interleaved" and len(m["inputs"]["valid"]["parts"]) == 2
    assert m["counts"]["valid"]["pairs"] == 22
    assert valid_parts(out) == [("v", 12), ("t", 10)]  # each line's corpus: interleave_order([12, 10])
    bad = json.loads((out / "manifest.json").read_text())
    bad["counts"]["valid"]["parts"][1] = {"name": "t"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"counts\.valid\.parts: malformed .*mt prepare --force"):
        valid_parts(tmp_path / "bad")
    assert valid_parts(tmp_path / "none") == []  # no manifest: one valid corpus as far as training knows
    assert [("v", "t")[k] for k in interleave_order([12, 10])] == ["v" if x in v else "t" for x in got]
    write(raw / "t.en", (raw / "t.en").read_text().splitlines()[:-1] + ["changed"])
    assert json.loads((prepare(cfg, progress=False) / "manifest.json").read_text())["fingerprint"] != m["fingerprint"]


def test_a_valid_list_names_its_entry_in_errors(tmp_path: Path) -> None:
    make_raw(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.valid: an empty list"):
        load_config(config(tmp_path, two(), valid=[]))
    with pytest.raises(ConfigError, match=r"data\.valid\[1\]\.scr: unknown key"):
        load_config(config(tmp_path, two(), valid=[{"src": "v.de", "tgt": "v.en"}, {"scr": "t.de", "tgt": "t.en"}]))
    cfg = load_config(config(tmp_path, two(), valid=[{"src": "v.de", "tgt": "v.en"}, {"src": "none.de", "tgt": "t.en"}]))
    with pytest.raises((DataError, FileNotFoundError), match=r"data\.valid\[1\]\.src: file not found"):
        prepare(cfg, progress=False)


def test_corpora_of_different_formats_mix(tmp_path: Path) -> None:
    make_raw(tmp_path)
    de, en = pairs(40, 7000)
    write(tmp_path / "raw" / "c.jsonl", [json.dumps({"translation": {"de": s, "en": t}}) for s, t in zip(de, en)])
    write(tmp_path / "raw" / "d.tsv", [f"x\t{s}\t{t}" for s, t in zip(*pairs(30, 8000))])
    train = [{"name": "text", "src": "a.de", "tgt": "a.en"}, {"name": "json", "format": "jsonl", "path": "c.jsonl", "upsample": 2},
             {"name": "tab", "format": "tsv", "path": "d.tsv", "src_field": "1", "tgt_field": "2", "upsample": 3}]  # fmt: skip
    out = prepare(load_config(config(tmp_path, train)), progress=False)
    rows = json.loads((out / "manifest.json").read_text())["train_corpora"]
    assert [(r["name"], r["pairs"], r["epoch_examples"]) for r in rows] == [("text", 120, 120), ("json", 40, 80), ("tab", 30, 90)]
    src = IndexedDataset(out / "train.de")
    assert TextPipeline.load(out).decode_source([src[120].tolist()]) == [de[0]]  # corpora back to back, in order


def test_mismatched_line_counts_name_corpus_file_and_line(tmp_path: Path) -> None:
    make_raw(tmp_path)
    write(tmp_path / "raw" / "b.en", pairs(59, 5000)[1])
    with pytest.raises(DataError) as e:
        prepare(load_config(config(tmp_path, two())), progress=False)
    msg = str(e.value)
    assert msg.startswith("data.train.b: line counts differ") and "\n" not in msg
    assert f"{tmp_path / 'raw' / 'b.de'} has 60 lines" in msg and f"(first line without a partner: {tmp_path / 'raw' / 'b.de'}:60)" in msg
    assert not (tmp_path / "run" / "data").exists()


def test_missing_file_and_empty_corpus_name_the_corpus(tmp_path: Path) -> None:
    make_raw(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data\.train\.b\.tgt: file not found: .*nope\.en"):
        prepare(load_config(config(tmp_path, two(b={"tgt": "nope.en"}))), progress=False)
    with pytest.raises(DataError, match=r"data\.train\.b: no pairs left after cleaning"):
        prepare(load_config(config(tmp_path, two(b={"clean": {"min_tokens": 50, "max_tokens": 60}}))), progress=False)


def test_tiny_weight_that_draws_nothing_is_an_error(tmp_path: Path) -> None:
    make_raw(tmp_path)
    with pytest.raises(DataError, match=r"data\.train\.b: weight 0\.0001 gives no example per epoch of 180"):
        prepare(load_config(config(tmp_path, two({"weight": 1}, {"weight": 0.0001}))), progress=False)


def test_empty_monolingual_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"backtranslate\.mono_tgt: .*empty\.txt: no text \(the file is empty\)"):
        list(read_monolingual(tmp_path / "empty.txt", what="backtranslate.mono_tgt"))
    (tmp_path / "blank.txt").write_bytes(b"\n  \n\xff\n")
    with pytest.raises(DataError, match=r"blank\.txt: no text \(all 3 lines are blank or invalid UTF-8\)"):
        list(read_monolingual(tmp_path / "blank.txt", invalid_utf8="drop"))
    (tmp_path / "ok.txt").write_text("\nein Satz\n")
    assert list(read_monolingual(tmp_path / "ok.txt")) == ["", "ein Satz"]


def test_trainer_reads_the_mix(tmp_path: Path) -> None:
    from mt.train.trainer import load_prepared

    make_raw(tmp_path)
    cfg = load_config(config(tmp_path, two({"weight": 1}, {"weight": 3})))
    prepare(cfg, progress=False)
    data = load_prepared(cfg)
    assert data.mix == CorpusMix(("a", "b"), (120, 60), (45, 135))
    sampler = TokenBatchSampler(data.train_src.sizes, data.train_tgt.sizes, 256, mix=data.mix)
    assert drawn_per_corpus(sampler.batches(), data.mix) == [45, 135]


# --------------------------------------------------------------------------- real data


def head(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


@pytest.mark.slow
def test_prepare_tatoeba_and_multi30k_with_weights(tmp_path: Path) -> None:
    """2,000 lines of each corpus, weights 1 and 2, valid from both: the manifest counts every corpus."""
    if not (DATA / "tatoeba" / "train.de").is_file() or not (DATA / "multi30k" / "train.de").is_file():
        pytest.skip(f"Tatoeba/Multi30k not found under {DATA} (set MT_DATA_DIR to the folder holding tatoeba/ and multi30k/)")
    raw = tmp_path / "raw"
    for corpus, split, n in (("tatoeba", "train", 2000), ("multi30k", "train", 2000), ("tatoeba", "test", 300),
                             ("multi30k", "test2016", 300), ("multi30k", "val", 200), ("tatoeba", "dev", 100)):  # fmt: skip
        for lang in ("de", "en"):
            write(raw / corpus / f"{split}.{lang}", head(DATA / corpus / f"{split}.{lang}", n))
    train = [
        {"name": "tatoeba", "src": "tatoeba/train.de", "tgt": "tatoeba/train.en", "weight": 1,
         "test": {"tatoeba_test": {"src": "tatoeba/test.de", "tgt": "tatoeba/test.en"}}},
        {"name": "multi30k", "src": "multi30k/train.de", "tgt": "multi30k/train.en", "weight": 2,
         "test": {"test2016": {"src": "multi30k/test2016.de", "tgt": "multi30k/test2016.en"}}},
    ]  # fmt: skip
    valid = [{"src": "multi30k/val.de", "tgt": "multi30k/val.en"}, {"src": "tatoeba/dev.de", "tgt": "tatoeba/dev.en"}]
    path = config(tmp_path, train, valid=valid, spm={"vocab_size": 1000, "num_threads": 2})
    out = prepare(load_config(path), progress=False)
    m = json.loads((out / "manifest.json").read_text())
    tat, m30 = m["train_corpora"]
    assert tat["clean"]["read"] == m30["clean"]["read"] == 2000
    for c in (tat, m30):
        rules = {k: v for k, v in c["clean"].items() if k not in ("read", "kept", "control_stripped")}
        assert c["pairs"] == c["clean"]["kept"] == 2000 - sum(rules.values())
    assert tat["pairs"] == m30["pairs"] == 2000  # these first lines pass every default filter
    # 4000 examples per epoch shared 1:2 → 1333.33 / 2666.67; the larger remainder takes the spare one
    assert (tat["epoch_examples"], m30["epoch_examples"]) == (1333, 2667)
    assert m["padding"]["sentences"] == 4000
    assert m["counts"]["tatoeba_test"]["pairs"] == m["counts"]["test2016"]["pairs"] == 300
    # one tuning set from both domains: a third of any prefix is Tatoeba's
    dev = set(head(DATA / "tatoeba" / "dev.de", 100))
    first = (out / "valid.de.txt").read_text(encoding="utf-8").splitlines()[:60]
    assert m["counts"]["valid"]["pairs"] == 300 and sum(x in dev for x in first) == 20
    assert m["spm"]["character_coverage"] == {"src": 1.0, "tgt": 1.0}


def test_backtranslate_refuses_a_list_of_corpora(tmp_path: Path) -> None:
    path = config(tmp_path, two())
    data = yaml.safe_load(path.read_text())
    data["backtranslate"] = {"rounds": 1, "mono_tgt": "mono.en"}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.train: mt backtranslate reads one bitext corpus"):
        load_config(path)
