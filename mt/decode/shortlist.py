"""Lexical shortlists: decode over the target words a batch's source words make likely.

The output layer is about half of a decoding step's arithmetic in a small model (a d256
decoder with an 8k vocabulary: 2.0M of the 4.0M weights a step multiplies by), and every row
pays for all 8,000 logits. Marian and CTranslate2 speed up CPU decoding with a *shortlist*:
for each batch only the target tokens that

* are among the ``frequent`` most frequent target tokens of the training data, or
* co-occur strongly with one of the batch's source tokens (the ``per_source`` best for each),

plus EOS and UNK, get a logit; the softmax runs over those alone and every other token has
probability 0. This is an approximation, measured and off by default: with a shortlist a
sentence's output can depend on the rest of its batch (the union of the batch's candidates),
so the batch-invariance guarantee of :mod:`mt.decode.shapes` does not hold.

The co-occurrence score is the Dice coefficient over training sentence pairs,
``2 * pairs(s, t) / (sentences with s + sentences with t)`` (subword types per sentence, not
counts): unlike ``p(t | s)`` it does not favour frequent target tokens, which the
``frequent`` list covers anyway.

Built by ``mt shortlist`` from the training bitext and stored next to the model as
``shortlist.safetensors`` (tensors ``frequent`` ``(F,)`` and ``table`` ``(vocab, per_source)``,
-1 padded; the settings in the file's metadata).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import Tensor

from mt.fileio import atomic_write_bytes

FILE = "shortlist.safetensors"


@dataclass
class Shortlist:
    """``frequent``: ``(F,)`` always-allowed target ids; ``table``: ``(vocab, K)`` candidates per
    source id, ``-1`` where a source id has fewer than ``K``; ``always``: ids every batch gets
    (EOS, UNK)."""

    frequent: Tensor
    table: Tensor
    always: tuple[int, ...] = ()

    def for_sources(self, sources: Iterable[Sequence[int]]) -> Tensor:
        """Sorted candidate target ids ``(V',)`` (long) for a batch of source id lists."""
        src = sorted({i for s in sources for i in s if 0 <= i < self.table.shape[0]})
        parts = [self.frequent, torch.tensor(self.always, dtype=torch.long)]
        if src:
            cand = self.table[torch.tensor(src)].reshape(-1)
            parts.append(cand[cand >= 0])
        return torch.unique(torch.cat([p.long() for p in parts]))  # sorted

    def save(self, model_dir: str | Path, meta: dict) -> Path:
        """Write ``model_dir/shortlist.safetensors`` atomically."""
        path = Path(model_dir) / FILE
        data = st_save({"frequent": self.frequent.int().contiguous(), "table": self.table.int().contiguous()},
                       metadata={"mt": json.dumps({**meta, "always": list(self.always)})})
        atomic_write_bytes(path, data)
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "Shortlist":
        path = Path(model_dir) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no shortlist; build one with `mt shortlist --model {model_dir} ...`")
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("mt", "{}"))
        t = load_file(str(path))
        if set(t) != {"frequent", "table"} or t["table"].dim() != 2:
            raise ValueError(f"{path}: expected tensors 'frequent' (F,) and 'table' (vocab, K)")
        return cls(t["frequent"].long(), t["table"].long(), tuple(meta.get("always", ())))


