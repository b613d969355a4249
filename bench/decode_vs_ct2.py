"""A trained mt model against its CTranslate2 export on a real test set: speed and BLEU.

`bench/decode_speed.py` times identical work on random weights; this times what a user gets.
The model is exported with `mt export` (``mt.export.export_model``, float32 and int8), the
first ``-n`` lines of ``--src`` are sorted by source length and cut into batches of
``--batch`` sentences, and each system translates the same batches from raw text to
detokenised text (mt: ``Translator.translate_batch``; CTranslate2: mt's SentencePiece
pieces in, pieces out, joined by mt's own ``decode_target``), ``--workers`` batches at once
on ``--threads / --workers`` threads each (CTranslate2: ``inter_threads``). CTranslate2 gets
the search keywords the export writes (beam, length penalty, minimum length, suppressed
tokens) and, per batch, mt's maximum output length of its longest source.

    python bench/decode_vs_ct2.py --model runs/ablations/wu800_lr2x/final_model \\
        --src $MT_DATA_DIR/multi30k/test2016.de --ref $MT_DATA_DIR/multi30k/test2016.en

Prints sentences/s, the ratio to CTranslate2 int8 (its fastest CPU mode) and sacreBLEU /
chrF of every system and search, and the CPU. Where ``--dtype auto`` (mt's default) chose
bf16, mt fp32 is measured beside it. ``mt --engine ctranslate2`` (CTranslate2's ``auto`` type
and float32) is mt's own pipeline around CTranslate2's search: its distance from the bare
CTranslate2 rows is what mt's text handling and batching add.

``--compile`` adds two fp32 systems on plain ``F.linear`` weights: eager, and the same with
each decoder layer's three sublayers (norm, attention or feed-forward, residual) compiled by
``torch.compile`` (inductor, dynamic shapes) -- the fusion of the decoder step's small ops
that CTranslate2 gets from its C++ kernels. Inductor cannot lower oneDNN's packed linear op,
so the compiled system starts from unpacked weights. Its first pass over every batch compiles
(the seconds are printed) and is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mt.decode.lengths import max_output_len  # noqa: E402
from mt.decode.translator import Translator, run_parallel  # noqa: E402
from mt.export import export_model  # noqa: E402
from mt.modelio import check_model_dir  # noqa: E402
from mt.runtime import cpu_name, tune_malloc  # noqa: E402

Batches = list[list[str]]
System = Callable[[list[str], int], list[str]]  # (batch of sentences, beam) -> translations


def mt_system(t: Translator, name: str = "") -> tuple[str, System]:
    """``t`` translating one batch per call (its own ``workers`` is 1; ``run_parallel`` runs several)."""

    def run(batch: list[str], beam: int) -> list[str]:
        return [h[0].text for h in t.translate_batch(batch, t.options.replace(beam=beam, n_best=1))]

    if not name and t.options.engine == "ctranslate2":
        name = f"mt --engine ctranslate2 ({t.model.dtype})"
    name = name or ("mt int8" if t.model.int8 else f"mt {t.model.describe()} (default)")
    return name, run


def compiled_system(model: Path, threads: int) -> tuple[str, System]:
    """mt fp32 on unpacked weights with every decoder layer's sublayers compiled (``--compile``)."""
    t = Translator.load(model, workers=1, threads=threads, dtype="fp32", pack=False)
    for layer in t.model.net.decoder_layers:
        for block in ("self_block", "cross_block", "ffn_block"):
            setattr(layer, block, torch.compile(getattr(layer, block), dynamic=True))
    return mt_system(t, "mt fp32, torch.compile")


