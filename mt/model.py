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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt.config import ModelConfig
from mt.decoder_state import DecoderState, LayerCache


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


def dropout_mask_bits(shape: torch.Size, p: float) -> tuple[Tensor, float]:
    """A keep mask for inverted dropout from 16 random bits per element, and its scale.

    torch's CPU dropout draws one Bernoulli sample per element, a large share of a small
    model's training step (bench/results.md); one 64-bit draw here feeds four elements. ``p`` is
    rounded to a multiple of 2^-16 and the scale is 1 / (1 - that rounded p), so the
    expected output still equals the input exactly.
    """
    n = math.prod(shape)
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    lanes = bits.view(torch.int16)[:n].view(shape)  # each uniform on [-32768, 32767]
    dropped = round(p * 65536)
    return lanes >= dropped - 32768, 65536 / (65536 - dropped)


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode inverted dropout: :func:`dropout_mask_bits` on CPU, torch's fused
    kernel elsewhere."""
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep, scale = dropout_mask_bits(x.shape, p)
    return torch.where(keep, x * scale, 0.0)


class Dropout(nn.Module):
    """``nn.Dropout`` with cheaper masks on CPU (:func:`dropout_mask_bits`); CUDA keeps
    torch's fused kernel. Identity in eval mode or when ``p`` is 0."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p) if self.training and self.p else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
            return torch.matmul(dropout(probs, p) if p else probs, v)
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
        self.act_dropout = Dropout(act_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act_dropout(self.act(self.fc1(x))))


class Sublayer(nn.Module):
    """Residual wrapper with the pre/post LayerNorm switch:
    pre: ``x + drop(f(norm(x)))``; post: ``norm(x + drop(f(x)))``."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
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


@dataclass
class EncoderOut:
    """``memory``: ``(batch, src_len, d_model)``; ``pad_mask``: ``(batch, src_len)``, True at padding."""

    memory: Tensor
    pad_mask: Tensor

    @property
    def attn_mask(self) -> Tensor:
        """``(batch, 1, 1, src_len)`` bool, True where attending is allowed."""
        return (~self.pad_mask)[:, None, None, :]


# --------------------------------------------------------------------------- model


class Transformer(nn.Module):
    """Encoder-decoder transformer; see the module docstring for the two decoding modes."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg = cfg.resolved()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (take it from the SentencePiece model)")
        self.cfg = cfg
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
        self.dropout = Dropout(cfg.dropout)
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
        return self.cfg.start_id

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

    def output_logits(self, h: Tensor) -> Tensor:
        """``(..., d_model)`` → ``(..., vocab)``."""
        proj = getattr(self, "output_proj", None)  # None: tied to the target embedding
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

    def start_state(self, enc: EncoderOut, beam: int = 1) -> DecoderState:
        """Project cross-attention keys/values once per source sentence; ``beam`` rows per
        sentence will share them."""
        layers = [LayerCache(*layer.cross_attn.project_kv(enc.memory)) for layer in self.decoder_layers]
        return DecoderState(layers, enc.attn_mask, beam)

    def decode_hidden_step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """Feed one token per row. ``tokens``: ``(rows,)`` → final hidden states ``(rows,
        d_model)`` (decoder norm applied). Rows are ordered sentence-major (the beams of
        sentence 0 first). Advances ``state.step`` and extends its self-attention caches."""
        x = self._embed(tokens[:, None], state.step, "tgt")
        for layer, cache in zip(self.decoder_layers, state.layers):
            x = layer.step(x, cache, state.src_mask)
        state.step += 1
        return self.decoder_norm(x[:, 0])

    def decode_step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """:meth:`decode_hidden_step`, then the output layer: logits ``(rows, vocab)``."""
        return self.output_logits(self.decode_hidden_step(tokens, state))

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
