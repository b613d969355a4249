"""The decoder's incremental state: per-layer key/value caches (:class:`LayerCache`) and
:class:`DecoderState`, which follows beam search's reorders and dropped sentences.

Shapes: ``rows`` = ``batch * beam`` decoder rows, sentence-major (the beams of sentence 0
first); caches are ``(rows, 2, heads, capacity, d_head)``; cross-attention keys/values are
``(batch, heads, src_len, d_head)``, one per source sentence, shared by its beams.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    """Keys/values of one decoder layer.

    Self-attention keys and values live in one preallocated buffer ``(rows, 2, heads,
    capacity, d_head)`` (``[:, 0]`` = keys, ``[:, 1]`` = values); each step writes its slice in
    place and attention reads views of the filled prefix (:attr:`k`, :attr:`v`: ``(n, heads,
    steps, d_head)``). Growing by ``torch.cat`` would copy the whole cache every step (and, with
    glibc's defaults, page-fault fresh memory in); here a step writes ``n * d_model`` floats.
    Rows come first so that moving a row (beam search's reorders) copies ``2 * heads`` runs
    of ``steps * d_head`` floats: 2.1× faster than with keys/values first.

    ``capacity`` grows in chunks of :data:`CACHE_CHUNK` steps and the rows in use are a prefix
    of the buffer, so the strides a step's attention sees depend on the step alone, never on
    the batch: that keeps decoding batch-invariant (a matmul's kernel, hence its last bits,
    can depend on the layout; ``mt/decode/shapes.py``).

    Reordering gathers the filled prefix into a second buffer and swaps the two
    (:meth:`reorder`), or copies just the rows that change (:meth:`copy_rows`).

    ``cross_k``/``cross_v``: cross-attention, ``(batch, heads, src_len, d_head)``, contiguous.
    """

    def __init__(self, cross_k: Tensor, cross_v: Tensor) -> None:
        self.cross_k = cross_k.contiguous()
        self.cross_v = cross_v.contiguous()
        self.kv: Tensor | None = None  # (rows_allocated, 2, heads, capacity, d_head)
        self._spare: Tensor | None = None  # same shape: the target of reorder's gather
        self.rows = 0  # rows in use (a prefix of the buffer's rows)
        self.length = 0  # steps written

    @property
    def k(self) -> Tensor | None:
        """``(n, heads, steps, d_head)`` view of the keys written so far."""
        return None if self.kv is None else self.kv[: self.rows, 0, :, : self.length]

    @property
    def v(self) -> Tensor | None:
        return None if self.kv is None else self.kv[: self.rows, 1, :, : self.length]

    def append(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Write one step. ``kv``: ``(n, 2, heads, d_head)`` (this step's key and value per
        row) → views of all keys and values so far, each ``(n, heads, steps, d_head)``."""
        n, _, h, dh = kv.shape
        if self.kv is None:
            self.rows = n
            self.kv = kv.new_empty(n, 2, h, CACHE_CHUNK, dh)
        elif self.length == self.kv.shape[3]:  # full: grow by one chunk (rare)
            grown = self.kv.new_empty(self.kv.shape[0], 2, h, self.length + CACHE_CHUNK, dh)
            grown[..., : self.length, :] = self.kv[..., : self.length, :]
            self.kv, self._spare = grown, None
        self.kv[: self.rows, :, :, self.length] = kv
        self.length += 1
        return self.k, self.v

    def reorder(self, rows: Tensor) -> None:
        """Rows take rows ``rows`` (``(n',)`` indices) of the filled prefix: one gather into
        the spare buffer, then the two buffers swap."""
        if self.kv is None:
            return
        n, t = rows.shape[0], self.length
        if self._spare is None or self._spare.shape[0] < n:
            self._spare = self.kv.new_empty(max(n, self.kv.shape[0]), *self.kv.shape[1:])
        torch.index_select(self.kv[: self.rows, ..., :t, :], 0, rows, out=self._spare[:n, ..., :t, :])
        self.kv, self._spare = self._spare, self.kv
        self.rows = n

    def copy_rows(self, dst: Tensor, src: Tensor, keep: int) -> None:
        """Row ``dst[i]`` takes row ``src[i]``, every other row stays, then only the first
        ``keep`` rows stay in use: cheaper than :meth:`reorder` when few rows change.
        Sources are read before anything is written."""
        if self.kv is not None:
            if dst.numel():
                filled = self.kv[:, ..., : self.length, :]
                filled.index_copy_(0, dst, filled.index_select(0, src))
            self.rows = keep


CACHE_CHUNK = 32  # self-attention cache capacity grows in steps of this many positions


class DecoderState:
    """Everything the decoder needs between steps for ``batch`` sentences × ``beam`` rows each.

    ``reorder`` follows beam search's choice of parent hypotheses; ``select_sentences``
    drops finished sentences so later steps do less work.
    """

    def __init__(self, layers: list[LayerCache], src_mask: Tensor, beam: int) -> None:
        self.layers = layers
        self.src_mask = src_mask  # (batch, 1, 1, src_len)
        self.beam = beam
        self.step = 0

    @property
    def batch_size(self) -> int:
        return self.src_mask.shape[0]

    def reorder(self, rows: Tensor) -> None:
        """Self-attention caches take rows ``rows`` (``(n',)`` indices into the current rows);
        used after each beam step with the parents of the surviving hypotheses, and to drop
        finished sentences. Only rows that change are copied when they are few (beam search
        keeps a hypothesis's first child in its parent's row, and
        :func:`mt.decode.shapes.keep_sentences` fills the places of dropped sentences from the
        end of the batch); ``rows == 0..n'-1`` copies nothing."""
        n = rows.shape[0]
        if self.layers and n <= self.layers[0].rows:  # not the first step's growth to beam rows
            moved = _moved(rows)
            if _few(moved, n):
                for layer in self.layers:
                    layer.copy_rows(moved, rows[moved], n)
                return
        for layer in self.layers:
            layer.reorder(rows)

    def select_sentences(self, keep: Tensor, rows: Tensor | None = None) -> None:
        """Keep sentences ``keep`` (``(batch',)`` indices), with all their beam rows.

        ``rows``: ``(batch' * beam,)`` indices into the current rows for the self-attention
        caches, when beam search moves rows in the same step (one gather instead of a
        :meth:`reorder` and then another); default: the kept sentences' rows unchanged.
        """
        if rows is None:
            rows = (keep[:, None] * self.beam + torch.arange(self.beam, device=keep.device)).reshape(-1)
        moved = _moved(keep)
        for layer in self.layers:
            layer.cross_k = _keep_prefix_rows(layer.cross_k, keep, moved)
            layer.cross_v = _keep_prefix_rows(layer.cross_v, keep, moved)
        self.src_mask = self.src_mask.index_select(0, keep)
        self.reorder(rows)


def _moved(index: Tensor) -> Tensor:
    """The positions ``i`` where ``index[i] != i``: what taking rows ``index`` in place must copy."""
    return index.ne(torch.arange(index.shape[0], device=index.device)).nonzero().squeeze(1)


def _few(moved: Tensor, n: int) -> bool:
    """Whether copying the ``moved`` rows in place beats gathering all ``n``: copying ``m`` rows
    moves ~``2m`` rows of data (read into a temporary, write back), a gather ``n``."""
    return 2 * moved.shape[0] <= n


def _keep_prefix_rows(x: Tensor, keep: Tensor, moved: Tensor) -> Tensor:
    """``x[keep]`` (``keep``: ``(b',)`` indices along dim 0), computed in place when few rows
    move (``moved``: :func:`_moved` of ``keep``): those rows are copied into ``x`` and the
    result is a contiguous prefix view of it."""
    b = keep.shape[0]
    if not _few(moved, b):
        return x.index_select(0, keep)
    if moved.numel():
        x.index_copy_(0, moved, x.index_select(0, keep[moved]))
    return x[:b]
