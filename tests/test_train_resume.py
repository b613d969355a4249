"""Exact resume: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _train_tiny import make_prepared, write_config

REPO = Path(__file__).resolve().parents[1]
# enough updates (~1-2 s on one thread) that the kill lands mid-run, between checkpoints
TRAIN = dict(max_steps=120, save_every=25, valid_every=40, log_every=1, dropout_check=None)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _train_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mt.cli", "train", str(cfg), *extra]


def _setup(tmp_path: Path, name: str, data_from: Path | None = None) -> tuple[Path, Path]:
    run = tmp_path / name
    if data_from is None:
        make_prepared(run)
    else:
        run.mkdir()
        os.symlink(data_from, run / "data")
    train = {k: v for k, v in TRAIN.items() if k != "dropout_check"}
    return run, write_config(tmp_path / f"{name}.yaml", run, **train)


def _train_losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "train":
            out[rec["step"]] = rec["loss"]
    return out


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    ref_run, ref_cfg = _setup(tmp_path, "ref")
    subprocess.run(_train_cmd(ref_cfg), check=True, env=_env(), capture_output=True, timeout=300)

    run, cfg = _setup(tmp_path, "killed", data_from=ref_run / "data")
    proc = subprocess.Popen(_train_cmd(cfg), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # kill at an arbitrary step after the second checkpoint (step 50), before the end
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists():
            steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if x.endswith("}")]
            if steps and steps[-1] >= 57:
                proc.send_signal(signal.SIGKILL)
                killed_at = steps[-1]
                break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_at is not None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model_last").exists()
    assert (run / "checkpoints" / "step_00000050").is_dir()
    assert killed_at < 120

    res = subprocess.run(_train_cmd(cfg, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stderr

    ref_bytes = (ref_run / "model_last" / "model.safetensors").read_bytes()
    assert (run / "model_last" / "model.safetensors").read_bytes() == ref_bytes
    # the optimizer state and the logged loss curve are identical too
    assert (run / "checkpoints/step_00000120/optim.safetensors").read_bytes() == (
        ref_run / "checkpoints/step_00000120/optim.safetensors"
    ).read_bytes()
    assert _train_losses(run) == _train_losses(ref_run)


def test_resume_without_checkpoint_and_restart_with_checkpoints_fail_clearly(tmp_path):
    from mt.config import ConfigError, load_config
    from mt.train.checkpoint import CheckpointError
    from mt.train.trainer import train

    run, cfg_path = _setup(tmp_path, "r")
    cfg = load_config(cfg_path, ["train.max_steps=4", "train.valid_every=4"])
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(cfg, resume=True)
    train(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)
    # a damaged newest checkpoint is reported by name, not loaded
    weights = run / "checkpoints" / "step_00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"step_00000004.*truncated"):
        train(cfg, resume=True)


def test_a_second_training_in_a_busy_run_dir_stops_with_one_line_and_touches_nothing(tmp_path):
    """While a run_dir is held (here by this test, as a running ``mt train`` holds it), a second
    ``mt train --resume`` stops at once with one line naming the directory, and writes no
    checkpoint or metric next to the holder's."""
    from mt.config import load_config
    from mt.fileio import exclusive_dir
    from mt.train.trainer import train

    run, cfg_path = _setup(tmp_path, "busy")
    train(load_config(cfg_path, ["train.max_steps=4", "train.valid_every=4"]))
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with exclusive_dir(run, "training"):
        proc = subprocess.run(_train_cmd(cfg_path, "--resume", "--set", "train.max_steps=8"),
                              capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{run}: another process (pid {os.getpid()}) is already training here" in lines[0]
    after = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    train(load_config(cfg_path, ["train.max_steps=8", "train.valid_every=4"]), resume=True)  # free again
