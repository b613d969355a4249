"""``dtype: auto``: the decoding precision for this machine and model, measured.

bf16 halves the bytes of every weight and activation, and CPUs with native bf16 matrix
instructions (AVX512-BF16, AMX-BF16) multiply in it several times faster than in fp32. But a
decoding step is more than its matmuls (attention over the cache, softmax, top-k, the search's
bookkeeping), so the probe times decoding steps, not matmuls. ``auto`` resolves to:

- fp32 on CUDA / MPS (as before), with int8 (it quantises fp32 weights), and on a CPU without
  native bf16 (``avx512_bf16`` / ``amx_bf16`` absent from ``/proc/cpuinfo``: bf16 would be
  emulated);
- else bf16 when beam-5 decoding steps of this model's shape, on the current thread count, ran
  at least :data:`MIN_SPEEDUP` times faster in bf16 than in fp32; fp32 otherwise.

The finding is remembered per CPU, thread count and model shape beside the invariance probe's
(``$MT_PROBE_CACHE``), so every process on the machine decodes alike; ``MT_DTYPE_AUTO=fp32`` (or
``bf16``) pins it without probing: one precision over a cluster of mixed CPUs, or tests that
compare outputs bit for bit. A probe that ran on a busy CPU (its thread had the core less than
:data:`MIN_SHARE` of the time: other processes competed) is used by this process only and
measured again by the next: under contention it read 0.87-1.21x on a CPU that runs bf16 1.6x
faster when quiet, and 4.6x at 2 threads.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from mt.fileio import recall_json_entry, remember_json_entry
from mt.runtime import NO_NATIVE_BF16, PRECISION_PIN_ENV, cpu_name, machine_fingerprint, native_bf16, pinned_precision

MIN_SPEEDUP = 1.25  # "clearly faster": above the run-to-run noise of a shared 2-core VM
MIN_SHARE = 0.85  # CPU seconds / wall seconds of the probing thread; below: the CPU was busy
PIN_ENV = PRECISION_PIN_ENV
PROBE_VERSION = 3  # bump when the probe changes: remembered findings are measured again

_FOUND: dict[str, Any] = {}  # this process's findings, by cache key


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` became and why (printed at start-up, recorded by ``mt evaluate``).
    ``speedup``: fp32 seconds / bf16 seconds of the probe, None where it did not run."""

    dtype: str
    reason: str
    speedup: Optional[float] = None


Build = Callable[[Any, str], Any]
"""``build(model, dtype)``: the decoding model the probe times (:func:`mt.decode.variant.prepare`,
unprobed, on CPU); passed in, since the variants are built by the module that imports this one."""


def resolve(requested: str, device: torch.device, int8: bool, model: Any, build: Build) -> PrecisionChoice:
    """``requested`` as given when it is not ``auto``; else the choice above for ``model``
    (a :class:`mt.model.Transformer`) on ``device``; ``build`` makes what the probe times."""
    native = native_bf16()
    if requested != "auto":
        emulated = requested == "bf16" and device.type == "cpu" and not native
        return PrecisionChoice(requested, "as requested" + (f"; {NO_NATIVE_BF16}: emulated, far slower than fp32" if emulated else ""))
    pinned = pinned_precision()
    if pinned:
        return PrecisionChoice(pinned, f"auto: pinned by {PIN_ENV}")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"auto: fp32 on {device.type}")
    if int8:
        return PrecisionChoice("fp32", "auto: fp32, int8 quantises fp32 weights")
    if not native:
        return PrecisionChoice("fp32", f"auto: fp32, {NO_NATIVE_BF16}")
    found = _measured(model, build)
    speedup, threads = float(found["speedup"]), torch.get_num_threads()
    verdict = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    how = f"{native[0]}; bf16 decoding steps ran {speedup:.2f}x fp32 on {threads} thread(s), threshold {MIN_SPEEDUP}x"
    if found.get("share", 1.0) < MIN_SHARE:
        how += f"; measured on a busy CPU (share {found['share']:.2f}), not remembered"
    return PrecisionChoice(verdict, f"auto: {verdict} ({how})", round(speedup, 3))


