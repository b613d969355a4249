"""Sharded generation (resume after kill -9, i/n workers), monolingual cleaning, the
synthetic-pair filter, the training corpus and the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _bt_support import random_model, write
from _train_tiny import make_prepared, synthetic_pairs

from mt.backtranslate import generate as gen
from mt.backtranslate.filter import filter_files, filter_pairs, FilterReport, write_training_corpus
from mt.backtranslate.report import write_report
from mt.config import BTFilterConfig, DecodeOptions, bt_generation_default

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random tiny model and a 400-line input file (its vocabulary's words)."""
    root = tmp_path_factory.mktemp("gen")
    data = make_prepared(root / "run", n_train=200, n_valid=5)
    model = random_model(root / "model", data)
    src = [p[0] for p in synthetic_pairs(400, 7)]
    write(root / "mono.txt", src)
    return model, root / "mono.txt"


def _cli(model: Path, inp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mt.backtranslate.generate", "--model", str(model), "--input", str(inp),
            "--out-dir", str(out), "--shard-size", "20", "--threads", "1", "--no-progress", "--seed", "5", *extra]  # fmt: skip


def test_kill_9_mid_generation_then_resume_gives_identical_output(tiny, tmp_path: Path) -> None:
    model, inp = tiny
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # the reference: one uninterrupted run
    subprocess.run(_cli(model, inp, tmp_path / "ref"), check=True, env=env, capture_output=True)
    reference = (tmp_path / "ref" / gen.SYNTHETIC).read_bytes()
    assert reference.count(b"\n") == 400

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(model, inp, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = out / gen.SHARDS_DIR
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if shards.is_dir() and len(list(shards.glob("shard_*.txt"))) >= 3:
            break
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in shards.glob("shard_*.txt"))
    assert 3 <= len(done) < 20, f"the kill came too late to test anything ({len(done)} shards)"
    assert not (out / gen.SYNTHETIC).exists()

    result = subprocess.run(_cli(model, inp, out), check=True, env=env, capture_output=True, text=True)
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["shards_done_before"] == len(done) and info["shards_generated"] == 20 - len(done)
    assert (out / gen.SYNTHETIC).read_bytes() == reference
    # a temporary file the kill left behind is ignored, never mistaken for a shard
    assert len(list(shards.glob("shard_*.txt"))) == 20


def test_shards_spread_over_workers_match_one_worker(tiny, tmp_path: Path) -> None:
    model, inp = tiny
    opts = bt_generation_default().replace(seed=5, device="cpu")
    one, _ = gen.run_generation(model, inp, tmp_path / "one", opts, 30, threads=1, progress=False)
    out = tmp_path / "three"
    merged = [gen.run_generation(model, inp, out, opts, 30, shard=(i, 3), threads=1, progress=False)[1] for i in (2, 0, 1)]
    assert merged[:2] == [None, None] and merged[2] == out / gen.SYNTHETIC  # the last worker merges
    assert merged[2].read_bytes() == (tmp_path / "one" / gen.SYNTHETIC).read_bytes()
    assert one.shards_total == 14 and one.sentences == 400 and one.sentences_per_s > 0
    # different settings must not be mixed into the same directory
    with pytest.raises(ValueError, match="different settings"):
        gen.run_generation(model, inp, out, opts.replace(seed=6), 30, threads=1, progress=False)


def test_generation_in_a_child_process_matches_in_process(tiny, tmp_path: Path, monkeypatch) -> None:
    """The pipeline's path (a spawned child with the kernel caches on again) writes the same
    lines as generating here, reports the child's own peak RSS, and passes errors back."""
    from mt.runtime import KERNEL_CACHES, bound_kernel_caches

    for name in KERNEL_CACHES:
        monkeypatch.delenv(name, raising=False)
    bound_kernel_caches()  # as the back-translation process does
    model, inp = tiny
    opts = bt_generation_default().replace(seed=5, device="cpu")
    here, _ = gen.run_generation(model, inp, tmp_path / "here", opts, 50, threads=1, progress=False)
    child, merged, peak = gen.run_generation_in_child(model, inp, tmp_path / "child", opts, 50, threads=1, progress=False)
    assert merged == tmp_path / "child" / gen.SYNTHETIC
    assert merged.read_bytes() == (tmp_path / "here" / gen.SYNTHETIC).read_bytes()
    assert child.sentences == here.sentences == 400 and child.shards_generated == 8
    if sys.platform.startswith("linux"):
        assert peak is not None and peak > 50  # a process that loaded torch and a model
    with pytest.raises(ValueError, match="different settings"):
        gen.run_generation_in_child(model, inp, tmp_path / "child", opts.replace(seed=6), 50, threads=1, progress=False)


@pytest.mark.parametrize("sampling, beam", [("none", 2), ("beam_noise", 2), ("topp", 1), ("none", 1)])
def test_generation_modes(tiny, tmp_path: Path, sampling: str, beam: int) -> None:
    """Beam search, beam + noise, nucleus sampling and greedy: the decoding settings' modes."""
    model, inp = tiny
    opts = DecodeOptions(sampling=sampling, beam=beam, device="cpu")
    short = tmp_path / "in.txt"
    write(short, inp.read_text().splitlines()[:30])
    _, merged = gen.run_generation(model, short, tmp_path / "out", opts, 16, threads=1, progress=False)
    assert merged.read_text().count("\n") == 30


