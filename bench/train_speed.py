"""Training-step throughput of the real trainer update (``mt.train.trainer.optimizer_update``).

Synthetic batches with Multi30k-like lengths (source ~17, target ~15 subwords) are cut by
the real ``TokenBatchSampler`` and ``collate``; each measured step is forward + backward +
clip + fused AdamW, exactly what ``mt train`` runs. Prints a table and appends it to
``bench/results.md`` with the date and machine.

    python bench/train_speed.py                       # CPU, 2 threads, fp32 + bf16
    python bench/train_speed.py --device cuda         # bf16 on the GPU, with MFU
    python bench/train_speed.py --models target small --precisions bf16 --steps 5

``target`` is the acceptance configuration (3+3 layers, d256, 8 heads, FFN 512, tied
8k joint vocabulary, 4096-token batches).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mt.config import PRESETS, ModelConfig
from mt.data.batching import TokenBatchSampler, collate
from mt.model import Transformer
from mt.train.metrics import hardware_peak_tflops
from mt.runtime import tune_malloc
from mt.train.trainer import build_optimizer, optimizer_update

MODELS = {
    "target": dict(d_model=256, n_heads=8, enc_layers=3, dec_layers=3, ffn_dim=512),
    "tiny": PRESETS["tiny"],
    "small": PRESETS["small"],
    "base": PRESETS["base"],
}


def synthetic_batches(n_batches: int, max_tokens: int, vocab: int, seed: int = 0) -> list:
    """Token-budget batches of random ids with Multi30k-like sentence lengths."""
    rng = np.random.default_rng(seed)
    n = max(4000, n_batches * max_tokens // 12)
    src_len = np.clip(rng.normal(17, 6, n), 3, 60).astype(np.int64)
    tgt_len = np.clip(src_len * 0.9 + rng.normal(0, 2, n), 3, 60).astype(np.int64)
    sampler = TokenBatchSampler(src_len, tgt_len, max_tokens, seed=seed)
    out = []
    for idx in sampler.batches()[:n_batches]:
        src = [rng.integers(4, vocab, src_len[i]) for i in idx]
        tgt = [rng.integers(4, vocab, tgt_len[i]) for i in idx]
        out.append(collate(src, tgt, 0, 2, 3))
    return out


def bench_one(name: str, precision: str, device: torch.device, steps: int, max_tokens: int, vocab: int) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(preset=None, vocab_size=vocab, **MODELS[name])
    model = Transformer(cfg).to(device).train()

    class TC:  # the optimizer fields of TrainConfig
        lr, betas, eps, weight_decay = 5e-4, (0.9, 0.98), 1e-9, 0.0

    opt = build_optimizer(model, TC, device)
    bf16 = precision == "bf16"
    warmup = 2
    batches = synthetic_batches(steps + warmup, max_tokens, vocab)

    def step(b):
        optimizer_update(model, model, opt, [b], b.n_tgt_tokens, 0.1, 0, device, bf16, 1.0)

    # CUDA: one untimed pass over the very batches that are timed, so the caching allocator
    # and kernel choices have seen every shape (as after a real run's first epoch); the
    # first pass runs several times slower and would be measuring start-up, not training
    for b in batches[warmup:] if device.type == "cuda" else batches[:warmup]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches[warmup:]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0  # all threads; ≈ threads × wall when the cores are ours
    measured = batches[warmup:]
    n_tgt = sum(b.n_tgt_tokens for b in measured)
    n_src = sum(b.n_src_tokens for b in measured)
    sents = sum(len(b.src) for b in measured)
    peak, source = hardware_peak_tflops(device, bf16, None)
    flops = model.flops_per_token(n_src / sents, n_tgt / sents)
    tgt_s = n_tgt / dt
    return {
        "model": name, "params_M": model.num_parameters() / 1e6, "precision": precision,
        "ms_step": 1000 * dt / len(measured), "cpu_ms_step": 1000 * cpu / len(measured), "tgt_tok_s": tgt_s, "tok_s": (n_src + n_tgt) / dt,
        "mfu": tgt_s * flops / (peak * 1e12) if peak else None, "peak": peak, "peak_source": source,
        "tgt_per_batch": n_tgt / len(measured),
    }  # fmt: skip


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["target", "small", "base"], choices=list(MODELS))
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"], help="default: fp32 bf16 on CPU, bf16 on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="measured steps per row (base uses half)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--note", default="", help="appended to the results entry (e.g. 'CPU shared with other jobs')")
    p.add_argument("--no-append", action="store_true", help="do not write bench/results.md")
    args = p.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cpu":
        tune_malloc()  # as the CLI does
        torch.set_num_threads(args.threads)
    precisions = args.precisions or (["bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    rows = []
    for name in args.models:
        for prec in precisions:
            steps = max(2, args.steps // 2) if name == "base" and device.type == "cpu" else args.steps
            r = bench_one(name, prec, device, steps, args.max_tokens, args.vocab)
            rows.append(r)
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
            print(f"{name:7s} {prec:5s} {r['params_M']:6.1f}M {r['ms_step']:8.0f} ms/step ({r['cpu_ms_step']:.0f} CPU ms) "
                  f"{r['tgt_tok_s']:9.0f} tgt tok/s {r['tok_s']:9.0f} src+tgt tok/s  MFU {mfu}", flush=True)  # fmt: skip

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    lines = [
        f"\n## Training step throughput — {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"Machine: {dev_name} ({device.type}). Batches: {args.max_tokens} tokens (fairseq rule), vocab {args.vocab}, "
        f"Multi30k-like lengths, fused AdamW, label smoothing 0.1. MFU peak: {rows[0]['peak_source'] if rows else ''}"
        f"{' — ' + args.note if args.note else ''}",
        "",
        "| model | params | precision | threads | ms/step (wall) | CPU ms/step | tgt tokens/batch | target tok/s | src+tgt tok/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak']:.2f} TF" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {r['model']} | {r['params_M']:.1f}M | {r['precision']} | {threads} | {r['ms_step']:.0f} | {r['cpu_ms_step']:.0f} | {r['tgt_per_batch']:.0f} "
            f"| {r['tgt_tok_s']:.0f} | {r['tok_s']:.0f} | {mfu} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        path = Path(__file__).resolve().parent / "results.md"
        if not path.exists():
            path.write_text("# Benchmark results\n", encoding="utf-8")
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
