"""Decoding speed: mt vs Hugging Face ``generate`` vs CTranslate2, on the same weights.

A randomly initialised MarianMT of the given size is built locally (nothing downloaded),
imported into mt (``mt.marian.convert_model``) and converted to CTranslate2 (float32 and
int8). EOS is made impossible (its final-logits bias is -1e4) so every system produces
exactly ``--tgt-len`` target tokens (the last one a forced EOS) and the comparison is per
token of identical work. With ``--model-dir`` a trained mt model is timed too (its own
output lengths; not comparable to the others token for token).

    .venv/bin/python bench/decode_speed.py --threads 2            # reference size
    .venv/bin/python bench/decode_speed.py --d-model 256 --layers 3 --ffn 1024   # quick

    .venv/bin/python bench/decode_speed.py --device cuda --dtype bf16 --batch 256   # a GPU
    .venv/bin/python bench/decode_speed.py --threads 2 --workers 2   # as `mt translate` runs

``--workers W`` decodes W batches of ``--batch`` at once, each on ``threads / W`` threads: what
``mt translate`` does on a CPU by default (2 workers × 1 thread on 2 cores), CTranslate2's
``inter_threads`` (its batches submitted asynchronously), and HF ``generate`` in W threads.
With the default ``--workers 1`` one batch uses every thread: the latency of one batch.

Reports sentences/s, target tokens/s and the ratio to HF (same search, same batch, same
device and dtype), and how many sentences are token-identical between packed and unpacked mt
and (greedy) between mt and HF: measured, not assumed (e.g. oneDNN's bf16 packed kernels on
an Intel AMX CPU round differently from the unpacked path). On a GPU, CTranslate2 runs with its CUDA build when it loads (float16 or
bfloat16 and int8 with that float type); int8 dynamic quantisation of mt is CPU-only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def build_hf(args):
    import transformers

    cfg = transformers.MarianConfig(
        vocab_size=args.vocab, d_model=args.d_model, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn,
        decoder_ffn_dim=args.ffn, max_position_embeddings=512, pad_token_id=args.vocab - 1, eos_token_id=0,
        decoder_start_token_id=args.vocab - 1, activation_function="swish", scale_embedding=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias[0, 0] = -1e4  # never EOS: all systems decode the full length
    return model


def save_for_ct2(hf, out: Path) -> None:
    """``save_pretrained`` plus a MarianTokenizer (CTranslate2's converter reads the vocabulary
    from it); the SentencePiece models are tiny dummies, only ``vocab.json`` matters."""
    import sentencepiece as spm

    hf.save_pretrained(out)
    corpus = out / "spm.txt"
    corpus.write_text("\n".join(f"word{i} other{i % 7} thing" for i in range(300)) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "sp"), vocab_size=40, minloglevel=2)
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes((out / "sp.model").read_bytes())
    v = hf.config.vocab_size
    vocab = {"</s>": 0, "<unk>": 1, **{f"tok{i}": i for i in range(2, v - 1)}, "<pad>": v - 1}
    (out / "vocab.json").write_text(json.dumps(vocab))
    from transformers import MarianTokenizer

    MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json")).save_pretrained(out)


def timed(fn, repeats: int) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()  # GPU work is asynchronous: time it to completion
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--src-len", type=int, default=25)
    p.add_argument("--tgt-len", type=int, default=30, help="target tokens per sentence, final EOS included")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per system (best is reported)")
    p.add_argument("--workers", type=int, default=1,
                   help="batches decoded at once, each on threads/workers threads (CTranslate2: inter_threads)")
    p.add_argument("--beams", default="5,1")
    p.add_argument("--model-dir", default=None, help="also time this trained mt model dir")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc malloc at its defaults")
    p.add_argument("--skip", default="", help="comma list of systems to skip: hf,ct2,int8,packed")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights and activations of mt and HF")
    args = p.parse_args(argv)
    if args.workers < 1 or args.threads % args.workers:
        p.error(f"--workers {args.workers}: must be >= 1 and divide --threads {args.threads}")
    from mt.decode.variant import DTYPES

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.set_num_threads(args.threads)
    if not args.no_malloc_tuning:
        from mt.runtime import tune_malloc

        tune_malloc()  # process-wide, so HF and CTranslate2 get it too (fair comparison)
    skip = set(filter(None, args.skip.split(",")))

    from mt.config import DecodeOptions
    from mt.decode.translator import generate, run_parallel
    from mt.decode.variant import prepare
    from mt.marian import convert_model

    hf = build_hf(args)
    net = convert_model(hf)  # fp32 on CPU; prepare() makes the decoding copies
    hf = hf.to(device, dtype)
    n_params = sum(p.numel() for p in net.parameters())
    # what mt decodes: cast to --dtype, padded by the rule probed on this machine (as
    # `mt translate` does); on CPU without and with oneDNN-packed weights (packed: the default)
    ours = prepare(net, device, args.dtype, pack=False)
    packed = None
    if device.type == "cpu" and "packed" not in skip:
        packed = prepare(net, device, args.dtype, pack=True)
        if not packed.packed:
            print("oneDNN packing is not available in this torch build: no packed row")
            packed = None
    for dm in (ours, packed):
        if dm is not None:
            print(f"mt {dm.describe()}: padding rows x{dm.padding.rows}; {dm.padding.finding}")
    g = torch.Generator().manual_seed(1)
    pad, eos = args.vocab - 1, 0
    w = args.workers
    all_ids = torch.randint(2, args.vocab - 1, (w * args.batch, args.src_len), generator=g)
    srcs = torch.cat([all_ids, torch.full((w * args.batch, 1), eos)], dim=1).to(device).split(args.batch)
    src, src_ids = srcs[0], all_ids[: args.batch]  # batch 0: the identity checks
    n_tok = w * args.batch * args.tgt_len
    rows = []

    def each_batch(fn):
        """``fn(src)`` for the ``--workers`` batches, at once (each on threads/workers threads)."""
        if w == 1:
            return lambda: fn(src)

        def one(j: int) -> int:
            fn(srcs[j])
            return 0

        return lambda: run_parallel(one, w, w)

    def add(system: str, beam: int, seconds: float, tokens: int = n_tok, sentences: int = w * args.batch) -> None:
        rows.append({"system": system, "beam": beam, "sentences": sentences, "tokens": tokens, "seconds": round(seconds, 3),
                     "sent_per_s": round(sentences / seconds, 2), "tok_per_s": round(tokens / seconds, 1)})  # fmt: skip

    beams = [int(b) for b in args.beams.split(",")]
    for beam in beams:
        opts = DecodeOptions(beam=beam, min_len=0, max_len_a=0.0, max_len_b=args.tgt_len - 1)
        out = generate(ours, src, opts)
        assert all(len(h[0].tokens) == args.tgt_len - 1 for h in out), "mt output length"
        add(f"mt {args.dtype}", beam, timed(each_batch(lambda s: generate(ours, s, opts)), args.repeats))
        if packed is not None:  # what `mt translate` runs on CPU by default
            out_packed = generate(packed, src, opts)
            # packed and unpacked run different GEMM kernels: identical at fp32 on the CPUs
            # measured so far, but e.g. oneDNN's bf16 kernels on an AMX CPU round differently
            # from the unpacked path, so this is measured and reported, not assumed
            same = sum(a[0].tokens == b[0].tokens for a, b in zip(out_packed, out))
            print(f"beam {beam}: packed vs unpacked mt {args.dtype}: {same}/{len(out)} sentences token-identical")
            add(f"mt {args.dtype} packed (default)", beam, timed(each_batch(lambda s: generate(packed, s, opts)), args.repeats))
        if "int8" not in skip and device.type == "cpu" and args.dtype == "fp32":
            q = prepare(net, "cpu", "fp32", int8=True)
            add("mt int8", beam, timed(each_batch(lambda s: generate(q, s, opts)), args.repeats))
        if "hf" not in skip:
            kw = dict(num_beams=beam, do_sample=False,
                      max_new_tokens=args.tgt_len, min_new_tokens=args.tgt_len, bad_words_ids=[[pad]],
                      forced_eos_token_id=eos, length_penalty=1.0)  # fmt: skip
            with torch.inference_mode():
                ref = hf.generate(input_ids=src, attention_mask=src.ne(pad), **kw)
            assert ref.shape[1] == args.tgt_len + 1, f"HF output length {ref.shape}"
            if beam == 1:  # same weights, same greedy search; measured (fp32: 32/32 in bench/results.md)
                ours_tokens = [h[0].tokens for h in (out_packed if packed is not None else out)]
                same = sum(r[1:-1].tolist() == t for r, t in zip(ref, ours_tokens))
                print(f"greedy {args.dtype}: {same}/{len(ours_tokens)} sentences token-identical to HF")
            add(f"HF generate {args.dtype}", beam,
                timed(each_batch(lambda s, kw=kw: hf.generate(input_ids=s, attention_mask=s.ne(pad), **kw)), args.repeats))

    if "ct2" not in skip:
        try:
            import ctranslate2
        except ImportError:
            print("ctranslate2 not installed: skipping (pip install 'mt[bench]')")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                hf_dir = Path(tmp) / "hf"
                save_for_ct2(hf, hf_dir)
                batch_tokens = [[f"tok{i}" if i > 1 else "<unk>" for i in row] + ["</s>"] for row in all_ids.tolist()]
                ct2_batches = [batch_tokens[i : i + args.batch] for i in range(0, len(batch_tokens), args.batch)]
                float_type = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[args.dtype]
                quants = ("float32", "int8") if device.type == "cpu" else (float_type, f"int8_{float_type}")
                for quant in quants:
                    out_dir = Path(tmp) / f"ct2_{quant}"
                    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(out_dir), quantization=quant)
                    try:
                        tr = ctranslate2.Translator(str(out_dir), device=device.type, inter_threads=w,
                                                    intra_threads=args.threads // w)
                    except (RuntimeError, ValueError) as e:  # e.g. a CPU-only build asked for cuda
                        print(f"CTranslate2 {quant} on {device.type}: skipped ({e})")
                        continue
                    for beam in beams:
                        def run(tr=tr, beam=beam):
                            # one asynchronous call per batch: the `w` translators take one each
                            pending = [tr.translate_batch(b, beam_size=beam, max_decoding_length=args.tgt_len,
                                                          min_decoding_length=args.tgt_len, max_batch_size=args.batch,
                                                          asynchronous=True) for b in ct2_batches]  # fmt: skip
                            return [r.result() for batch in pending for r in batch]
                        lens = [len(r.hypotheses[0]) for r in run()]
                        add(f"CTranslate2 {quant}", beam, timed(run, args.repeats), tokens=sum(lens) + len(lens))

    if args.model_dir:
        from mt.decode.translator import Translator

        # the directory's stored decoding defaults, on this device and dtype (packed on CPU)
        t = Translator.load(args.model_dir, threads=args.threads, device=args.device, dtype=args.dtype)
        cfg = t.model.cfg
        msrc = torch.randint(4, cfg.vocab_size, (args.batch, args.src_len), generator=g)
        msrc = torch.cat([msrc, torch.full((args.batch, 1), cfg.eos_id)], dim=1).to(device)
        for beam in beams:
            opts = t.options.replace(beam=beam, n_best=1)
            hyps = generate(t.model, msrc, opts)
            toks = sum(len(h[0].tokens) + 1 for h in hyps)
            add(f"mt {args.dtype} ({Path(args.model_dir).name}, own lengths)", beam, timed(lambda: generate(t.model, msrc, opts), args.repeats), tokens=toks,
                sentences=args.batch)  # one batch, all threads

    hf_speed = {r["beam"]: r["tok_per_s"] for r in rows if r["system"].startswith("HF generate")}
    print(f"model: {n_params / 1e6:.1f}M params (d{args.d_model}, {args.layers}+{args.layers}, ffn {args.ffn}, "
          f"vocab {args.vocab}); batch {args.batch} x {args.src_len} source tokens, {args.tgt_len} target tokens; "
          f"{args.threads} threads, {w} batch(es) at once; device {device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}; {args.dtype}; torch {torch.__version__}")  # fmt: skip
    print(f"| {'system':<40} | beam | sent/s | tok/s | × HF |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = r["tok_per_s"] / hf_speed[r["beam"]] if r["beam"] in hf_speed else float("nan")
        print(f"| {r['system']:<40} | {r['beam']} | {r['sent_per_s']:.1f} | {r['tok_per_s']:.0f} | {ratio:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
