"""Transformer encoder-decoder with an incremental-decoding state.

Shapes: tokens ``(batch, len)``; hidden states ``(batch, len, d_model)``; attention heads
``(batch, heads, len, d_head)``; during beam search hypotheses are flattened as
``(batch * beam, ...)`` with the beams of one sentence adjacent.

Two ways to run the decoder:

* ``decode(tgt_in, enc)`` — the whole target prefix at once, causal (training, scoring).
* ``start_state(enc, beam)`` then ``decode_step(tokens, state)`` — one token per call with
  cached self-attention keys/values (a preallocated buffer written in place, see
  :class:`LayerCache`); cross-attention keys/values are projected once per *source
  sentence* and shared by its beams (the beam dimension is folded into the query length,
  so nothing is copied per beam).

The architecture can express Hugging Face's MarianMT (post-norm, sinusoidal positions
with sin/cos halves, scaled embeddings, swish, final-logits bias, pad as decoder start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt.config import ModelConfig


# --------------------------------------------------------------------------- pieces


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """``(n_positions, dim)``: ``sin`` in the first half, ``cos`` in the second (Marian layout).

    Frequency ``i`` is ``10000 ** (-2i / dim)``; positions start at 0.
    """
    half = dim // 2
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -2.0 * torch.arange(half, dtype=torch.float64) / dim)[None, :]
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, :half] = torch.sin(pos * freq)
    table[:, half : 2 * half] = torch.cos(pos * freq)
    return table.float()


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}


class Attention(nn.Module):
    """Multi-head attention through ``scaled_dot_product_attention``.

    Self-attention uses one fused ``(3 * d_model, d_model)`` projection; cross-attention
    projects queries from the decoder and a fused key/value pair from the encoder memory.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.dropout = dropout
        self.cross = cross
        if cross:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        """``(batch, len, d_model)`` → ``(batch, heads, len, d_head)``."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:
        """``(batch, heads, len, d_head)`` → ``(batch, len, d_model)``."""
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values, each ``(batch, heads, src_len, d_head)``."""
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        p = self.dropout if self.training else 0.0
        if self.training and q.device.type == "cpu":
            # CPU training: for NMT's short sentences SDPA's CPU kernels are slow in bf16
            # (flash backward ~5x, "math" ~2x slower than this); written out, a whole
            # training step is ~8% faster (mt/train, bench/train_speed.py).
            scores = torch.matmul(q, k.transpose(-1, -2)) * (self.d_head**-0.5)  # (b, h, tq, tk)
            if causal:
                future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu_(1)
                scores = scores.masked_fill(future, float("-inf"))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
            return torch.matmul(F.dropout(probs, p) if p else probs, v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)

    def _attend_step(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Attention for incremental decoding (a few queries per row, no dropout), written
        out as matmul → softmax → matmul instead of ``scaled_dot_product_attention``.

        Why: on CPU with several threads, SDPA's fused kernel splits its work by
        ``batch * heads``, so one sentence's result changes in the last bits with the batch
        it is decoded in; the plain matmuls compute every ``(batch, head)`` alike, which keeps
        decoding batch-invariant (see ``mt/decode/shapes.py``). For short queries it is no slower.
        """
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.d_head**-0.5)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.matmul(scores.softmax(dim=-1), v)

    def _attend_cached(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """One query per row over the self-attention cache: ``q`` ``(n, heads, 1, d_head)``,
        ``k``/``v`` ``(n, heads, steps, d_head)`` → ``(n, heads, 1, d_head)``.

        Broadcast multiply + sum instead of matmuls: a batched matmul with one query row is
        ``n * heads`` tiny matrix-vector products, which MKL runs ~2.6x slower than these two
        vectorised reductions (self-attention of a 3-layer decoder went from 2.1 to 0.8 ms per
        layer and step for 64 sentences × beam 5 on one thread). Each output element is reduced
        alone, in the same order whatever the batch, so decoding stays batch-invariant.
        """
        scores = (q * k).sum(-1) * (self.d_head**-0.5)  # (n, heads, steps)
        return (scores.softmax(dim=-1).unsqueeze(-1) * v).sum(2, keepdim=True)

    def self_attention(self, x: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        """Full-sequence self-attention. ``x``: ``(batch, len, d_model)``; ``mask``:
        ``(batch, 1, 1, len)`` bool, True where attending is allowed."""
        q, k, v = (self._heads(t) for t in self.qkv_proj(x).chunk(3, dim=-1))
        return self.out_proj(self._merge(self._sdpa(q, k, v, mask, causal)))

    def self_attention_tokens(self, x: Tensor, real: Tensor, mask: Tensor) -> Tensor:
        """Encoder self-attention over the real tokens only. ``x``: ``(tokens, d_model)``, the
        rows of a padded ``(batch, len, d_model)`` where ``real`` ``(batch, len)`` is True;
        ``mask``: ``(batch, 1, 1, len)``. The projections skip the padding; attention runs
        padded (padding keys are zeros here, masked as always)."""
        qkv = x.new_zeros(*real.shape, x.shape[-1] * 3).index_put_((real,), self.qkv_proj(x))
        q, k, v = (self._heads(t) for t in qkv.chunk(3, dim=-1))
        return self.out_proj(self._merge(self._sdpa(q, k, v, mask, False))[real])

    def self_attention_step(self, x: Tensor, cache: "LayerCache") -> Tensor:
        """One decoding step. ``x``: ``(n, 1, d_model)``; writes this step's key/value into
        ``cache`` and attends over every step so far (``(n, heads, t, d_head)`` views)."""
        n, d = x.shape[0], self.n_heads * self.d_head
        q, kv = self.qkv_proj(x[:, 0]).split([d, 2 * d], dim=-1)  # (n, d), (n, 2d): k then v
        k, v = cache.append(kv.view(n, 2, self.n_heads, self.d_head))
        q = q.view(n, self.n_heads, 1, self.d_head)
        out = self._attend_cached(q, k, v)  # (n, h, 1, dh): same memory as (n, 1, d_model)
        return self.out_proj(out.view(n, 1, d))

    def cross_attention(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor, incremental: bool = False) -> Tensor:
        """``x``: ``(batch * group, tgt_len, d_model)``; ``k``/``v``: ``(batch, heads, src_len,
        d_head)``; ``mask``: ``(batch, 1, 1, src_len)``.

        ``group`` = rows of ``x`` per source sentence (the beam size while decoding, 1 in
        training). The group is folded into the query length so ``k``/``v`` are never copied.
        ``incremental``: one decoding step (uses :meth:`_attend_step`).
        """
        n, t, _ = x.shape
        b = k.shape[0]
        group = n // b
        q = self._heads(self.q_proj(x))  # (b*group, h, t, dh)
        if group > 1:
            q = q.view(b, group, self.n_heads, t, self.d_head).transpose(1, 2)
            q = q.reshape(b, self.n_heads, group * t, self.d_head)
        out = self._attend_step(q, k, v, mask) if incremental else self._sdpa(q, k, v, mask, False)  # (b, h, group*t, dh)
        if group > 1:
            out = out.view(b, self.n_heads, group, t, self.d_head).transpose(1, 2)
            out = out.reshape(n, self.n_heads, t, self.d_head)
        return self.out_proj(self._merge(out))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, activation: str, act_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.act = ACTIVATIONS[activation]
        self.act_dropout = nn.Dropout(act_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act_dropout(self.act(self.fc1(x))))


class Sublayer(nn.Module):
    """Residual wrapper with the pre/post LayerNorm switch:
    pre: ``x + drop(f(norm(x)))``; post: ``norm(x + drop(f(x)))``."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, fn) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        pre = cfg.norm == "pre"
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.attn_dropout, cross=False)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.act_dropout)
        self.attn_block = Sublayer(cfg.d_model, cfg.dropout, pre)
        self.ffn_block = Sublayer(cfg.d_model, cfg.dropout, pre)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.attn_block(x, lambda h: self.self_attn.self_attention(h, mask, causal=False))
        return self.ffn_block(x, self.ffn)

    def forward_tokens(self, x: Tensor, real: Tensor, mask: Tensor) -> Tensor:
        """:meth:`forward` on the real tokens only, ``x``: ``(tokens, d_model)`` (see
        :meth:`Attention.self_attention_tokens`)."""
        x = self.attn_block(x, lambda h: self.self_attn.self_attention_tokens(h, real, mask))
        return self.ffn_block(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        pre = cfg.norm == "pre"
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, cfg.attn_dropout, cross=False)
        self.cross_attn = Attention(cfg.d_model, cfg.n_heads, cfg.attn_dropout, cross=True)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.act_dropout)
        self.self_block = Sublayer(cfg.d_model, cfg.dropout, pre)
        self.cross_block = Sublayer(cfg.d_model, cfg.dropout, pre)
        self.ffn_block = Sublayer(cfg.d_model, cfg.dropout, pre)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, src_mask: Tensor) -> Tensor:
        x = self.self_block(x, lambda h: self.self_attn.self_attention(h, None, causal=True))
        x = self.cross_block(x, lambda h: self.cross_attn.cross_attention(h, k, v, src_mask))
        return self.ffn_block(x, self.ffn)

    def step(self, x: Tensor, cache: "LayerCache", src_mask: Tensor) -> Tensor:
        x = self.self_block(x, lambda h: self.self_attn.self_attention_step(h, cache))
        x = self.cross_block(
            x, lambda h: self.cross_attn.cross_attention(h, cache.cross_k, cache.cross_v, src_mask, incremental=True)
        )
        return self.ffn_block(x, self.ffn)