def test_clean_monolingual_counts(tmp_path: Path) -> None:
    src = tmp_path / "mono.en"
    src.write_bytes(
        b"a dog runs\n\n   \nbad \xff\xfe utf8\n" + b"w " * 20 + b"\ntwo  spaces\there\n\xc3\nlast one\nover the limit\n"
    )
    out = tmp_path / "mono.txt"
    stats = gen.clean_monolingual(src, out, max_tokens=10, max_lines=3)
    assert stats.as_dict() == {"read": 9, "kept": 3, "invalid_utf8": 2, "empty": 2, "too_long": 1, "over_max_lines": 1}
    assert out.read_text().splitlines() == ["a dog runs", "two spaces here", "last one"]


def test_clean_monolingual_counts_characters_for_unspaced_languages(tmp_path: Path) -> None:
    src = tmp_path / "mono.zh"
    write(src, ["今天天气很好。", "我们去公园散步吧，然后一起吃晚饭。", "好"])
    stats = gen.clean_monolingual(src, tmp_path / "out.txt", max_tokens=10, unit="char")
    assert (stats.kept, stats.too_long) == (2, 1)  # 7 and 1 characters kept, 17 dropped
    stats = gen.clean_monolingual(src, tmp_path / "out.txt", max_tokens=10)  # as words: one token each
    assert (stats.kept, stats.too_long) == (3, 0)


def test_filter_counts_unspaced_synthetic_sides_in_rescaled_characters() -> None:
    from mt.data.clean import Lengths

    pairs = [("我非常喜欢这本书。", "I like this book very much."),  # 9 characters : 6 words, typical
             ("好。", "Please close the window before you leave, and lock the door."),  # a truncated output
             ("今天天气很好。" * 6, "Nice weather.")]  # a hallucination (42 characters : 2 words)  # fmt: skip
    lengths = Lengths("char", "word", 1.5)  # Chinese characters per English word
    report = FilterReport()
    kept = list(filter_pairs(pairs, BTFilterConfig(max_tokens=250, max_ratio=3.0), report, lengths))
    assert kept == pairs[:1] and report.ratio == 2
    report = FilterReport()  # in whitespace tokens: the ordinary pair is 1 : 6, the hallucination 1 : 2
    assert list(filter_pairs(pairs, BTFilterConfig(max_tokens=250, max_ratio=3.0), report)) == pairs[2:]


def test_filter_counts_add_up() -> None:
    pairs = [("", "x y"), ("a " * 9, "b"), ("a b c d", "w"), ("ein hund", "a dog"), ("ein hund", "a dog"),
             ("w " * 30, "v " * 30), ("ein hund", "the dog")]  # fmt: skip
    report = FilterReport()
    kept = list(filter_pairs(pairs, BTFilterConfig(max_tokens=20, max_ratio=3.0), report))
    assert kept == [("ein hund", "a dog"), ("ein hund", "the dog")]
    assert report.as_dict() == {"read": 7, "kept": 2, "empty": 1, "too_long": 1, "ratio": 2, "duplicate": 1}
    report = FilterReport()
    assert len(list(filter_pairs(pairs, BTFilterConfig(max_tokens=20, dedup=False), report))) == 3


def test_filter_files_and_training_corpus(tmp_path: Path) -> None:
    write(tmp_path / "syn", ["ein hund", "", "ein hund"])
    write(tmp_path / "real", ["a dog", "a cat", "a dog"])
    rep = filter_files(tmp_path / "syn", tmp_path / "real", tmp_path / "fs", tmp_path / "fr", BTFilterConfig())
    assert (rep.kept, rep.empty, rep.duplicate) == (1, 1, 1)
    counts = write_training_corpus([("eins", "one"), ("zwei", "two")], [(tmp_path / "fs", tmp_path / "fr")],
                                   tmp_path / "src", tmp_path / "tgt", upsample=3, tag="<bt>")  # fmt: skip
    assert counts == {"bitext": 2, "bitext_upsampled": 6, "synthetic": 1, "total": 7}
    assert (tmp_path / "src").read_text().splitlines() == ["eins", "zwei"] * 3 + ["<bt> ein hund"]
    assert (tmp_path / "tgt").read_text().splitlines()[-1] == "a dog"
    write(tmp_path / "short", ["x"])
    with pytest.raises(ValueError, match="aligned"):
        filter_files(tmp_path / "syn", tmp_path / "short", tmp_path / "a", tmp_path / "b", BTFilterConfig())


def test_report_files(tmp_path: Path) -> None:
    def side(d: str, bleu: float) -> dict:
        return {"direction": d, "model": "m", "source": "trained",
                "scores": {"valid": {"bleu": bleu, "chrf": 40.0}, "test2016": {"bleu": bleu + 1, "chrf": 41.0}}}  # fmt: skip

    rows = [{"round": r, "forward": side("de-en", 30 + r), "reverse": side("en-de", 25 + r), "synthetic": {},
             "seconds": {"forward.train": 60.0}} for r in range(3)]  # fmt: skip
    report = {"directions": {"forward": "de-en", "reverse": "en-de"}, "rounds": rows, "eval_beam": 5,
              "signatures": {"bleu": "sig"}, "final_model": "runs/x/final_model"}  # fmt: skip
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["rounds"][2]["forward"]["scores"]["test2016"]["bleu"] == 33
    md = paths["md"].read_text()
    assert "| 2 | 32.00 / 40.00 | 33.00 / 41.00 | 27.00 / 40.00 | 28.00 / 41.00 |" in md and "test2016" in md and "final_model" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_shard_from_flag_or_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gen.parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="--shard"):
            gen.parse_shard(bad)
    assert gen._worker_from_env("1/2", "cpu") == ((1, 2), "cpu")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    shard, device = gen._worker_from_env(None, "cpu")
    assert shard == (3, 4) and device == "cpu"
    assert gen.shard_seed(1, 0) != gen.shard_seed(1, 1) != gen.shard_seed(2, 0)
