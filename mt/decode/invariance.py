"""Batch invariance, measured on this machine: the probe behind every decoding model's
:class:`~mt.decode.shapes.PaddingRule`.

Whether a sentence's output keeps its bits in any batch depends on the kernels torch calls
(MKL's sgemm, oneDNN's packed GEMMs, vectorised softmax and reductions) and so on the CPU:
a padding rule measured on one CPU family did not hold on another. So nothing is assumed;
:func:`padding_rule` measures, once for each CPU, model shape, variant and thread count,
and remembers the finding on disk (:func:`cache_path`) so later processes on the same machine
skip it (the first probe of a model takes ~1–15 s, mostly oneDNN building kernels for the
shapes it tries, which decoding would build later anyway):

1. **Linear layers** (:func:`linear_row_multiple`): every distinct linear layer of the model
   (and the output layer) multiplies the same random rows alone and inside batches of
   1–12, 16, 20, … 160 rows, shifted by a few positions, on 1 thread and on the current number of
   threads. The smallest ``m`` in 1, 2, 4, 8, 16 for which every row keeps its bits whenever
   the row count is a multiple of ``m`` becomes ``rule.rows``.
2. **The whole search** (:func:`decoding_is_invariant`): random sources of 3–37 tokens are
   decoded alone and together (greedy and beam 3, 5 steps; on 1 thread and on the current
   thread count) under the candidate rule; the
   first source-padding family (multiples of 16 from 32, of 32, of 64) under which tokens and
   scores agree bit for bit is kept.

If no candidate passes, the rule says ``invariant=False`` with what was seen; decoding still
runs, without the guarantee (tests skip the property for that path with the finding as the
reason). int8 is not probed: its activation scales are computed per batch, so it cannot be
batch-invariant by construction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from mt.config import DecodeOptions
from mt.data.batching import make_source
from mt.decode.search import beam_search, greedy_search
from mt.decode.shapes import PaddingRule
from mt.fileio import recall_json_entry, remember_json_entry
from mt.runtime import denormals_flushed, machine_fingerprint

ROW_CANDIDATES = (1, 2, 4, 8, 16)
ROW_COUNTS = tuple(range(1, 13)) + (16, 20, 24, 32, 48, 64, 100, 160)
SOURCE_FAMILIES = ((16, 32), (32, 32), (64, 64))  # (src_multiple, min_src)
PROBE_VERSION = 2  # bump when the probe changes, so remembered findings are measured again
PROBE_LENGTHS = (3, 11, 20, 37)  # alone they pad to 32 or 48 positions, together to 48

_CACHE: dict[str, PaddingRule] = {}


def padding_rule(dm: Any) -> PaddingRule:
    """The padding rule for decoding model ``dm`` (a :class:`mt.decode.variant.DecodingModel`)
    on this machine, probed once per shape / variant / thread count (see the module
    docstring) and remembered in this process and in :func:`cache_path`."""
    if dm.int8:
        return PaddingRule(rows=1, invariant=False,
                           finding="int8: activations are quantised with per-batch scales")
    key = _cache_key(dm)
    if key not in _CACHE:
        rule = _load_cached(key)
        if rule is None:
            rule = _probe(dm)
            _store_cached(key, rule)
        _CACHE[key] = rule
    return _CACHE[key]


def _cache_key(dm: Any) -> str:
    """What a probe's finding depends on: this CPU and its kernels (model name and flags,
    torch and its BLAS/oneDNN build), the model's shapes, the variant, the thread count."""
    c = dm.cfg
    shape = (c.d_model, c.ffn_dim, c.n_heads, c.enc_layers, c.dec_layers, c.vocab_size, c.norm,
             c.activation, c.tie_output, c.final_logits_bias, c.max_positions)
    parts = (machine_fingerprint(), shape, dm.dtype, dm.packed, str(dm.device), torch.get_num_threads(), PROBE_VERSION)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def cache_path() -> Optional[Path]:
    """Where probe results are remembered across processes: ``$MT_PROBE_CACHE`` (``off``:
    nowhere), default ``~/.cache/mt/invariance.json``."""
    value = os.environ.get("MT_PROBE_CACHE", str(Path.home() / ".cache" / "mt" / "invariance.json"))
    return None if value in ("", "off") else Path(value)


def _load_cached(key: str) -> Optional[PaddingRule]:
    entry = recall_json_entry(cache_path(), key)
    try:
        return PaddingRule(**entry) if isinstance(entry, dict) else None
    except TypeError:  # another format
        return None


def _store_cached(key: str, rule: PaddingRule) -> None:
    remember_json_entry(cache_path(), key, dataclasses.asdict(rule))


def _probe(dm: Any) -> PaddingRule:
    with denormals_flushed():  # as decoding runs (mt.decode.translator), and fast on random weights
        return _probe_flushed(dm)