def ct2_system(model: Path, ref: Translator, out: Path, quantization: str, threads: int,
               workers: int) -> tuple[str, System]:
    """A CTranslate2 translator of ``model``'s export, with ``ref``'s (mt's) text pipeline and
    length rule; each call posts one batch asynchronously so ``workers`` batches run at once,
    as mt's do."""
    import ctranslate2

    export_model(model, out, "ctranslate2", quantization=quantization, force=True)
    keywords = json.loads((out / "mt_preprocessing.json").read_text())["ctranslate2"]["translate_batch"]
    text, opts, cfg = ref.text, ref.options, ref.model.cfg
    tr = ctranslate2.Translator(str(out), device="cpu", inter_threads=workers, intra_threads=threads // workers)
    vocab = text.source_vocabulary()

    def run(batch: list[str], beam: int) -> list[str]:
        ids = text.encode_source(batch)
        pieces = [[vocab[i] for i in s] for s in ids]
        limit = max(max_output_len(len(s), opts.max_len_a, opts.max_len_b, cfg.max_positions) for s in ids)
        kw = {**keywords, "beam_size": beam, "num_hypotheses": 1}
        results = tr.translate_batch(pieces, max_decoding_length=limit, max_batch_size=len(batch), **kw)
        return text.decode_target([[text.piece_to_id(p) for p in r.hypotheses[0]] for r in results])

    return f"CTranslate2 {quantization}", run


def length_sorted_batches(text: Any, lines: list[str], size: int) -> list[list[int]]:
    """Line numbers sorted by source subwords (``text``: the model's ``TextPipeline``), longest
    first, in batches of ``size``."""
    lengths = [len(s) for s in text.encode_source(lines)]
    order = sorted(range(len(lines)), key=lambda i: -lengths[i])
    return [order[j : j + size] for j in range(0, len(order), size)]


def timed_pass(run: System, batches: Batches, beam: int, workers: int, repeats: int,
               warm_all: bool = False) -> tuple[float, list[str]]:
    """Best seconds over ``repeats`` full passes (after a warm-up on two batches, or on every
    batch one at a time with ``warm_all``: a compiled system meets every shape once) and the
    translations, in batch order."""
    out: list[list[str]] = [[] for _ in batches]

    def one(j: int) -> int:
        out[j] = run(batches[j], beam)
        return len(batches[j])

    if warm_all:
        t0 = time.perf_counter()
        run_parallel(one, len(batches), 1)
        print(f"warm-up (compiling) at beam {beam}: {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        run_parallel(one, min(2, len(batches)), workers)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_parallel(one, len(batches), workers)
        best = min(best, time.perf_counter() - t0)
    return best, [s for b in out for s in b]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an mt model directory")
    p.add_argument("--src", type=Path, required=True, help="source sentences, one per line")
    p.add_argument("--ref", type=Path, required=True, help="references, line-aligned with --src")
    p.add_argument("-n", type=int, default=1000, help="first N lines")
    p.add_argument("--beams", default="5,1")
    p.add_argument("--batch", type=int, default=32, help="sentences per batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="batches at once (mt translate's default on 2 cores)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per system and beam (best is reported)")
    p.add_argument("--compile", action="store_true", help="add fp32 unpacked, eager and torch.compile'd")
    args = p.parse_args(argv)
    try:
        check_model_dir(args.model)
    except FileNotFoundError as e:
        p.error(f"--model: {e}")
    for flag, path in (("--src", args.src), ("--ref", args.ref)):
        if not path.is_file():
            p.error(f"{flag}: no such file: {path}")
    if min(args.n, args.batch, args.workers, args.repeats) < 1 or args.threads % args.workers:
        p.error("-n, --batch, --workers and --repeats must be >= 1, and --workers must divide --threads")
    try:
        beams = [int(b) for b in args.beams.split(",")]
    except ValueError:
        p.error(f"--beams {args.beams}: give comma-separated integers, e.g. 5,1")
    if min(beams) < 1:
        p.error(f"--beams {args.beams}: every beam must be >= 1")
    import sacrebleu

    tune_malloc()  # as every `mt` command does (mt/cli.py): mt is timed as users run it
    src = args.src.read_text(encoding="utf-8").splitlines()[: args.n]
    ref = args.ref.read_text(encoding="utf-8").splitlines()[: args.n]
    if not any(line.strip() for line in src):
        p.error(f"--src: {args.src} has no sentences")
    if len(ref) != len(src):
        p.error(f"--ref: {len(ref)} lines for {len(src)} in --src")
    default = Translator.load(args.model, workers=1, threads=args.threads, dtype="auto")  # auto: mt's default
    int8 = Translator.load(args.model, workers=1, threads=args.threads, int8=True)
    numbers = length_sorted_batches(default.text, src, args.batch)
    batches = [[src[i] for i in b] for b in numbers]
    batch_refs = [ref[i] for b in numbers for i in b]
    n = sum(map(len, batches))
    print(f"CPU: {cpu_name()}; {n} sentences of {args.src}, batches of {args.batch}, "
          f"{args.workers} at once x {args.threads // args.workers} thread(s); torch {torch.__version__}", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        systems = [mt_system(default), mt_system(int8)]
        if default.model.dtype != "fp32":  # auto chose bf16 on this CPU: fp32 beside it
            fp32 = Translator.load(args.model, workers=1, threads=args.threads, dtype="fp32")
            systems.insert(1, mt_system(fp32, f"mt {fp32.model.describe()}"))
        compiled = None  # the one system whose warm-up must meet every shape (it compiles)
        if args.compile:
            plain = Translator.load(args.model, workers=1, threads=args.threads, dtype="fp32", pack=False)
            compiled = compiled_system(args.model, args.threads)
            systems += [mt_system(plain, "mt fp32, F.linear"), compiled]
        for dtype in ("auto", "fp32"):  # mt's text pipeline and batches around CTranslate2's search
            # workers: CTranslate2's inter_threads, as the bare CTranslate2 systems below get
            systems.append(mt_system(Translator.load(args.model, workers=args.workers, threads=args.threads,
                                                     dtype=dtype, engine="ctranslate2")))  # fmt: skip
        for quant in ("float32", "int8"):
            systems.append(ct2_system(args.model, default, Path(tmp) / quant, quant, args.threads, args.workers))
        for beam in beams:
            for system in systems:
                name, run = system
                # loading sets torch's threads and CTranslate2 sets OpenMP's (which torch reads)
                # to its intra_threads: every pass starts from --threads, split by run_parallel
                torch.set_num_threads(args.threads)
                seconds, hyps = timed_pass(run, batches, beam, args.workers, args.repeats, system is compiled)
                bleu = sacrebleu.corpus_bleu(hyps, [batch_refs]).score
                chrf = sacrebleu.corpus_chrf(hyps, [batch_refs]).score
                rows.append({"system": name, "beam": beam, "seconds": round(seconds, 2), "sent_per_s": round(n / seconds, 1),
                             "bleu": round(bleu, 2), "chrf": round(chrf, 2)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    print("| system | beam | sent/s | × CTranslate2 int8 | BLEU | chrF |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        peer = next(x for x in rows if x["system"] == "CTranslate2 int8" and x["beam"] == r["beam"])
        print(f"| {r['system']} | {r['beam']} | {r['sent_per_s']:.1f} | {r['sent_per_s'] / peer['sent_per_s']:.2f} | "
              f"{r['bleu']:.2f} | {r['chrf']:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