# --------------------------------------------------------------------------- decoding state


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


@dataclass
class EncoderOut:
    """``memory``: ``(batch, src_len, d_model)``; ``pad_mask``: ``(batch, src_len)``, True at padding."""

    memory: Tensor
    pad_mask: Tensor

    @property
    def attn_mask(self) -> Tensor:
        """``(batch, 1, 1, src_len)`` bool, True where attending is allowed."""
        return (~self.pad_mask)[:, None, None, :]


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
        # output shortlist (mt/decode/shortlist.py): sorted target ids (V',); None = all
        self.vocab: Tensor | None = None
        # the output layer restricted to the shortlist: (rows, d_model) -> (rows, V')
        self.out_layer: Callable[[Tensor], Tensor] | None = None

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


# --------------------------------------------------------------------------- model


class Transformer(nn.Module):
    """Encoder-decoder transformer; see the module docstring for the two decoding modes."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg = cfg.resolved()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (take it from the SentencePiece model)")
        self.cfg = cfg
        # Whether decoding pads rows (and encodes padding tokens) so MKL's row-count-dependent
        # linear kernels stay batch-invariant (mt/decode/shapes.py). Inference copies turn it
        # off where it buys nothing: oneDNN-packed layers give each row the same bits for any
        # row count (mt/decode/packed.py); int8 layers depend on the whole batch anyway
        # (mt/decode/quantize.py). Then the encoder also skips padding tokens.
        self.pad_rows = True
        d = cfg.d_model
        self.embed_scale = math.sqrt(d) if cfg.scale_embedding else 1.0
        self.src_embed = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_id)
        self.tgt_embed = (
            self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_id)
        )
        if cfg.positions == "learned":
            self.src_pos = nn.Embedding(cfg.max_positions, d)
            self.tgt_pos = nn.Embedding(cfg.max_positions, d)
        else:
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_positions, d), persistent=False)
        if cfg.layernorm_embedding:
            self.src_embed_norm = nn.LayerNorm(d)
            self.tgt_embed_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        pre = cfg.norm == "pre"
        self.encoder_norm = nn.LayerNorm(d) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if pre else nn.Identity()
        if not cfg.tie_output:
            self.output_proj = nn.Linear(d, cfg.vocab_size, bias=False)
        if cfg.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(cfg.vocab_size))
        self.reset_parameters()

    @property
    def decoder_start_id(self) -> int:
        return self.cfg.bos_id if self.cfg.decoder_start_id is None else self.cfg.decoder_start_id

    def reset_parameters(self) -> None:
        """Xavier-uniform projections, N(0, d^-1/2) embeddings (so scaled embeddings have unit
        variance), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for emb in {id(e): e for e in (self.src_embed, self.tgt_embed)}.values():
            nn.init.normal_(emb.weight, mean=0.0, std=self.cfg.d_model**-0.5)
            nn.init.zeros_(emb.weight[self.cfg.pad_id])

    # ---- embeddings

    def _positions(self, start: int, length: int, which: str) -> Tensor:
        if start + length > self.cfg.max_positions:
            raise ValueError(
                f"sequence of {start + length} positions exceeds model.max_positions={self.cfg.max_positions}"
            )
        if self.cfg.positions == "learned":
            table = self.src_pos if which == "src" else self.tgt_pos
            return table.weight[start : start + length]
        return self.pos_table[start : start + length]

    def _embed(self, tokens: Tensor, start: int, which: str) -> Tensor:
        """``(batch, len)`` → ``(batch, len, d_model)``."""
        emb = self.src_embed if which == "src" else self.tgt_embed
        x = emb(tokens) * self.embed_scale + self._positions(start, tokens.shape[1], which)
        if self.cfg.layernorm_embedding:
            x = (self.src_embed_norm if which == "src" else self.tgt_embed_norm)(x)
        return self.dropout(x)

    def untie_output(self) -> None:
        """Give a tied model its own output layer, a copy of the embedding matrix, so that layer
        can be converted for inference (int8, packed) while the embedding lookup stays as it is.
        A no-op for a model that already has one."""
        if getattr(self, "output_proj", None) is None:
            weight = self.tgt_embed.weight
            self.output_proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            self.output_proj.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)

    def output_weight(self) -> Tensor:
        """The output layer's ``(vocab, d_model)`` weight as a float tensor (dequantised when
        ``quantize_int8`` replaced the layer)."""
        proj = getattr(self, "output_proj", None)
        if proj is None:
            return self.tgt_embed.weight
        w = proj.weight() if callable(proj.weight) else proj.weight
        return w.dequantize() if w.is_quantized else w

    def output_logits(self, h: Tensor, state: DecoderState | None = None) -> Tensor:
        """``(..., d_model)`` → ``(..., vocab)``; with a decoding ``state`` that carries its own
        output layer (``start_state``), ``(rows, d_model)`` → ``(rows, V')`` through that."""
        if state is not None and state.out_layer is not None:
            return state.out_layer(h)
        proj = getattr(self, "output_proj", None)  # also set on tied models by quantize_int8
        logits = proj(h) if proj is not None else F.linear(h, self.tgt_embed.weight)
        if self.cfg.final_logits_bias:
            logits = logits + self.final_logits_bias
        return logits

    # ---- full-sequence passes

    def encode(self, src: Tensor) -> EncoderOut:
        """``src``: ``(batch, src_len)`` token ids, right-padded with ``pad_id``."""
        pad_mask = src.eq(self.cfg.pad_id)
        x = self._embed(src, 0, "src")
        mask = (~pad_mask)[:, None, None, :]
        if not self.pad_rows and not self.training:
            # skip the padding in the projections and feed-forward layers (batch-invariant
            # sources are padded to >= 32 positions, ~2x a typical sentence's tokens); with
            # MKL's row-count-dependent kernels that would break batch invariance
            real = ~pad_mask
            h = x[real]  # (tokens, d_model)
            for layer in self.encoder_layers:
                h = layer.forward_tokens(h, real, mask)
            return EncoderOut(x.new_zeros(x.shape).index_put_((real,), self.encoder_norm(h)), pad_mask)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return EncoderOut(self.encoder_norm(x), pad_mask)

    def decode(self, tgt_in: Tensor, enc: EncoderOut) -> Tensor:
        """Teacher-forced decoder. ``tgt_in``: ``(batch, tgt_len)`` starting with the decoder
        start token → logits ``(batch, tgt_len, vocab)``."""
        x = self._embed(tgt_in, 0, "tgt")
        mask = enc.attn_mask
        for layer in self.decoder_layers:
            k, v = layer.cross_attn.project_kv(enc.memory)
            x = layer(x, k, v, mask)
        return self.output_logits(self.decoder_norm(x))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """``(batch, src_len)``, ``(batch, tgt_len)`` → logits ``(batch, tgt_len, vocab)``."""
        return self.decode(tgt_in, self.encode(src))

    # ---- incremental decoding

    def start_state(self, enc: EncoderOut, beam: int = 1, vocab: Tensor | None = None) -> DecoderState:
        """Project cross-attention keys/values once per source sentence; ``beam`` rows per
        sentence will share them. ``vocab``: sorted target ids ``(V',)`` to compute logits for
        (a shortlist); :meth:`decode_step` then returns ``(rows, V')``."""
        layers = [LayerCache(*layer.cross_attn.project_kv(enc.memory)) for layer in self.decoder_layers]
        state = DecoderState(layers, enc.attn_mask, beam)
        dev, dtype = enc.memory.device, enc.memory.dtype
        if vocab is not None:
            state.vocab = vocab.to(dev)
            state.out_layer = self._output_rows(state.vocab, dtype)
        return state

    def _output_rows(self, ids: Tensor, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
        """The output layer (final-logits bias included) for target ids ``ids`` only. An
        output layer that can build its own restriction (``rows(ids)``, e.g. the packed one of
        ``mt.decode.packed``) does; otherwise a plain ``F.linear`` over the gathered rows."""
        bias = self.final_logits_bias.index_select(0, ids).to(dtype) if self.cfg.final_logits_bias else None
        proj = getattr(self, "output_proj", None)
        if hasattr(proj, "rows"):
            layer = proj.rows(ids)
            return layer if bias is None else (lambda h: layer(h).add_(bias))
        weight = self.output_weight().index_select(0, ids).to(dtype)
        return lambda h: F.linear(h, weight, bias)

    def decode_step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """Feed one token per row. ``tokens``: ``(batch * beam,)`` → logits ``(batch * beam, vocab)``
        (``(batch * beam, V')`` over ``state.vocab`` with a shortlist).

        Rows are ordered sentence-major (the beams of sentence 0 first). Advances
        ``state.step`` and extends its self-attention caches.
        """
        x = self._embed(tokens[:, None], state.step, "tgt")
        for layer, cache in zip(self.decoder_layers, state.layers):
            x = layer.step(x, cache, state.src_mask)
        state.step += 1
        return self.output_logits(self.decoder_norm(x[:, 0]), state)

    # ---- accounting

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, src_len: int, tgt_len: int) -> float:
        """Approximate training FLOPs (forward + backward = 3 × forward) per target token,
        counting matmuls only (2 FLOPs per multiply-add)."""
        c = self.cfg
        d, f = c.d_model, c.ffn_dim
        enc_layer = 2 * (4 * d * d + 2 * d * f) + 2 * 2 * src_len * d
        dec_layer = 2 * (8 * d * d + 2 * d * f) + 2 * 2 * (tgt_len + src_len) * d
        per_src_tok = c.enc_layers * enc_layer
        per_tgt_tok = c.dec_layers * dec_layer + 2 * d * c.vocab_size
        return 3.0 * (per_tgt_tok + per_src_tok * src_len / max(tgt_len, 1))