def _probe_flushed(dm: Any) -> PaddingRule:
    rows = linear_row_multiple(dm.net, dm.device)
    linear_note = (f"linear layers keep each row's bits at row counts that are multiples of {rows}"
                   if rows else "linear layers' rows differ at every row multiple up to 16")
    for src_multiple, min_src in SOURCE_FAMILIES:
        rule = PaddingRule(rows or 16, src_multiple, min_src)
        if rows and decoding_is_invariant(dm, rule):
            finding = f"{linear_note}; sources padded to multiples of {src_multiple} (>= {min_src})"
            return dataclasses.replace(rule, invariant=True, finding=f"{dm.describe()}: invariant ({finding})")
    return PaddingRule(rows or 16, invariant=False,
                       finding=f"{dm.describe()}: not invariant ({linear_note}; "
                       "decoding alone and in batches differed under every source padding tried)")


# --------------------------------------------------------------------------- linear layers


def _linear_layers(net: nn.Module) -> Iterator[tuple[Callable[[Tensor], Tensor], int, torch.dtype]]:
    """One ``(layer, in_features, dtype)`` per distinct kind and shape of linear layer in
    ``net``, the output layer included (tied models multiply by the embedding)."""
    seen = set()
    for module in net.modules():
        in_f = getattr(module, "in_features", None)
        if in_f is None or not callable(module):
            continue
        key = (type(module).__name__, in_f, getattr(module, "out_features", None), getattr(module, "post_op", None))
        if key not in seen:
            seen.add(key)
            yield module, in_f, next(net.parameters()).dtype
    yield net.output_logits, net.cfg.d_model, next(net.parameters()).dtype


def linear_row_multiple(net: nn.Module, device: torch.device) -> int | None:
    """The smallest ``m`` of :data:`ROW_CANDIDATES` for which every linear layer of ``net``
    gives each row the same bits at every row count that is a multiple of ``m`` (on 1 thread
    and on the current thread count); None if there is none."""
    threads = torch.get_num_threads()
    layers = list(_linear_layers(net))
    try:
        for m in ROW_CANDIDATES:
            ok = True
            for t in sorted({1, threads}):
                torch.set_num_threads(t)
                ok = ok and all(_rows_keep_bits(layer, n_in, dtype, m, device) for layer, n_in, dtype in layers)
            if ok:
                return m
        return None
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def _rows_keep_bits(layer: Callable[[Tensor], Tensor], n_in: int, dtype: torch.dtype, m: int,
                    device: torch.device) -> bool:
    """Rows multiplied in a batch of ``n`` rows (any multiple of ``m`` in :data:`ROW_COUNTS`,
    starting at row 0 or row ``m``) equal the same rows in the largest batch."""
    counts = sorted({-(-n // m) * m for n in ROW_COUNTS})
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(counts[-1] + m, n_in, generator=g).to(device=device, dtype=dtype)
    ref = layer(x)
    for n in counts:
        for start in (0, m):
            if not torch.equal(layer(x[start : start + n]), ref[start : start + n]):
                return False
    return True


# --------------------------------------------------------------------------- the whole search


def _probe_sources(cfg: Any) -> list[list[int]]:
    g = torch.Generator().manual_seed(4321)
    special = {cfg.pad_id, cfg.bos_id, cfg.eos_id, cfg.unk_id}
    ordinary = torch.tensor([i for i in range(cfg.vocab_size) if i not in special])
    longest = cfg.max_positions - 2
    return [ordinary[torch.randint(len(ordinary), (min(n, longest),), generator=g)].tolist() for n in PROBE_LENGTHS]


def decoding_is_invariant(dm: Any, rule: PaddingRule) -> bool:
    """Whether ``dm`` decodes every probe source to the same tokens and score bits alone and
    in one batch (greedy and beam 3, 5 steps) when padded by ``rule``, on 1 thread and on the
    current thread count (``Translator`` workers split the threads between them)."""
    threads = torch.get_num_threads()
    try:
        for t in sorted({1, threads}):
            torch.set_num_threads(t)
            if not _decodes_alike(dataclasses.replace(dm, padding=rule)):
                return False
        return True
    finally:
        torch.set_num_threads(threads)


def _decodes_alike(dm: Any) -> bool:
    cfg = dm.cfg
    sources = _probe_sources(cfg)
    for beam, search in ((1, greedy_search), (3, beam_search)):
        opts = DecodeOptions(beam=beam, n_best=beam, max_len_a=0.0, max_len_b=4, min_len=4)

        def run(srcs: list[list[int]]) -> list:
            src = make_source(srcs, cfg.pad_id, cfg.eos_id).to(dm.device)
            return [[(h.tokens, h.score, h.log_prob) for h in hyps] for hyps in search(dm, src, opts)]

        together = run(sources)
        if any(run([s])[0] != together[i] for i, s in enumerate(sources)):
            return False
    return True
