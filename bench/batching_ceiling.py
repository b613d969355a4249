"""The most a batching server can gain over one-at-a-time requests, measured without a server.

``bench/serve_load.py`` compares C concurrent clients with sending the same requests one at a
time. With ``mt serve``'s default of W decoding processes × 1 torch thread, one-at-a-time
requests run on one core as single-sentence searches, and at C concurrent clients each
process decodes batches of about C / W sentences. So even a server with no HTTP, queueing or
idle time could reach at most

    ceiling = W × (time per sentence decoded alone) / (time per sentence in batches of C / W)

This script measures both times in one process on one torch thread, on the same sentences,
alternating the two modes (and reversing their order every other round, as the VM's speed
drifts), and prints the ceiling for each round and for the means.

    python bench/batching_ceiling.py --model runs/multi30k_de_en_cpu45/model_avg \\
        --input $MT_DATA_DIR/multi30k/test2016.de --batch 16 --workers 2
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--input", required=True, help="source sentences, one per line")
    p.add_argument("--sentences", type=int, default=400, help="random sentences per mode and round (default 400)")
    p.add_argument("--batch", type=int, default=16, help="sentences per batch: the server's C / W (default 16)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes W, one core each (default 2)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.sentences, args.batch, args.workers, args.beam, args.rounds) < 1:
        p.error("--sentences, --batch, --workers, --beam and --rounds must be >= 1")
    try:
        lines = [s for s in Path(args.input).read_text(encoding="utf-8").splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError) as e:
        p.error(f"--input {args.input}: {e}")
    if not Path(args.model).is_dir():
        p.error(f"--model {args.model}: not a model directory")
    if not lines:
        p.error(f"--input {args.input}: no non-empty lines")

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of mt serve's decoding processes uses
    try:
        return _measure(args, lines)
    finally:
        torch.set_num_threads(threads)


def _measure(args: argparse.Namespace, lines: list[str]) -> int:
    from mt.decode.translator import Translator

    # as each of mt serve's decoding processes decodes: the model directory's stored defaults
    # (packed on CPU) in one worker, with --beam on top
    translator = Translator.load(args.model, workers=1, device="cpu")
    opts = translator.options.replace(beam=args.beam, n_best=min(translator.options.n_best, args.beam))
    dm = translator.model
    print(f"decoding: {dm.describe()}; padding: rows x{dm.padding.rows} ({dm.padding.finding})", flush=True)
    rng = random.Random(args.seed)
    texts = [rng.choice(lines) for _ in range(args.sentences)]
    translator.translate_batch(texts[: 2 * args.batch], opts)  # warm-up

    def run(mode: str) -> float:
        start = time.perf_counter()
        if mode == "alone":
            for t in texts:
                translator.translate_batch([t], opts)
        else:
            for i in range(0, len(texts), args.batch):
                translator.translate_batch(texts[i : i + args.batch], opts)
        return (time.perf_counter() - start) / len(texts) * 1000

    times: dict[str, list[float]] = {"alone": [], "batched": []}
    for r in range(args.rounds):
        for mode in ("alone", "batched") if r % 2 == 0 else ("batched", "alone"):
            times[mode].append(run(mode))
        a, b = times["alone"][-1], times["batched"][-1]
        print(f"round {r + 1}: alone {a:.2f} ms/sentence, batches of {args.batch} {b:.2f} ms/sentence, "
              f"ceiling {args.workers * a / b:.2f}x", flush=True)
    a = sum(times["alone"]) / args.rounds
    b = sum(times["batched"]) / args.rounds
    print(f"\nmean: alone {a:.2f} ms/sentence, batches of {args.batch} {b:.2f} ms/sentence (1 thread, beam "
          f"{args.beam}); ceiling of the throughput ratio with {args.workers} decoding processes: "
          f"{args.workers * a / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
