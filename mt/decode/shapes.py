"""Batch-invariant tensor shapes: a sentence's translation must not depend on its batch.

Floating-point sums are not associative, so the *same* row can come out of a kernel with
different low bits when the kernel's shape changes: a GEMM library may take another code
path for another row count (MKL's small-matrix path), a vectorised softmax another tail for
another key length. Which shapes keep every row's bits is a property of the CPU and its
kernels, not of this code, so it is **measured at run time** (:mod:`mt.decode.invariance`)
and recorded as the decoding model's :class:`PaddingRule`. Decoding then keeps that rule:

* :func:`pad_source` pads the source length to a multiple of ``rule.src_multiple`` (at least
  ``rule.min_src``), so attention over the source sees a padded key length from one family
  whatever the batch; it adds dummy sentences (copies of the first) at the end so the
  decoder's row count (``batch * beam``) is a multiple of ``rule.rows``;
* :func:`keep_sentences` keeps a few already-finished sentences ("zombies", whose further
  output is ignored) alive when the batch shrinks, for the same row multiple;
* the self-attention KV cache (:class:`mt.decoder_state.LayerCache`) is a preallocated buffer
  whose strides depend only on the step, so attention over it runs the same kernels
  whatever the batch.

``rule.rows == 1`` (no padding rows) is what oneDNN-packed weights usually give: each row of
their output is computed alike for any row count, so a sentence decoded alone at beam 5 runs
5 rows, not 20. A rule the probe could not make invariant says so (``invariant=False``,
``finding``), and decoding still runs, without the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PaddingRule:
    """How decoding pads batches (see the module docstring).

    ``rows``: decoder rows are kept a multiple of this (1 = no padding rows; the encoder then
    also skips padding tokens in its projections). ``src_multiple`` / ``min_src``: padded
    source length. ``invariant``: whether the probe found a sentence's output bit-identical
    alone and in batches under this rule; ``finding``: what the probe saw, for people.
    """

    rows: int = 4
    src_multiple: int = 16
    min_src: int = 32
    invariant: bool = False  # True only where the probe found it so
    finding: str = "not probed"

    def sentence_multiple(self, beam: int) -> int:
        """Sentences per batch must be a multiple of this for ``sentences * beam`` rows to be
        a multiple of :attr:`rows`."""
        return self.rows // math.gcd(beam, self.rows)

    def src_len(self, length: int, max_positions: int) -> int:
        """Padded source length for a batch whose longest source has ``length`` tokens."""
        padded = max(self.min_src, -(-length // self.src_multiple) * self.src_multiple)
        return min(padded, max(length, max_positions))


def pad_source(src: Tensor, pad_id: int, beam: int, max_positions: int, rule: PaddingRule) -> tuple[Tensor, int]:
    """``src``: ``(batch, src_len)`` → ``(batch', src_len')`` and the real batch size.

    ``src_len'`` = :meth:`PaddingRule.src_len`; ``batch'`` is ``batch`` rounded up to
    :meth:`PaddingRule.sentence_multiple` of ``beam``, the extra rows being copies of row 0
    whose results the caller drops.
    """
    b, s = src.shape
    s_new = rule.src_len(s, max_positions)
    if s_new > s:
        src = torch.cat([src, src.new_full((b, s_new - s), pad_id)], dim=1)
    m = rule.sentence_multiple(beam)
    b_new = -(-b // m) * m
    if b_new > b:
        src = torch.cat([src, src[:1].expand(b_new - b, -1)], dim=0)
    return src, b


def keep_sentences(alive: Tensor, beam: int, rule: PaddingRule) -> Tensor:
    """Indices of the sentences to keep decoding: all ``alive`` ones (``(batch,)`` bool), plus
    enough finished ones that the count stays a multiple of
    :meth:`PaddingRule.sentence_multiple` of ``beam``. The caller ignores whatever the kept
    finished sentences produce.

    Order: a kept sentence among the first ``len(keep)`` stays where it is, and the places of
    dropped ones are filled by the kept sentences from the end of the batch, so the decoder
    state moves only those (``DecoderState.select_sentences``); a sentence's position in the
    batch does not change its result.
    """
    m = rule.sentence_multiple(beam)
    n_alive = int(alive.sum())
    extra = -(-n_alive // m) * m - n_alive
    kept = alive.clone()
    kept[(~alive).nonzero().squeeze(1)[:extra]] = True
    n = n_alive + extra
    order = torch.arange(n, device=alive.device)
    holes = (~kept[:n]).nonzero().squeeze(1)
    order[holes] = kept[n:].nonzero().squeeze(1) + n
    return order
