"""bench/decode_vs_ct2.py: mt and its CTranslate2 export on the same batches, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _bench_support import bench_script
from _serve_support import make_random_model_dir, synthetic_sentences

pytest.importorskip("ctranslate2")


def _files(tmp_path: Path, n: int = 10) -> tuple[Path, Path, Path]:
    """A random model (it rarely ends a sentence, so outputs run to the maximum length) and
    sources that are rotations of one sentence: every source has the same subwords, so the
    per-batch maximum length CTranslate2 gets equals mt's per-sentence one."""
    model = make_random_model_dir(tmp_path / "model", preset="tiny", vocab_size=400)
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    words = synthetic_sentences(1, seed=3)[0].split()
    src.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(n)) + "\n", encoding="utf-8")
    ref.write_text("\n".join(synthetic_sentences(n, seed=4)) + "\n", encoding="utf-8")
    return model, src, ref


def test_every_system_translates_the_same_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, src, ref = _files(tmp_path)
    argv = ["--model", str(model), "--src", str(src), "--ref", str(ref), "--batch", "4", "--beams", "2,1",
            "--threads", "2", "--workers", "2", "--repeats", "1"]  # fmt: skip
    assert bench_script("decode_vs_ct2").main(argv) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    systems = {r["system"] for r in rows}
    assert len(rows) == 12 and {"mt int8", "CTranslate2 float32", "CTranslate2 int8"} <= systems
    assert all(r["sent_per_s"] > 0 and r["seconds"] > 0 for r in rows)
    greedy = {r["system"]: r for r in rows if r["beam"] == 1}
    mt_fp32 = next(r for name, r in greedy.items() if name.endswith("(default)"))
    # the export decodes greedily exactly as mt does (tests/test_export.py): the same text, so
    # the same scores, unless the bench's CTranslate2 path (pieces, ids, detokenising) broke
    assert (greedy["CTranslate2 float32"]["bleu"], greedy["CTranslate2 float32"]["chrf"]) == (mt_fp32["bleu"], mt_fp32["chrf"])
    assert mt_fp32["chrf"] > 0
    # mt's pipeline around CTranslate2's search: CTranslate2's output, whatever the beam
    for beam in (1, 2):
        ours, bare = (next(r for r in rows if r["beam"] == beam and r["system"] == name)
                      for name in ("mt --engine ctranslate2 (float32)", "CTranslate2 float32"))  # fmt: skip
        assert (ours["bleu"], ours["chrf"]) == (bare["bleu"], bare["chrf"])
    table = re.findall(r"^\| (.+?) \| (\d) \| [\d.]+ \| ([\d.]+) \|", out, re.M)
    assert len(table) == 12 and all(ratio == "1.00" for name, _, ratio in table if name == "CTranslate2 int8")


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, src, ref = _files(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    base = ["--src", str(src), "--ref", str(ref)]
    cases = [
        (["--model", str(tmp_path / "no-model"), *base], "--model"),
        (["--model", str(model), "--src", str(tmp_path / "missing.txt"), "--ref", str(ref)], "--src"),
        (["--model", str(model), "--src", str(src), "--ref", str(short)], "--ref: 1 lines for 10"),
        (["--model", str(model), *base, "--threads", "2", "--workers", "3"], "--workers must divide --threads"),
        (["--model", str(model), *base, "--beams", "5,x"], "--beams 5,x"),
        (["--model", str(model), *base, "--beams", "0"], "--beams 0"),
        (["--model", str(model), "--src", str(empty), "--ref", str(empty)], "has no sentences"),
    ]
    script = bench_script("decode_vs_ct2")
    for argv, named in cases:
        with pytest.raises(SystemExit):
            script.main(argv)
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_worker_gets_its_share_of_the_threads(workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model sets torch's threads and CTranslate2 sets OpenMP's: neither may change
    the threads a timed pass runs on (``--threads / --workers`` per worker)."""
    import torch

    model, src, ref = _files(tmp_path, n=4)
    script = bench_script("decode_vs_ct2")
    real, seen = script.run_parallel, []

    def recording(run, n_batches, n_workers, progress=None):
        seen.append(torch.get_num_threads() // n_workers)  # what run_parallel gives each worker
        return real(run, n_batches, n_workers, progress)

    monkeypatch.setattr(script, "run_parallel", recording)
    before = torch.get_num_threads()
    try:
        argv = ["--model", str(model), "--src", str(src), "--ref", str(ref), "--batch", "2", "--beams", "1",
                "--threads", "2", "--workers", str(workers), "--repeats", "1"]  # fmt: skip
        assert script.main(argv) == 0
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 12 and set(seen) == {2 // workers}  # 6 systems x (warm-up + 1 pass)


def test_compile_adds_an_unpacked_eager_and_a_compiled_system(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--compile``: the compiled system really runs inductor graphs, and greedy search on it
    writes what the same unpacked weights write eagerly (fused ops may move the last bits of a
    logit, which on these sources does not change an argmax)."""
    import torch._dynamo

    model, src, ref = _files(tmp_path, n=6)
    torch._dynamo.reset()
    argv = ["--model", str(model), "--src", str(src), "--ref", str(ref), "--batch", "3", "--beams", "1",
            "--threads", "1", "--workers", "1", "--repeats", "1", "--compile"]  # fmt: skip
    assert bench_script("decode_vs_ct2").main(argv) == 0
    out = capsys.readouterr().out
    rows = {r["system"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    assert {"mt fp32, F.linear", "mt fp32, torch.compile"} <= set(rows)
    assert "warm-up (compiling) at beam 1" in out
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    eager, compiled = rows["mt fp32, F.linear"], rows["mt fp32, torch.compile"]
    assert (compiled["bleu"], compiled["chrf"]) == (eager["bleu"], eager["chrf"])
