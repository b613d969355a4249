"""bench/batching_ceiling.py runs end to end on a tiny random model and reports its ratio."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _bench_support import bench_script
from _serve_support import make_random_model_dir, synthetic_sentences


def test_ceiling_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_random_model_dir(tmp_path / "model", preset="tiny", vocab_size=400)
    src = tmp_path / "src.txt"
    src.write_text("\n".join(synthetic_sentences(20, seed=3)) + "\n\n", encoding="utf-8")
    script = bench_script("batching_ceiling")
    assert script.main(["--model", str(model), "--input", str(src), "--sentences", "8", "--batch", "4",
                        "--beam", "2", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    rounds = re.findall(r"round \d: alone ([\d.]+) ms/sentence, offline ([\d.]+) ms/sentence\n"
                        r"  batches of 4 ([\d.]+) ms/sentence, ceiling ([\d.]+)x one at a time, (\d+)% of offline", out)
    assert len(rounds) == 2
    for alone, off, batched, ceiling, share in rounds:
        # each printed figure is rounded to 0.01 (the share to 1%): the ceilings must lie within what that allows
        a, o, b, c, pct = float(alone), float(off), float(batched), float(ceiling), float(share)
        assert 2 * (a - 0.005) / (b + 0.005) - 0.005 <= c <= 2 * (a + 0.005) / max(b - 0.005, 1e-9) + 0.005
        assert 200 * (o - 0.005) / (b + 0.005) - 0.5 <= pct <= 200 * (o + 0.005) / max(b - 0.005, 1e-9) + 0.5
    assert re.search(r"\nmean: alone [\d.]+ ms/sentence, offline [\d.]+ ms/sentence\n  batches of 4 ", out)


def test_ceiling_script_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_random_model_dir(tmp_path / "model", preset="tiny", vocab_size=400)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    good = tmp_path / "good.txt"
    good.write_text("ein Satz\n", encoding="utf-8")
    script = bench_script("batching_ceiling")
    cases = [
        (["--model", str(model), "--input", str(empty)], "--input"),
        (["--model", str(model), "--input", str(good), "--batch", "0"], "must be >= 1"),
        (["--model", str(model), "--input", str(good), "--batch", "8,x"], "--batch 8,x"),
        (["--model", str(model), "--input", str(tmp_path / "missing.txt")], "missing.txt"),
        (["--model", str(tmp_path / "no-model"), "--input", str(good)], "no-model"),
        # a directory that holds no model: named with its first missing file, not a loader traceback
        (["--model", str(tmp_path), "--input", str(good)], "--model"),
    ]
    for argv, named in cases:
        with pytest.raises(SystemExit):
            script.main(argv)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert named in err, (argv, err)
