"""bench/decode_speed.py decodes the same work in every system, one batch or several at once."""

from __future__ import annotations

import json

import pytest

from _bench_support import bench_script

pytest.importorskip("transformers")


@pytest.mark.parametrize("workers", [1, 2])
def test_every_system_decodes_every_batch(workers: int, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--d-model", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "300", "--batch", "3",
            "--src-len", "5", "--tgt-len", "6", "--threads", "2", "--repeats", "1", "--skip", "ct2"]  # fmt: skip
    bench_script("decode_speed").main([*tiny, "--workers", str(workers)])
    out = capsys.readouterr().out
    rows = json.loads(out.strip().splitlines()[-1])
    assert {r["system"] for r in rows} == {"mt fp32", "mt fp32 packed (default)", "mt int8", "HF generate fp32"}
    for r in rows:  # every system is credited with `workers` batches of 3 sentences x 6 tokens
        assert (r["sentences"], r["tokens"]) == (3 * workers, 18 * workers)
        # seconds are rounded to 1 ms, which on a fast CPU is a large share of a tiny run
        low, high = r["seconds"] - 0.0005, r["seconds"] + 0.0005
        assert r["sentences"] / high <= r["sent_per_s"] * (1 + 1e-3)
        assert low <= 0 or r["sent_per_s"] <= r["sentences"] / low * (1 + 1e-3)
    assert f"{workers} batch(es) at once" in out
    assert "3/3 sentences token-identical to HF" in out  # greedy, batch 0


def test_workers_must_divide_threads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_script("decode_speed").main(["--threads", "2", "--workers", "3"])
    assert "--workers 3" in capsys.readouterr().err
