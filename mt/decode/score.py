"""Forced decoding: how likely the model finds given translations (``mt score``).

Like CTranslate2's ``score_batch`` and fairseq's ``--score-reference``: each (source,
target) pair is run through the decoder teacher-forced, and the log-probability of every
target subword and of the final EOS is read off. A pair's ``log_prob`` is their sum and its
``score`` is that sum length-normalised exactly as beam search normalises finished
hypotheses (:mod:`mt.decode.lengths`), so a score of a given translation is comparable with
``mt translate --n-best`` scores of the same model and settings.

Batches are length-sorted and bounded by ``max_tokens`` padded target tokens, and run in fp32
on the stored weights (no decoding variant: teacher forcing is one pass, not a search).
Sources and targets longer than the model's positions are truncated with a warning, as in
``mt translate``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mt.config import DecodeOptions
from mt.data.batching import collate
from mt.decode.lengths import normalize
from mt.errors import ConfigError
from mt.model import Transformer


@dataclass
class Scored:
    """One pair: ``token_log_probs`` of the target subwords and the final EOS (in order),
    their sum ``log_prob`` and the length-normalised ``score``."""

    log_prob: float
    score: float
    token_log_probs: list[float]


@torch.inference_mode()
def score_ids(model: Transformer, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], opts: DecodeOptions,
              device: torch.device | str = "cpu") -> list[Scored]:
    """Teacher-forced scores of ``tgt[i]`` given ``src[i]`` (bare subword ids, no EOS)."""
    cfg = model.cfg
    results: list[Scored | None] = [None] * len(src)
    order = sorted(range(len(src)), key=lambda i: -(len(tgt[i]) + len(src[i])))
    for batch in _batches(order, src, tgt, opts.max_tokens):
        b = collate([np.asarray(src[i], dtype=np.int64) for i in batch], [np.asarray(tgt[i], dtype=np.int64) for i in batch],
                    cfg.pad_id, model.decoder_start_id, cfg.eos_id)  # fmt: skip
        logits = model(b.src.to(device), b.tgt_in.to(device)).float()  # (batch, tgt_len + 1, vocab)
        lp = F.log_softmax(logits, dim=-1).gather(2, b.tgt_out.to(device)[:, :, None]).squeeze(2)  # (batch, tgt_len + 1)
        for row, i in enumerate(batch):
            tokens = lp[row, : len(tgt[i]) + 1].tolist()
            total = float(sum(tokens))
            results[i] = Scored(total, float(normalize(total, len(tokens), opts.length_norm, opts.alpha)), tokens)
    return results  # type: ignore[return-value]


def _batches(order: list[int], src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], max_tokens: int) -> list[list[int]]:
    """Cut ``order`` so ``sentences * longest (source or target + 1)`` stays within ``max_tokens``."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(len(src[i]), len(tgt[i])) + 1
        if current and max(longest, n) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    return batches + ([current] if current else [])


def _truncate(ids: list[list[int]], limit: int, what: str) -> list[list[int]]:
    n_long = sum(len(x) > limit for x in ids)
    if n_long:
        warnings.warn(f"{n_long} {what} longer than {limit} subwords were truncated before scoring", UserWarning,
                      stacklevel=3)  # fmt: skip
    return [x[:limit] for x in ids]


def format_scored(index: int, s: Scored, per_token: bool) -> str:
    """TSV: index, log_prob, score, tokens (EOS included)[, per-token log-probs]."""
    cols = [str(index), f"{s.log_prob:.4f}", f"{s.score:.4f}", str(len(s.token_log_probs))]
    if per_token:
        cols.append(" ".join(f"{x:.4f}" for x in s.token_log_probs))
    return "\t".join(cols)


def score_cli(args: argparse.Namespace) -> int:
    """``mt score``: one TSV line per pair of ``--src`` / ``--tgt``."""
    from mt.decode.options import from_args
    from mt.decode.variant import resolve_device
    from mt.fileio import atomic_write, read_lines
    from mt.modelio import load_model, stored_decode_options

    opts = from_args(args, stored_decode_options(args.model))
    src, tgt = list(read_lines(args.src)), list(read_lines(args.tgt))
    if len(src) != len(tgt):
        raise ConfigError(f"--tgt: {args.tgt} has {len(tgt)} lines, --src {args.src} has {len(src)}")
    device = resolve_device(opts.device)
    loaded = load_model(args.model, device=device)
    limit = loaded.model.cfg.max_positions - 1
    src_ids = _truncate(loaded.text.encode_source(src), limit, "sources")
    tgt_ids = _truncate(loaded.text.encode_target(tgt), limit - 1, "targets")  # the decoder start takes one
    lines = [format_scored(i, s, args.per_token) for i, s in enumerate(score_ids(loaded.model, src_ids, tgt_ids, opts, device))]
    text = "".join(line + "\n" for line in lines)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with atomic_write(args.output) as f:
            f.write(text)
    return 0