def build(
    src: Sequence[Sequence[int]],
    tgt: Sequence[Sequence[int]],
    vocab_size: int,
    frequent: int = 256,
    per_source: int = 16,
    always: tuple[int, ...] = (),
    ignore: Iterable[int] = (),
) -> Shortlist:
    """A shortlist from parallel id sequences (``src[i]`` translates to ``tgt[i]``).

    ``frequent``: how many of the most frequent target ids are always allowed;
    ``per_source``: candidates kept per source id (best Dice first, ties by id);
    ``ignore``: ids never counted (padding, BOS)."""
    if len(src) != len(tgt):
        raise ValueError(f"shortlist: {len(src)} source and {len(tgt)} target sentences")
    if frequent < 0 or per_source < 1:
        raise ValueError("shortlist: frequent must be >= 0 and per_source >= 1")
    skip = np.zeros(vocab_size, dtype=bool)
    skip[list(ignore)] = True
    tgt_count = np.zeros(vocab_size, dtype=np.int64)  # occurrences (for `frequent`)
    src_df = np.zeros(vocab_size, dtype=np.int64)  # sentences containing the id
    tgt_df = np.zeros(vocab_size, dtype=np.int64)
    keys = []
    for s, t in zip(src, tgt):
        t_arr = np.asarray(t, dtype=np.int64)
        np.add.at(tgt_count, t_arr, 1)
        su = np.unique(np.asarray(s, dtype=np.int64))
        tu = np.unique(t_arr)
        su, tu = su[~skip[su]], tu[~skip[tu]]
        src_df[su] += 1
        tgt_df[tu] += 1
        keys.append((su[:, None] * vocab_size + tu[None, :]).reshape(-1))
    pair_ids, pair_n = np.unique(np.concatenate(keys) if keys else np.zeros(0, np.int64), return_counts=True)
    s_id, t_id = pair_ids // vocab_size, pair_ids % vocab_size
    dice = 2.0 * pair_n / (src_df[s_id] + tgt_df[t_id])
    # per source id: best Dice first, then the smaller target id (deterministic)
    order = np.lexsort((t_id, -dice, s_id))
    s_sorted, t_sorted = s_id[order], t_id[order]
    starts = np.searchsorted(s_sorted, np.arange(vocab_size))
    rank = np.arange(len(s_sorted)) - starts[s_sorted]
    keep = rank < per_source
    table = np.full((vocab_size, per_source), -1, dtype=np.int64)
    table[s_sorted[keep], rank[keep]] = t_sorted[keep]
    tgt_count[skip] = -1
    freq = np.argsort(-tgt_count, kind="stable")[:frequent]
    freq = freq[tgt_count[freq] > 0]
    return Shortlist(torch.from_numpy(np.sort(freq)), torch.from_numpy(table), tuple(always))


def coverage(shortlist: Shortlist, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]) -> dict:
    """How much of ``tgt`` the shortlist of each single sentence ``src[i]`` would allow:
    token coverage and the share of sentences fully covered (for choosing the sizes)."""
    covered = total = full = 0
    sizes = []
    for s, t in zip(src, tgt):
        allowed = set(shortlist.for_sources([s]).tolist())
        sizes.append(len(allowed))
        hit = sum(i in allowed for i in t)
        covered, total, full = covered + hit, total + len(t), full + (hit == len(t))
    return {"token_coverage": covered / max(total, 1), "sentences_covered": full / max(len(tgt), 1),
            "mean_candidates": float(np.mean(sizes)) if sizes else 0.0}


# --------------------------------------------------------------------------- CLI


def _pairs(src: str, tgt: str, what: str) -> tuple[list[str], list[str]]:
    """Aligned raw lines of two files; different line counts or invalid UTF-8 raise
    ``DataError`` naming the file (and line)."""
    from mt.data.sources import read_text_pair

    pairs = list(read_text_pair(src, tgt, what=what))
    return [s for s, _ in pairs], [t for _, t in pairs]


def shortlist_cli(args: argparse.Namespace) -> int:
    """``mt shortlist``: build ``MODEL/shortlist.safetensors`` from a training bitext."""
    from mt.modelio import load_model

    if bool(args.check_src) != bool(args.check_tgt):
        print("mt shortlist: error: --check-src and --check-tgt go together", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    loaded = load_model(args.model)
    cfg, text = loaded.model.cfg, loaded.text
    src_lines, tgt_lines = _pairs(args.src, args.tgt, "shortlist bitext")
    if args.max_lines:
        src_lines, tgt_lines = src_lines[: args.max_lines], tgt_lines[: args.max_lines]
    src, tgt = text.encode_source(src_lines), text.encode_target(tgt_lines)
    sl = build(src, tgt, cfg.vocab_size, args.frequent, args.per_source,
               always=(cfg.eos_id, cfg.unk_id), ignore=(cfg.pad_id, cfg.bos_id))
    meta = {"src": str(args.src), "tgt": str(args.tgt), "sentences": len(src),
            "frequent": args.frequent, "per_source": args.per_source, "score": "dice"}
    path = sl.save(args.model, meta)
    report = {"path": str(path), **meta, "seconds": round(time.perf_counter() - t0, 1)}
    if args.check_src:
        check_src, check_tgt = _pairs(args.check_src, args.check_tgt, "shortlist check set")
        report["check"] = coverage(sl, text.encode_source(check_src), text.encode_target(check_tgt))
    print(json.dumps(report))
    return 0