# --------------------------------------------------------------------------- the probe


def _measured(model: Any, build: Build) -> dict[str, Any]:
    """The probe's finding for ``model`` here (``speedup``, ``share``): this process's, else an
    earlier process's (the cache file), else measured now; remembered in the file only when
    the CPU was not busy."""
    key = _cache_key(model)
    if key not in _FOUND:
        entry = recall_json_entry(_cache_file(), key)
        if not isinstance(entry, dict) or "speedup" not in entry:
            speedup, share = probe_speedup(model, build)
            entry = {"speedup": speedup, "share": round(share, 3), "cpu": cpu_name(), "threads": torch.get_num_threads()}
            if share >= MIN_SHARE:
                remember_json_entry(_cache_file(), key, entry)
        _FOUND[key] = entry
    return _FOUND[key]


def probe_speedup(model: Any, build: Build, sentences: int = 32, src_len: int = 24, steps: int = 8,
                  repeats: int = 3) -> tuple[float, float]:  # fmt: skip
    """fp32 seconds / bf16 seconds of a beam-5 search of ``sentences`` random sources
    (``steps`` decoding steps each) by ``build(model, dtype)``, and the probing thread's share
    of the CPU while it ran (its CPU seconds / wall seconds).

    Each precision's time is the best of ``repeats``, taken in turns (fp32, bf16, bf16, fp32,
    ...) so that a load which comes and goes weighs on both alike. 32 sentences (160 rows at
    beam 5) is a typical decoding batch; with 8, per-step overheads dominated and the probe
    read 1.21x where whole test sets decoded 1.57x faster in bf16."""
    from mt.config import DecodeOptions
    from mt.data.batching import make_source
    from mt.decode.search import beam_search

    cfg = model.cfg
    g = torch.Generator().manual_seed(99)
    low = max(cfg.pad_id, cfg.bos_id, cfg.eos_id, cfg.unk_id) + 1
    n = min(src_len, cfg.max_positions - 2)
    sources = [torch.randint(low, cfg.vocab_size, (n,), generator=g).tolist() for _ in range(sentences)]
    src = make_source(sources, cfg.pad_id, cfg.eos_id)
    opts = DecodeOptions(beam=5, dtype="fp32", max_len_a=0.0, max_len_b=steps, min_len=steps)
    models = {dtype: build(model, dtype) for dtype in ("fp32", "bf16")}
    for dm in models.values():
        beam_search(dm, src, opts)  # warm-up: oneDNN builds its kernels for these shapes
    best = {dtype: float("inf") for dtype in models}
    wall = cpu = 0.0
    for i in range(repeats):
        for dtype in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            t0, c0 = time.perf_counter(), time.thread_time()
            beam_search(models[dtype], src, opts)
            seconds = time.perf_counter() - t0
            wall, cpu = wall + seconds, cpu + time.thread_time() - c0
            best[dtype] = min(best[dtype], seconds)
    return best["fp32"] / best["bf16"], min(cpu / wall, 1.0) if wall > 0 else 1.0


def findings() -> dict[str, Any]:
    """This process's probe findings: a server's decoding processes :func:`adopt` the parent's,
    so that all of them decode in one precision even where the cache file is off."""
    return dict(_FOUND)


def adopt(found: dict[str, Any]) -> None:
    _FOUND.update(found)


def _cache_key(model: Any) -> str:
    c = model.cfg
    shape = (c.d_model, c.n_heads, c.enc_layers, c.dec_layers, c.ffn_dim, c.vocab_size)
    text = json.dumps([PROBE_VERSION, machine_fingerprint(), torch.get_num_threads(), shape])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_file():
    from mt.decode.invariance import cache_path

    path = cache_path()
    return None if path is None else path.with_name("precision.json")
