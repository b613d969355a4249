"""Where a training process's memory goes: RSS and glibc's heap, step by step, per setting.

Runs the real update (``optimizer_update``: forward, backward, clip, AdamW; bf16 autocast)
of the default recipe's model (d256, 3+3 layers, 8k vocabulary, 4,096-token batches) on
synthetic batches with Multi30k-like lengths, one child process per variant, and prints
RSS, the heap's live bytes (``in_use``) and the free bytes malloc keeps (``free``) every
``--every`` steps, then seconds per step. Variants:

* ``bounded``: mt's training defaults (malloc tuning, oneDNN/ideep kernel caches off);
* ``cached``: malloc tuning, kernel caches at the libraries' capacity (1,024 each);
* ``fixed``: ``cached`` with one batch shape repeated (what the caches were made for);
* ``untuned``: glibc's malloc defaults, caches at the libraries' capacity;
* ``onednn_off``: oneDNN's primitive cache off, ideep's at its capacity.

    python bench/train_memory.py                          # 150 steps per variant, 2 threads
    python bench/train_memory.py --variants bounded,cached --steps 300 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CACHED = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}
VARIANTS = {
    "bounded": {},
    "cached": CACHED,
    "fixed": {**CACHED, "BENCH_FIXED_SHAPE": "1"},
    "untuned": {**CACHED, "MT_NO_MALLOC_TUNING": "1"},
    "onednn_off": {**CACHED, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"},  # ideep's cache alone
}


def variant_env(name: str) -> dict[str, str]:
    """This process's environment with the memory settings of variant ``name`` only (a
    setting the caller's shell has is dropped first, so every variant starts alike)."""
    from mt.runtime import KERNEL_CACHES

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHES and k not in ("MT_NO_MALLOC_TUNING", "BENCH_FIXED_SHAPE")}
    return {**env, **VARIANTS[name]}


def child(steps: int, every: int, threads: int) -> None:
    """The measured process: prints one JSON line per ``every`` steps."""
    import torch

    from mt.config import ModelConfig
    from mt.model import Transformer
    from mt.runtime import bound_kernel_caches, heap_mib, rss_mib, tune_malloc
    from mt.train.trainer import build_optimizer, optimizer_update
    from train_speed import MODELS, synthetic_batches

    tune_malloc()  # a no-op under MT_NO_MALLOC_TUNING
    bound_kernel_caches()  # as Trainer does; a variant's explicit capacities win
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vocab, cpu = 8000, torch.device("cpu")
    model = Transformer(ModelConfig(preset=None, vocab_size=vocab, **MODELS["target"])).train()

    class TC:  # the optimizer fields of TrainConfig
        lr, betas, eps, weight_decay = 5e-4, (0.9, 0.98), 1e-9, 0.0

    opt = build_optimizer(model, TC, cpu)
    batches = synthetic_batches(steps, 4096, vocab, seed=1)
    if os.environ.get("BENCH_FIXED_SHAPE"):
        batches = [batches[0]] * steps
    t0 = time.perf_counter()
    for i, b in enumerate(batches, 1):
        optimizer_update(model, model, opt, [b], b.n_tgt_tokens, 0.1, 0, cpu, True, 1.0)
        if i % every == 0:
            heap = heap_mib() or {}
            print(json.dumps({"step": i, "rss_mib": rss_mib(), "in_use_mib": heap.get("in_use"),
                              "free_mib": heap.get("free"), "s_per_step": (time.perf_counter() - t0) / i}), flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="bounded,cached,fixed,untuned")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.steps, args.every, args.threads)
    from mt.runtime import cpu_name

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(VARIANTS)})")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads, {args.steps} steps per variant")
    print("| variant | step | RSS MiB | heap in use MiB | heap free MiB | s/step |\n|---|---|---|---|---|---|")
    for name in names:
        env = variant_env(name)
        cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--every", str(args.every), "--threads", str(args.threads)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            r = json.loads(line)
            print(f"| {name} | {r['step']} | {r['rss_mib']:,.0f} | {r['in_use_mib']:,.0f} | {r['free_mib']:,.0f} | {r['s_per_step']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
