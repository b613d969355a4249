"""Training-step throughput of the real trainer update (``mt.train.trainer.optimizer_update``).

Synthetic batches with Multi30k-like lengths (source ~17, target ~15 subwords) are cut by
the real ``TokenBatchSampler`` and ``collate``; each measured step is forward + backward +
clip + fused AdamW, exactly what ``mt train`` runs. Prints a table and appends it to
``bench/results.md`` with the date and machine.

    python bench/train_speed.py                       # CPU, 2 threads, fp32 + bf16
    python bench/train_speed.py --device cuda         # bf16 on the GPU, with MFU
    python bench/train_speed.py --models target small --precisions bf16 --steps 5
    python bench/train_speed.py --models target --precisions bf16 --against 73117cf --rounds 5

``--against REV`` measures the ``mt`` of git revision REV (checked out in a temporary
worktree) beside this tree's, in alternating fresh processes, and prints each one's median
and the ratio: a speed claim against an earlier commit, made in one run on one machine.
``--compile`` adds this tree with the model under ``torch.compile`` (``train.compile``).

``target`` is the acceptance configuration (3+3 layers, d256, 8 heads, FFN 512, tied
8k joint vocabulary, 4096-token batches).
"""

from __future__ import annotations

import sys

if "--mt-root" in sys.argv:  # a child process measuring another checkout's mt (--against)
    sys.path.insert(0, sys.argv[sys.argv.index("--mt-root") + 1])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mt  # noqa: E402
from mt.config import PRESETS, ModelConfig  # noqa: E402
from mt.data.batching import TokenBatchSampler, collate  # noqa: E402
from mt.model import Transformer  # noqa: E402
from mt.runtime import bound_kernel_caches, cpu_name, tune_malloc  # noqa: E402
from mt.train.metrics import hardware_peak_tflops  # noqa: E402
from mt.train.trainer import build_optimizer, optimizer_update  # noqa: E402

MODELS = {
    "target": dict(d_model=256, n_heads=8, enc_layers=3, dec_layers=3, ffn_dim=512),
    "tiny": PRESETS["tiny"],
    "small": PRESETS["small"],
    "base": PRESETS["base"],
}
REPO = Path(__file__).resolve().parents[1]


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


def bench_one(
    name: str, precision: str, device: torch.device, steps: int, max_tokens: int, vocab: int, compile: bool = False
) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(preset=None, vocab_size=vocab, **MODELS[name])
    model = Transformer(cfg).to(device).train()
    net = torch.compile(model) if compile else model

    class TC:  # the optimizer fields of TrainConfig
        lr, betas, eps, weight_decay = 5e-4, (0.9, 0.98), 1e-9, 0.0

    opt = build_optimizer(model, TC, device)
    bf16 = precision == "bf16"
    # compiled: shapes vary per batch, so the first few steps recompile (dynamic shapes)
    warmup = 4 if compile else 2
    batches = synthetic_batches(steps + warmup, max_tokens, vocab)

    def step(b):
        optimizer_update(model, net, opt, [b], b.n_tgt_tokens, 0.1, 0, device, bf16, 1.0)

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
    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def measure(args: argparse.Namespace, device: torch.device, compile: bool = False, quiet: bool = False) -> list[dict]:
    """Every (model, precision) row of this process's ``mt``."""
    precisions = args.precisions or (["bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    rows = []
    for name in args.models:
        for prec in precisions:
            steps = max(2, args.steps // 2) if name == "base" and device.type == "cpu" else args.steps
            r = bench_one(name, prec, device, steps, args.max_tokens, args.vocab, compile)
            rows.append(r)
            if not quiet:
                mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
                print(f"{name:7s} {prec:5s} {r['params_M']:6.1f}M {r['ms_step']:8.0f} ms/step ({r['cpu_ms_step']:.0f} CPU ms) "
                      f"{r['tgt_tok_s']:9.0f} tgt tok/s {r['tok_s']:9.0f} src+tgt tok/s  MFU {mfu}", flush=True)  # fmt: skip
    return rows


# --------------------------------------------------------------------------- one tree against another


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached git worktree of ``rev`` in a temporary directory, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="mt-train-speed-"))
    path = tmp / "tree"
    done = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"train_speed: --against {rev}: git worktree failed: {done.stderr.strip().splitlines()[-1]}")
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
        tmp.rmdir()


