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
import functools
import os
import platform
import signal
import sys
from typing import Iterator

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_done = False
_libc: "ctypes.CDLL | None | bool" = False  # False: not looked up yet; None: no glibc


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc ≥ 2.33)."""

    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _glibc() -> "ctypes.CDLL | None":
    """glibc, or None (another libc, another OS)."""
    global _libc
    if _libc is False:
        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "mallopt") else None
        except OSError:
            _libc = None
        if _libc is not None and hasattr(_libc, "mallinfo2"):
            _libc.mallinfo2.restype = _MallInfo2
    return _libc  # type: ignore[return-value]


def tune_malloc() -> bool:
    """Keep freed tensor memory in the glibc heap (no-op elsewhere). Returns True if applied.

    Set ``MT_NO_MALLOC_TUNING=1`` to leave the allocator alone.
    """
    global _done
    if _done or os.environ.get("MT_NO_MALLOC_TUNING"):
        return _done
    libc = _glibc()
    if libc is None:  # musl and other libcs have no mallopt
        return False
    mallopt = libc.mallopt
    # 1 GiB keeps even the (tokens, vocab) logits of a large batch in the heap; glibc before
    # 2.26-era limits rejects values above 32 MiB, so fall back to that
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) or mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok &= mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    _done = bool(ok)
    return _done


# oneDNN's primitive cache and ideep's (PyTorch's oneDNN wrapper) computation cache each keep
# up to 1,024 kernels keyed by tensor shape. Training batches change shape every step, so the
# caches churn: each new entry is a long-lived allocation made among the step's temporaries,
# which pins heap memory that the next steps cannot reuse (bench/results.md, "Training memory").
KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "LRU_CACHE_CAPACITY": "1"}


_bounded_here: set[str] = set()  # the KERNEL_CACHES names bound_kernel_caches set (not the user)


def bound_kernel_caches() -> dict[str, str]:
    """Turn the per-shape kernel caches off for a process that trains (a value the user set in
    the environment wins). Both libraries read the variable when they create their first
    kernel, so this must run before the process's first matmul. Returns the values in effect."""
    for name, value in KERNEL_CACHES.items():
        if name not in os.environ:
            os.environ[name] = value
            _bounded_here.add(name)
    return {name: os.environ[name] for name in KERNEL_CACHES}


def caches_bounded_here() -> list[str]:
    """The cache variables this process set (the user's own are not listed): what a child
    process that only decodes drops again with :func:`unbound_kernel_caches`: beam search meets
    few shapes, so the caches save it from re-creating kernels (bench/bt_generation_child.py)."""
    return sorted(n for n in _bounded_here if os.environ.get(n) == KERNEL_CACHES[n])


