"""Process-level performance settings shared by training, decoding and serving.

Two CPU pitfalls, both measured on this project's 2-core reference machine:

* denormal floats: a trained model's decoder produced subnormal values, and x86 arithmetic
  on them is ~100x slower; beam-5 decoding of 32 sentences took 17.1 s with them and 2.2 s
  with flush-to-zero (``denormals_flushed``, used around decoding). Multi30k val greedy
  BLEU of that model was 38.94 with and without it. The flag is per thread and scoped to decoding, because it also
  changes unrelated float code (hypothesis refuses to run under it).
* page faults, below.

PyTorch on CPU allocates and frees large activation buffers every step. With glibc's
defaults, buffers above the (dynamic) mmap threshold are returned to the kernel on free and
page-faulted back in on the next step; on this project's 2-core reference machine that
page-fault (system) time made a training step 3.4x slower (4.35 s vs 1.30 s for a
4k-token batch of a 3+3-layer d256 model, fp32, measured while other jobs shared the CPU). Raising the mmap and trim
thresholds keeps the memory in the heap for reuse.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import sys
from typing import Iterator

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_done = False


def tune_malloc() -> bool:
    """Keep freed tensor memory in the glibc heap (no-op elsewhere). Returns True if applied.

    Set ``MT_NO_MALLOC_TUNING=1`` to leave the allocator alone.
    """
    global _done
    if _done or not sys.platform.startswith("linux") or os.environ.get("MT_NO_MALLOC_TUNING"):
        return _done
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    # 1 GiB keeps even the (tokens, vocab) logits of a large batch in the heap; glibc before
    # 2.26-era limits rejects values above 32 MiB, so fall back to that
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) or mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok &= mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    _done = bool(ok)
    return _done


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush-to-zero inside the block only (the CPU flag is per thread), so a library user's
    own float code around a decoding call keeps IEEE subnormals."""
    import torch

    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads on CPU (None: torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the machine type: benchmarks print it
    next to their figures, since results differ between CPU families."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
