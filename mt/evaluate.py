"""Corpus scores (sacreBLEU BLEU and chrF) and the ``mt evaluate`` command.

BLEU's tokenizer follows the output language (``mt.data.languages``: ``zh`` for Chinese,
``char`` for Thai or Japanese without MeCab, ``13a`` for most others); chrF needs none, it
compares character n-grams, so both are reported for every language.

``mt evaluate`` translates ``--src`` and scores it against ``--ref``; with
``--beam-sweep 1,2,5,...`` it decodes once per (length normalisation, beam size) and
prints BLEU, mean output length and the number of empty outputs for each — the usual
way to see the "beam search curse" (longer beams → shorter outputs without normalisation).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Optional

import torch
from sacrebleu.metrics import BLEU, CHRF

from mt.data.clean import side_length
from mt.data.languages import bleu_tokenizer, length_unit
from mt.errors import ConfigError
from mt.fileio import atomic_write, read_lines


def corpus_scores(
    hyps: list[str], refs: list[str], tokenize: Optional[str] = None, lang: Optional[str] = None
) -> dict[str, Any]:
    """sacreBLEU corpus BLEU and chrF of detokenised ``hyps`` against one reference each.

    ``tokenize``: BLEU's tokenizer; default: the one for output language ``lang``
    (:func:`mt.data.languages.bleu_tokenizer`), ``13a`` without a language. The signatures
    name the tokenizer, so scores with different ones are never mistaken for each other."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if tokenize is None:
        tokenize = bleu_tokenizer(lang) if lang else "13a"
    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def length_stats(hyps: list[str], lang: Optional[str] = None) -> dict[str, Any]:
    """Mean output length and the number of empty outputs. Lengths are whitespace words, or
    characters where ``lang`` is written without spaces (:func:`mt.data.clean.side_length`)."""
    unit = length_unit(lang)
    lengths = [side_length(" ".join(h.split()), unit) for h in hyps]
    return {"mean_len": round(sum(lengths) / max(len(lengths), 1), 2), "empty": sum(n == 0 for n in lengths)}


def beam_sweep(translator, src: list[str], refs: list[str], opts, beams: list[int], modes: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """One row per (length_norm mode, beam): BLEU, chrF, mean length, empty count, seconds."""
    lang = translator.text.tgt_lang
    rows = []
    for mode in modes or ["avg", "gnmt", "none"]:
        for beam in beams:
            o = opts.replace(beam=beam, n_best=1, length_norm=mode, sampling="none")
            t0 = time.perf_counter()
            hyps = [h[0].text for h in translator.translate_batch(src, o)]
            s = corpus_scores(hyps, refs, lang=lang)
            rows.append({"length_norm": mode, "alpha": o.alpha, "beam": beam, "bleu": s["bleu"], "chrf": s["chrf"],
                         **length_stats(hyps, lang), "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
    return rows


def evaluate_cli(args: argparse.Namespace) -> int:
    """``mt evaluate``: BLEU + chrF with signatures, then one JSON line (or a beam sweep)."""
    from mt.decode.options import from_args
    from mt.decode.translator import Translator, announce_precision
    from mt.modelio import stored_decode_options

    opts = from_args(args, stored_decode_options(args.model))
    beams = args.beam_sweep or []  # already parsed and checked by the CLI (mt.cli._beam_list)
    src, refs = list(read_lines(args.src)), list(read_lines(args.ref))
    if len(src) != len(refs):
        raise ConfigError(f"--ref: {args.ref} has {len(refs)} lines, --src {args.src} has {len(src)}")
    translator = Translator.load(args.model, opts, args.workers, args.threads)
    announce_precision("mt evaluate", translator)
    if beams:
        ref_len = length_stats(refs, translator.text.tgt_lang)["mean_len"]
        rows = []
        print(f"{'norm':<6}{'beam':>5}{'BLEU':>8}{'chrF':>8}{'len':>8}{'empty':>7}{'sec':>8}   (reference mean length {ref_len})")
        for row in beam_sweep(translator, src, refs, opts, beams):
            print(f"{row['length_norm']:<6}{row['beam']:>5}{row['bleu']:>8.2f}{row['chrf']:>8.2f}"
                  f"{row['mean_len']:>8.2f}{row['empty']:>7}{row['seconds']:>8.1f}")  # fmt: skip
            rows.append(row)
        for row in rows:  # machine-readable, after the table
            print(json.dumps(row))
        return 0
    t0 = time.perf_counter()
    hyps = [h[0].text for h in translator.translate_batch(src, opts)]
    seconds = time.perf_counter() - t0
    if args.hyp_out:
        with atomic_write(args.hyp_out) as f:
            f.write("".join(h + "\n" for h in hyps))
    s = corpus_scores(hyps, refs, lang=translator.text.tgt_lang)
    print(f"BLEU = {s['bleu']:.2f}  {s['bleu_signature']}")
    print(f"chrF = {s['chrf']:.2f}  {s['chrf_signature']}")
    record = {**s, **length_stats(hyps, translator.text.tgt_lang), "sentences": len(src), "seconds": round(seconds, 2),
              "beam": opts.beam, "length_norm": opts.length_norm, "alpha": opts.alpha, "int8": opts.int8,
              "dtype": translator.model.dtype, "dtype_requested": opts.dtype,
              "dtype_reason": translator.model.precision.reason, "device": str(translator.device), "threads": torch.get_num_threads(),
              "workers": translator.workers, "shortlist": opts.shortlist, "packed": translator.model.packed,
              "batch_invariant": translator.model.padding.invariant,
              "sent_per_s": round(len(src) / seconds, 1) if seconds > 0 else None}  # fmt: skip
    print(json.dumps(record))
    return 0
