"""Batch-invariant tensor shapes: a sentence's translation must not depend on its batch.

Floating-point sums are not associative, so the *same* row can come out of a kernel with
different low bits when the kernel's shape changes. Measured on x86 CPU (fp32, MKL sgemm
and PyTorch's flash-attention kernel; see ``tests/test_decode_invariance.py``):

* ``linear`` with ``M`` rows: rows agree bit for bit with any other row count when ``M`` is
  a multiple of 4 (or ≥ 12); ``M`` in {1, 2, 3, 5, 6, 7, 9, 10, 11} takes MKL's small-matrix
  path and differs in the last bits.
* attention over right-padded keys (``Attention._attend_step`` in ``mt/model.py``): the output
  agrees bit for bit across paddings when the padded key length is a multiple of 16 (the
  AVX-512 vector width) and at least 32, for ``d_head >= 16``; not otherwise (vector loops'
  scalar tails move, and ``q @ k^T`` with 16 columns takes another GEMM path).
* PyTorch's fused ``scaled_dot_product_attention`` splits its work across threads by
  ``batch * heads``, so its output depends on the batch size; incremental decoding therefore
  uses plain matmul attention (``Attention._attend_step``).

Decoding keeps both invariants so translating a sentence alone, or in any batch and any
order, gives identical tokens *and* identical scores:

* :func:`pad_source` pads the source length to a multiple of :data:`SRC_MULTIPLE` (at least
  :data:`MIN_SRC_LEN`), so every encoder GEMM has ``batch * src_len`` rows (a multiple of
  16; packed and int8 models run their encoder projections on the real tokens only) and
  every attention over the source sees a padded length that is a multiple of 16;
* the number of decoder rows (``batch * beam``) is kept a multiple of :data:`ROW_MULTIPLE`
  (:func:`row_multiple`: 1, i.e. no padding, for a model with oneDNN-packed linear layers,
  whose rows do not depend on the row count, and for int8 ones, which cannot be invariant):
  :func:`pad_source` adds dummy sentences (copies of the first) at the end, and
  :func:`keep_sentences` keeps a few already-finished sentences ("zombies", whose further
  output is ignored) alive when the batch shrinks. Beam search's step 0 runs one row per
  sentence only where that keeps the multiple (odd beam sizes, or packed and int8 models);
* the self-attention KV cache (``mt.model.LayerCache``) is a preallocated buffer whose
  strides depend only on the step (capacity grows in fixed chunks; fewer rows use a prefix),
  so attention over it runs the same kernels whatever the batch.

The cost: at most 15 padding positions per source beyond 32, and at most 3 extra sentences
(none for packed and int8 models). For a batch of 32 that is little; for a sentence decoded
alone at beam 5 it is 20 rows instead of 5, which is why the packed CPU default does without.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SRC_MULTIPLE = 16
MIN_SRC_LEN = 32
ROW_MULTIPLE = 4


def row_multiple(model: nn.Module) -> int:
    """What the decoder's row count must be a multiple of for ``model``: 1 when its linear
    layers need no padding rows (``model.pad_rows`` off: packed layers are row-invariant,
    int8 ones cannot be batch-invariant at all), else :data:`ROW_MULTIPLE`."""
    return ROW_MULTIPLE if getattr(model, "pad_rows", True) else 1


def sentence_multiple(beam: int, rows: int = ROW_MULTIPLE) -> int:
    """Sentences per batch must be a multiple of this for ``sentences * beam`` rows to be a
    multiple of ``rows`` (:func:`row_multiple`)."""
    return rows // math.gcd(beam, rows)


def pad_source(
    src: Tensor, pad_id: int, beam: int, max_positions: int, rows: int = ROW_MULTIPLE
) -> tuple[Tensor, int]:
    """``src``: ``(batch, src_len)`` → ``(batch', src_len')`` and the real batch size.

    ``src_len'`` is ``src_len`` rounded up to a multiple of :data:`SRC_MULTIPLE`, at least
    :data:`MIN_SRC_LEN` (but at most ``max_positions``); ``batch'`` is ``batch`` rounded up to
    :func:`sentence_multiple` of ``beam`` and ``rows``, the extra rows being copies of row 0
    whose results the caller drops.
    """
    b, s = src.shape
    s_new = min(max(MIN_SRC_LEN, -(-s // SRC_MULTIPLE) * SRC_MULTIPLE), max(s, max_positions))
    if s_new > s:
        src = torch.cat([src, src.new_full((b, s_new - s), pad_id)], dim=1)
    m = sentence_multiple(beam, rows)
    b_new = -(-b // m) * m
    if b_new > b:
        src = torch.cat([src, src[:1].expand(b_new - b, -1)], dim=0)
    return src, b


def keep_sentences(alive: Tensor, beam: int, rows: int = ROW_MULTIPLE) -> Tensor:
    """Indices of the sentences to keep decoding: all ``alive`` ones (``(batch,)`` bool), plus
    enough finished ones that the count stays a multiple of :func:`sentence_multiple` of
    ``beam`` and ``rows``. The caller ignores whatever the kept finished sentences produce.

    Order: a kept sentence among the first ``len(keep)`` stays where it is, and the places of
    dropped ones are filled by the kept sentences from the end of the batch, so the decoder
    state moves only those (``DecoderState.select_sentences``); a sentence's position in the
    batch does not change its result.
    """
    m = sentence_multiple(beam, rows)
    n_alive = int(alive.sum())
    extra = -(-n_alive // m) * m - n_alive
    kept = alive.clone()
    kept[(~alive).nonzero().squeeze(1)[:extra]] = True
    n = n_alive + extra
    order = torch.arange(n, device=alive.device)
    holes = (~kept[:n]).nonzero().squeeze(1)
    order[holes] = kept[n:].nonzero().squeeze(1) + n
    return order
