"""Memory figures and bounds: RSS and per-stage peaks, the heap trim between stages, and the
kernel-cache bound that keeps a training process's heap from growing step after step."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mt.backtranslate.pipeline import Manifest
from mt.runtime import KERNEL_CACHES, bound_kernel_caches, caches_bounded_here, heap_mib, peak_rss_mib, reset_peak_rss, rss_mib, trim_heap, tune_malloc, unbound_kernel_caches

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not tune_malloc(), reason="needs Linux with glibc")
MIB = 1024 * 1024


def _touch(mib: int) -> None:
    """Allocate, write and free ``mib`` MiB (kept in the heap by the malloc tuning)."""
    a = np.ones(mib * MIB // 8)
    del a


@linux_glibc
def test_peak_restarts_and_trim_gives_freed_heap_back():
    assert rss_mib() > 0 and peak_rss_mib() >= rss_mib()
    _touch(300)
    assert heap_mib()["free"] >= 250  # tune_malloc keeps it for the next step ...
    if not reset_peak_rss():
        pytest.skip("this kernel cannot restart VmHWM (/proc/self/clear_refs)")
    before = rss_mib()
    assert trim_heap()
    assert rss_mib() < before - 200  # ... and trim_heap gives it back
    assert peak_rss_mib() >= before - 1  # the peak since the reset, not since the start


@linux_glibc
def test_manifest_records_each_stages_own_peak_and_end(tmp_path: Path):
    m = Manifest(tmp_path / "m.json")
    m.run("big", lambda: _touch(400) or {})
    m.run("small", lambda: {"x": 1})
    big, small = m.stages["big"], m.stages["small"]
    assert big["rss_peak_mib"] >= big["rss_end_mib"] + 300  # the stage's temporaries, trimmed at its end
    assert small["rss_peak_mib"] < big["rss_peak_mib"] - 300  # its own peak, not the process's
    assert small["result"] == {"x": 1}


@linux_glibc
def test_a_stage_around_stages_keeps_their_peaks(tmp_path: Path):
    """`mt recipe run`'s backtranslate stage wraps the pipeline's own stages, each of which
    restarts the kernel's peak: the outer stage's peak must still cover the inner ones."""
    outer, inner = Manifest(tmp_path / "outer.json"), Manifest(tmp_path / "inner.json")

    def pipeline() -> dict:
        inner.run("big", lambda: _touch(400) or {})
        inner.run("small", lambda: {})
        return {}

    outer.run("backtranslate", pipeline)
    big, small, wrapper = inner.stages["big"], inner.stages["small"], outer.stages["backtranslate"]
    assert small["rss_peak_mib"] < big["rss_peak_mib"] - 300
    assert wrapper["rss_peak_mib"] >= big["rss_peak_mib"]


def test_bound_kernel_caches_keeps_what_the_user_set(monkeypatch):
    for name in KERNEL_CACHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")
    got = bound_kernel_caches()
    assert got == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "LRU_CACHE_CAPACITY": "64"}
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0"


def test_a_decoding_child_drops_only_the_bounds_mt_set(monkeypatch):
    for name in KERNEL_CACHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")  # the user's: kept in the child too
    bound_kernel_caches()
    names = caches_bounded_here()
    assert names == ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
    unbound_kernel_caches(names)
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ and os.environ["LRU_CACHE_CAPACITY"] == "64"


_ORPHAN = textwrap.dedent('''
    import os, subprocess, sys, time
    code = "import sys, time; from mt.runtime import die_with_parent; die_with_parent(int(sys.argv[1])); print('ready', flush=True); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", code, str(os.getpid())], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    print(child.pid, flush=True)
    time.sleep(120)
''')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@linux_glibc
def test_a_worker_dies_with_its_parent():
    """A generation child must not outlive a killed job (it would keep writing shards)."""
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    parent.kill()
    parent.wait()
    deadline = time.time() + 20
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the child outlived its killed parent"


_STEPS = textwrap.dedent('''
    import numpy as np, torch
    from mt.runtime import bound_kernel_caches, heap_mib, tune_malloc
    from mt.config import ModelConfig
    from mt.data.batching import collate
    from mt.model import Transformer
    from mt.train.trainer import build_optimizer, optimizer_update
    tune_malloc()
    bound_kernel_caches()  # what Trainer does, before the first matmul
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Transformer(ModelConfig(preset=None, vocab_size=500, d_model=64, n_heads=4, enc_layers=2, dec_layers=2, ffn_dim=128)).train()
    class TC: lr, betas, eps, weight_decay = 1e-3, (0.9, 0.98), 1e-9, 0.0
    opt = build_optimizer(model, TC, torch.device("cpu"))
    in_use = []
    for step in range(60):  # a new (batch, length) shape every step, as token-budget batches have
        b, t = 8 + step % 23, 5 + (7 * step) % 31
        batch = collate([rng.integers(4, 500, t) for _ in range(b)], [rng.integers(4, 500, t) for _ in range(b)], 0, 2, 3)
        optimizer_update(model, model, opt, [batch], batch.n_tgt_tokens, 0.1, 0, torch.device("cpu"), True, 1.0)
        if step in (19, 59):
            in_use.append(heap_mib()["in_use"])
    print(in_use[1] - in_use[0])
''')


@linux_glibc
def test_training_steps_of_new_shapes_do_not_grow_the_heap():
    """With the caches bounded, 40 more steps of 40 new shapes leave live heap memory where it
    was; with 1,024-entry caches each new shape adds kernels (measured: bench/results.md)."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHES}
    out = subprocess.run([sys.executable, "-c", _STEPS], env=env, capture_output=True, text=True, timeout=300, check=True)
    growth = float(out.stdout.split()[-1])
    assert growth < 2.0, f"live heap grew {growth} MiB over 40 training steps of new shapes"