def run_child(root: Path, args: argparse.Namespace, compile: bool) -> list[dict]:
    """This script in a fresh process importing ``mt`` from ``root``; its rows."""
    cmd = [sys.executable, __file__, "--child", "--mt-root", str(root), "--device", args.device, "--threads", str(args.threads),
           "--steps", str(args.steps), "--max-tokens", str(args.max_tokens), "--vocab", str(args.vocab), "--models", *args.models]  # fmt: skip
    if args.precisions:
        cmd += ["--precisions", *args.precisions]
    if compile:
        cmd.append("--compile")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"train_speed: the run of {root} failed (exit {done.returncode}):\n{tail}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def compare(args: argparse.Namespace) -> str:
    """``--against``: alternate fresh processes of REV's and this tree's mt; a markdown table."""
    with worktree(args.against) as base:
        systems = [(f"`{args.against}`", base, False), ("this tree", REPO, False)]
        if args.compile:
            systems.append(("this tree, `torch.compile`", REPO, True))
        runs: dict[str, list[list[dict]]] = {label: [] for label, _, _ in systems}
        for r in range(args.rounds):
            for label, root, comp in systems:
                rows = run_child(root, args, comp)
                runs[label].append(rows)
                print(f"round {r + 1}/{args.rounds} {label}: " + ", ".join(f"{x['model']} {x['precision']} {x['tgt_tok_s']:.0f} tgt tok/s" for x in rows), flush=True)
    header = "| model | precision | system | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median tgt tok/s | ms/step | vs base |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    first = systems[0][0]
    for i, row in enumerate(runs[first][0]):
        base_median = statistics.median(rnd[i]["tgt_tok_s"] for rnd in runs[first])
        for label, _, _ in systems:
            vals = [rnd[i]["tgt_tok_s"] for rnd in runs[label]]
            median = statistics.median(vals)
            ms = statistics.median(rnd[i]["ms_step"] for rnd in runs[label])
            cells = " | ".join(f"{v:,.0f}" for v in vals)
            lines.append(f"| {row['model']} | {row['precision']} | {label} | {cells} | **{median:,.0f}** | {ms:.0f} | {median / base_median:.2f}× |")
    return "\n".join(lines)


def single_table(rows: list[dict], device: torch.device) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    lines = [
        "| model | params | precision | threads | ms/step (wall) | CPU ms/step | tgt tokens/batch | target tok/s | src+tgt tok/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak']:.2f} TF" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {r['model']} | {r['params_M']:.1f}M | {r['precision']} | {threads} | {r['ms_step']:.0f} | {r['cpu_ms_step']:.0f} | {r['tgt_per_batch']:.0f} "
            f"| {r['tgt_tok_s']:.0f} | {r['tok_s']:.0f} | {mfu} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["target", "small", "base"], choices=list(MODELS))
    p.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"], help="default: fp32 bf16 on CPU, bf16 on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="measured steps per row (base uses half)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--against", metavar="REV", help="also measure git revision REV's mt, alternating fresh processes")
    p.add_argument("--rounds", type=int, default=3, help="with --against: processes per system (medians are reported)")
    p.add_argument("--compile", action="store_true", help="with --against: add this tree under torch.compile")
    p.add_argument("--note", default="", help="appended to the results entry (e.g. 'CPU shared with other jobs')")
    p.add_argument("--no-append", action="store_true", help="do not write bench/results.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # print rows as JSON lines
    p.add_argument("--mt-root", help=argparse.SUPPRESS)  # read before the imports, see the top
    args = p.parse_args()
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be >= 1")
    if args.compile and not (args.against or args.child):
        p.error("--compile: give it with --against REV")

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cpu":  # as `mt train` does, before the first matmul
        tune_malloc()
        bound_kernel_caches()
        torch.set_num_threads(args.threads)
    if args.child:
        if args.mt_root and not Path(mt.__file__).resolve().is_relative_to(Path(args.mt_root).resolve()):
            raise SystemExit(f"train_speed: imported mt from {mt.__file__}, not from {args.mt_root}")
        for r in measure(args, device, compile=args.compile, quiet=True):
            print(json.dumps({**r, "mt": mt.__file__}), flush=True)
        return

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    what = f"Batches: {args.max_tokens} tokens (fairseq rule), vocab {args.vocab}, Multi30k-like lengths, fused AdamW, label smoothing 0.1."
    if args.against:
        table = compare(args)
        title = f"Training step throughput against `{args.against}` — {datetime.datetime.now().isoformat(timespec='minutes')}"
        intro = f"Machine: {dev_name} ({device.type}). {what} {args.rounds} alternating fresh processes per system, {args.steps} measured steps each."
    else:
        rows = measure(args, device)
        table = single_table(rows, device)
        title = f"Training step throughput — {datetime.datetime.now().isoformat(timespec='minutes')}"
        intro = f"Machine: {dev_name} ({device.type}). {what} MFU peak: {rows[0]['peak_source'] if rows else ''}"
    text = f"\n## {title}\n{intro}{' — ' + args.note if args.note else ''}\n\n{table}\n"
    print(text)
    if not args.no_append:
        path = Path(__file__).resolve().parent / "results.md"
        if not path.exists():
            path.write_text("# Benchmark results\n", encoding="utf-8")
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