def unbound_kernel_caches(names: list[str]) -> None:
    """Drop ``names`` (from :func:`caches_bounded_here`) from the environment; like bounding,
    this must run before the process's first matmul."""
    for name in names:
        os.environ.pop(name, None)


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to send this process SIGTERM when its parent exits (Linux), so a worker
    does not outlive a killed job; exits now if the parent is already gone. False elsewhere."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)
    return True


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


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo``; empty where there
    is none (not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name with its family/model numbers and matrix instructions, e.g.
    ``AMD EPYC (family 25 model 17; avx512_bf16)``, else the machine type. Benchmarks print it
    next to their figures: a VM's bare model name does not tell CPU generations apart."""
    fields = _cpuinfo()
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" not in fields:
        return name
    units = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2") if f in cpu_flags()]
    return f"{name} (family {fields['cpu family']} model {fields.get('model', '?')}; {' '.join(units[:2]) or 'no AVX2'})"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``: ``avx512_bf16``, ``amx_bf16``, ...); empty
    where unknown (not Linux), so callers fall back to what needs no special instruction."""
    return frozenset(_cpuinfo().get("flags", "").split())


NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # CPU flags of native bf16 matrix instructions
PRECISION_PIN_ENV = "MT_DTYPE_AUTO"  # pins what ``auto`` precision becomes, decoding and training
NO_NATIVE_BF16 = "this CPU has no native bf16 (avx512_bf16 / amx_bf16)"  # the reason, where it is one


def native_bf16() -> list[str]:
    """This CPU's native bf16 matrix instructions (:data:`NATIVE_BF16` in its flags); empty
    where bf16 arithmetic would be emulated, many times slower than fp32 (bench/results.md)."""
    return [f for f in NATIVE_BF16 if f in cpu_flags()]


def pinned_precision() -> str | None:
    """``$MT_DTYPE_AUTO`` (fp32 or bf16): one precision for ``auto`` over a cluster of mixed
    CPUs, or for tests that compare outputs bit for bit; None when unset."""
    from mt.errors import ConfigError

    pinned = os.environ.get(PRECISION_PIN_ENV, "").strip()
    if pinned and pinned not in ("fp32", "bf16"):
        raise ConfigError(f"{PRECISION_PIN_ENV}={pinned!r}: expected fp32 or bf16")
    return pinned or None


@functools.lru_cache(maxsize=None)
def machine_fingerprint() -> str:
    """What kernel behaviour depends on: the CPU (model name and flags) and torch with its
    BLAS/oneDNN build. Keys the run-time probes' remembered findings."""
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read()
        cpu = "|".join(line for line in info.splitlines() if line.startswith(("model name", "flags")))[:8000]
    except OSError:
        cpu = platform.processor()
    return f"{cpu}|{torch.__version__}|{torch.__config__.show()}"


# --------------------------------------------------------------------------- memory figures


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mib() -> float | None:
    """This process's resident memory now (``VmRSS``), MiB; None off Linux."""
    kib = _status_kib("VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def peak_rss_mib() -> float | None:
    """The peak of ``VmRSS`` since the process started or since ``reset_peak_rss`` (``VmHWM``), MiB."""
    kib = _status_kib("VmHWM")
    return None if kib is None else round(kib / 1024, 1)


def reset_peak_rss() -> bool:
    """Restart the ``VmHWM`` peak at the current RSS (Linux ≥ 4.0: ``clear_refs`` value 5).
    False where it is not possible. Stages measure through :func:`peak_rss_window`, which
    keeps the peaks of enclosing windows across the reset."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


# per open peak_rss_window, innermost last: its highest VmHWM seen before an inner reset
_open_windows: list[float] = []


@contextlib.contextmanager
def peak_rss_window() -> Iterator[dict[str, float]]:
    """The peak RSS of the block, MiB, in the yielded dict's ``"peak_mib"`` once the block
    ends (absent off Linux). Windows nest: a back-translation stage inside a recipe stage
    resets ``VmHWM`` for its own peak, and the recipe stage's peak still covers it."""
    out: dict[str, float] = {}
    if _open_windows:  # what the enclosing window has reached so far survives the reset
        _open_windows[-1] = max(_open_windows[-1], peak_rss_mib() or 0.0)
    reset_peak_rss()
    _open_windows.append(0.0)
    try:
        yield out
    finally:
        peak = max(_open_windows.pop(), peak_rss_mib() or 0.0)
        if _open_windows:
            _open_windows[-1] = max(_open_windows[-1], peak)
        if peak > 0:
            out["peak_mib"] = peak


def trim_heap() -> bool:
    """Give the heap's free memory back to the kernel (glibc ``malloc_trim(0)``, which also
    releases free pages inside the heap, in every arena). ``tune_malloc`` keeps freed memory for
    reuse within a stage; between stages that memory only makes the process look bigger."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def heap_mib() -> dict[str, float] | None:
    """glibc's view of the heap (``mallinfo2``), MiB: ``in_use`` (live allocations),
    ``free`` (kept by malloc for reuse: the part ``trim_heap`` can give back) and ``mmapped``
    (large blocks mapped one by one). None where unavailable (glibc < 2.33, other libcs)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    m = libc.mallinfo2()
    mib = 1024 * 1024
    return {"in_use": round((m.uordblks + m.hblkhd) / mib, 1), "free": round(m.fordblks / mib, 1),
            "mmapped": round(m.hblkhd / mib, 1)}
