"""Decoding's batch budget (``--max-tokens``) against its speed and peak memory, same run.

Beam search holds, per batch, a self-attention cache of ``(rows, 2, heads, steps, d_head)``
per layer and the step's ``(rows, vocab)`` scores, with ``rows = sentences x beam``; the
token budget counts padded *source* tokens, so at beam 5 a 4,096-token batch of 15-token
sentences is ~270 sentences and ~1,350 rows, and ``workers`` batches are decoded at once.
This script decodes the same sentences with each budget in a fresh child process (so each
peak RSS is its own, read from ``wait4``), alternating the budgets round by round so that
load drifts hit all alike, checks that every budget wrote the same text (decoding is
batch-invariant), and prints sent/s and peak MiB with the CPU's name::

    python bench/decode_memory.py --model runs/bt_memory_full_1204/bounded/round0/forward/model_best \\
        --src $MT_DATA_DIR/multi30k/val.de --budgets 4096,2048,1024,512 --repeats 2

Model loading and the ``auto`` precision probe are outside the timed part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(args: argparse.Namespace) -> None:
    """One budget: load, decode, write the outputs and print seconds as JSON."""
    from mt.decode.translator import Translator
    from mt.runtime import tune_malloc

    tune_malloc()  # as the mt CLI does
    lines = Path(args.src).read_text(encoding="utf-8").splitlines()[: args.lines]
    changes = {"beam": args.beam, "n_best": 1, "sampling": "none", "dtype": args.dtype}
    changes.update((k, yaml.safe_load(v)) for k, v in (o.split("=", 1) for o in args.opt))
    tr = Translator.load(args.model, threads=args.threads, **changes, max_tokens=args.child)
    t0 = time.perf_counter()
    hyps = [h[0].text for h in tr.translate_batch(lines, tr.options)]
    seconds = time.perf_counter() - t0
    Path(args.out).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    print(json.dumps({"seconds": seconds, "sentences": len(lines), "dtype": tr.model.dtype}))


def run_budget(budget: int, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(budget), "--out", str(out), "--model", args.model, "--src", args.src,
           "--lines", str(args.lines), "--beam", str(args.beam), "--threads", str(args.threads), "--dtype", args.dtype]  # fmt: skip
    cmd += [w for o in args.opt for w in ("--opt", o)]
    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"decode_memory: the child for --max-tokens {budget} failed")
    r = json.loads(stdout.strip().splitlines()[-1])
    return {**r, "peak_mib": usage.ru_maxrss / 1024, "sent_s": r["sentences"] / r["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a model directory")
    p.add_argument("--src", required=True, help="source text, one sentence per line")
    p.add_argument("--lines", type=int, default=1000, help="first N lines of --src")
    p.add_argument("--budgets", default="4096,2048,1024,512", help="comma-separated --max-tokens values; the first is the yardstick")
    p.add_argument("--repeats", type=int, default=2, help="rounds over all budgets")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch threads in all (mt's default workers share them)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--opt", action="append", default=[], help="another decoding setting, KEY=VALUE (e.g. sampling=topk)")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE in every child's environment "
                   "(e.g. ONEDNN_PRIMITIVE_CACHE_CAPACITY=0, as a training process bounds it)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args)
    from mt.runtime import cpu_name

    budgets = [int(b) for b in args.budgets.split(",")]
    runs: dict[int, list[dict]] = {b: [] for b in budgets}
    # beam search is batch-invariant: every budget must write the same text; sampling draws
    # one generator per batch, so there only the rounds of one budget must agree
    sampling = any(o.split("=", 1)[0] == "sampling" and o.split("=", 1)[1] != "none" for o in args.opt)
    texts: dict[int, set[bytes]] = {b: set() for b in budgets}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for b in budgets:
                out = Path(tmp) / f"{b}.{r}.txt"
                runs[b].append(run_budget(b, args, out))
                texts[b].add(out.read_bytes())
                print(f"round {r + 1}, --max-tokens {b}: {runs[b][-1]['sent_s']:.1f} sent/s, peak {runs[b][-1]['peak_mib']:.0f} MiB", flush=True)
    same = all(len(t) == 1 for t in texts.values()) and (sampling or len(set().union(*texts.values())) == 1)
    first = runs[budgets[0]]
    extra = "".join(f", {o}" for o in args.opt + args.env)
    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores; {first[0]['sentences']} sentences of {args.src}, beam {args.beam}{extra}, "
          f"{args.threads} threads, dtype {args.dtype} ({first[0]['dtype']}); outputs "
          f"{'identical' if same else 'DIFFER'}{' within each budget (sampling)' if sampling else ''}\n")  # fmt: skip
    print("| --max-tokens | sent/s (median) | × first | peak RSS MiB (max) | × first |\n|---:|---:|---:|---:|---:|")
    base_s = statistics.median(x["sent_s"] for x in first)
    base_m = max(x["peak_mib"] for x in first)
    for b in budgets:
        s, m = statistics.median(x["sent_s"] for x in runs[b]), max(x["peak_mib"] for x in runs[b])
        print(f"| {b:,} | {s:.1f} | {s / base_s:.2f} | {m:,.0f} | {m / base_m:.2f} |")
    if not same:
        sys.exit("decode_memory: the outputs differ (see above)")


if __name__ == "__main__":
    main()
