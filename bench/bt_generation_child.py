"""Back-translation generation in the training process vs in a child process, same run.

A back-translation process trains, so it turns oneDNN's and ideep's kernel caches off
(``mt.runtime.bound_kernel_caches``). Generating in that process (mt before ``26bee69``)
re-creates beam search's kernels at every shape; ``run_generation_in_child`` decodes in a
spawned child with the caches on again. This script times both on the same model, input and
settings, alternating them (A B A B ...) so that load drifts hit both alike, and prints
sentences/s and the ratio child / in-process, with the CPU's name::

    python bench/bt_generation_child.py --model runs/ablations/m30k_bt_r0/round0/reverse/model_best \\
        --input runs/ablations/m30k_bt_r0/mono/mono_tgt.txt --lines 1000 --repeats 2 [--dtype bf16]

The outputs of both paths must be identical (checked), so only speed differs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from mt.backtranslate import generate as gen
from mt.config import bt_generation_default
from mt.runtime import KERNEL_CACHES, bound_kernel_caches, cpu_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a model directory (the reverse model)")
    p.add_argument("--input", required=True, help="monolingual text, one sentence per line")
    p.add_argument("--lines", type=int, default=2000, help="first N lines of --input")
    p.add_argument("--repeats", type=int, default=2, help="A/B pairs")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"], help="decoding precision (auto probes the CPU)")
    args = p.parse_args()
    if any(name in os.environ for name in KERNEL_CACHES):
        sys.exit(f"bt_generation_child: unset {', '.join(KERNEL_CACHES)} first: this compares mt's own bound")
    bound_kernel_caches()  # what the back-translation process does before its first matmul
    opts = bt_generation_default().replace(sampling="none", beam=args.beam, n_best=1, device="cpu", dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = Path(args.input).read_text(encoding="utf-8").splitlines()[: args.lines]
        (root / "in.txt").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        speed: dict[str, list[float]] = {"in-process": [], "child": []}
        outputs = set()
        for r in range(args.repeats):
            here, merged = gen.run_generation(Path(args.model), root / "in.txt", root / f"here{r}", opts, 5000,
                                              threads=args.threads, progress=False)  # fmt: skip
            speed["in-process"].append(here.sentences_per_s)
            outputs.add(merged.read_bytes())
            child, merged, _ = gen.run_generation_in_child(Path(args.model), root / "in.txt", root / f"child{r}", opts,
                                                           5000, threads=args.threads, progress=False)  # fmt: skip
            speed["child"].append(child.sentences_per_s)
            outputs.add(merged.read_bytes())
            print(f"pair {r + 1}: in-process {speed['in-process'][-1]:.1f} sent/s, child {speed['child'][-1]:.1f} sent/s", flush=True)
    if len(outputs) != 1:
        sys.exit("bt_generation_child: the two paths wrote different text")
    med = {k: statistics.median(v) for k, v in speed.items()}
    print(f"CPU: {cpu_name()}; {len(lines)} lines, beam {args.beam}, {args.threads} thread(s), dtype {args.dtype}; outputs identical")
    print(f"median sent/s: in-process (caches bounded) {med['in-process']:.1f}, child (caches on) {med['child']:.1f}; "
          f"child / in-process = {med['child'] / med['in-process']:.2f}x")


if __name__ == "__main__":
    main()
