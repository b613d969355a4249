"""The most a batching server can gain, measured without a server: against one-at-a-time
requests, and against offline ``mt translate`` of the same sentences.

With ``mt serve``'s default of W decoding processes × 1 torch thread, one-at-a-time requests
run on one core as single-sentence searches, and at C concurrent clients each process decodes
batches of about C / W sentences in arrival order (random lengths). So even a server with no
HTTP, queueing or idle time could reach at most

    W × (1 / time per sentence in batches of C / W)         sentences/s, i.e.
    ceiling (vs one at a time) = W × (time alone) / (time in batches of C / W)
    ceiling (vs offline)       = W × (offline wall time per sentence) / (time in batches of C / W)

where *offline* is what ``mt translate --threads W`` runs: one call over all the sentences,
length-sorted into the stored ``max_tokens`` batches, W worker threads. The first two times are
measured on one torch thread, the offline one on W; the modes alternate (their order reversed
every other round, as the VM's speed drifts), and the ceilings are printed per round and for the
means. ``--batch`` takes several sizes (e.g. ``8,16,32``: C = 16, 32, 64 clients at W = 2).

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
    p.add_argument("--batch", default="16", help="sentences per batch, the server's C / W; comma-separated (default 16)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes W, one core each (default 2)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        args.batch = [int(b) for b in args.batch.split(",")]
    except ValueError:
        p.error(f"--batch {args.batch}: comma-separated integers")
    if min(args.sentences, *args.batch, args.workers, args.beam, args.rounds) < 1:
        p.error("--sentences, --batch, --workers, --beam and --rounds must be >= 1")
    try:
        lines = [s for s in Path(args.input).read_text(encoding="utf-8").splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError) as e:
        p.error(f"--input {args.input}: {e}")
    from mt.errors import MissingFileError
    from mt.modelio import check_model_dir

    try:
        check_model_dir(args.model)
    except MissingFileError as e:
        p.error(f"--model: {e}")
    if not lines:
        p.error(f"--input {args.input}: no non-empty lines")

    import torch

    threads = torch.get_num_threads()
    try:
        return _measure(args, lines)
    finally:
        torch.set_num_threads(threads)


def _measure(args: argparse.Namespace, lines: list[str]) -> int:
    import torch

    from mt.decode.translator import Translator

    # as each of mt serve's decoding processes decodes: the model directory's stored defaults
    # (packed on CPU) in one worker on one thread, with --beam on top; offline as `mt translate
    # --threads W` does: W workers
    one = Translator.load(args.model, workers=1, device="cpu")
    offline = Translator.load(args.model, workers=args.workers, device="cpu")
    opts = one.options.replace(beam=args.beam, n_best=min(one.options.n_best, args.beam))
    print(f"decoding: {one.model.describe()}; padding: rows x{one.model.padding.rows} ({one.model.padding.finding})",
          flush=True)  # fmt: skip
    rng = random.Random(args.seed)
    texts = [rng.choice(lines) for _ in range(args.sentences)]
    torch.set_num_threads(1)
    one.translate_batch(texts[: 2 * max(args.batch)], opts)  # warm-up

    def run(mode: str) -> float:
        """Milliseconds per sentence (wall) of ``mode``: alone, offline or a batch size."""
        torch.set_num_threads(args.workers if mode == "offline" else 1)
        start = time.perf_counter()
        if mode == "alone":
            for t in texts:
                one.translate_batch([t], opts)
        elif mode == "offline":
            offline.translate_batch(texts, opts)
        else:
            for i in range(0, len(texts), int(mode)):
                one.translate_batch(texts[i : i + int(mode)], opts)
        return (time.perf_counter() - start) / len(texts) * 1000

    modes = ["alone", "offline"] + [str(b) for b in args.batch]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            times[mode].append(run(mode))
        _report(f"round {r + 1}", {m: t[-1] for m, t in times.items()}, args.workers)
    _report("\nmean", {m: sum(t) / args.rounds for m, t in times.items()}, args.workers)
    print(f"(beam {args.beam}; batches and alone on 1 thread, offline on {args.workers}; ceilings for "
          f"{args.workers} decoding processes)")
    return 0


def _report(title: str, ms: dict[str, float], workers: int) -> None:
    """One line per batch size: its ms/sentence and its two ceilings."""
    print(f"{title}: alone {ms['alone']:.2f} ms/sentence, offline {ms['offline']:.2f} ms/sentence", flush=True)
    for mode, b in ms.items():
        if mode not in ("alone", "offline"):
            print(f"  batches of {mode} {b:.2f} ms/sentence, ceiling {workers * ms['alone'] / b:.2f}x one at a time, "
                  f"{100 * workers * ms['offline'] / b:.0f}% of offline", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
