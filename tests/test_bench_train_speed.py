"""bench/train_speed.py --against: another revision's mt measured beside this tree's."""

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from _bench_support import ROOT, bench_script

pytestmark = pytest.mark.skipif(
    subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0,
    reason="needs a git checkout with a commit (the benchmark checks out a revision)",
)
ARGS = Namespace(device="cpu", threads=1, steps=1, max_tokens=256, vocab=64, models=["tiny"], precisions=["fp32"])


def _worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout


def test_a_child_imports_mt_from_the_revision_it_measures():
    ts = bench_script("train_speed")
    before = _worktrees()
    with ts.worktree("HEAD") as base:
        theirs = ts.run_child(base, ARGS, compile=False)
    ours = ts.run_child(ts.REPO, ARGS, compile=False)
    assert Path(theirs[0]["mt"]).resolve().is_relative_to(base.resolve())
    assert Path(ours[0]["mt"]).resolve().is_relative_to(ROOT.resolve())
    assert theirs[0]["tgt_tok_s"] > 0 and ours[0]["tgt_tok_s"] > 0
    assert _worktrees() == before  # the temporary worktree is gone


def test_against_prints_both_systems_and_the_ratio():
    cmd = [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--against", "HEAD", "--rounds", "1", "--models", "tiny",
           "--precisions", "fp32", "--steps", "1", "--max-tokens", "256", "--vocab", "64", "--threads", "1", "--no-append"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| tiny | fp32 |")]
    assert [r.split("|")[3].strip() for r in rows] == ["`HEAD`", "this tree"]
    assert rows[0].rstrip().endswith("| 1.00× |") and rows[1].rstrip().endswith("× |")


def test_an_unknown_revision_is_one_line():
    cmd = [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--against", "no-such-rev", "--models", "tiny", "--no-append"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0
    assert "--against no-such-rev: git worktree failed" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("bad", [["--against", "HEAD", "--rounds", "0"], ["--compile"]])
def test_bad_flags_are_one_line(bad):
    cmd = [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--models", "tiny", "--no-append", *bad]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("--rounds" in out.stderr) if "--rounds" in bad else ("--compile" in out.stderr)
