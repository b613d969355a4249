"""What decoding runs: :class:`DecodingModel`, a trained network prepared for inference.

A :class:`mt.model.Transformer` is what training produces. Decoding may run a *variant* of
it — cast to bf16/fp16, with oneDNN-packed linear layers (:mod:`mt.decode.packed`), int8
quantised (:mod:`mt.decode.quantize`) — restricted per batch to an output shortlist
(:mod:`mt.decode.shortlist`), and padded by the :class:`~mt.decode.shapes.PaddingRule` that
the invariance probe (:mod:`mt.decode.invariance`) chose for this CPU and variant. All of
that lives here, in one explicit object the searches take, instead of attributes patched
onto the network.

:func:`prepare` builds one from a network; :func:`load` from a model directory (the one
loader the CLI, the server and the benches use).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt.config import DecodeOptions
from mt.decode.invariance import padding_rule
from mt.decode.packed import pack_linears_, packing_available
from mt.decode.precision import PrecisionChoice
from mt.decode.precision import resolve as resolve_precision
from mt.decode.quantize import quantize_int8_
from mt.decode.shapes import PaddingRule
from mt.decoder_state import DecoderState
from mt.errors import ConfigError
from mt.model import EncoderOut, Transformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class OutputLayer:
    """The output projection one search uses: ``(rows, d_model)`` → ``(rows, V')`` logits.
    ``vocab``: the sorted target ids ``(V',)`` of a shortlist, or None for all ``V``."""

    fn: Callable[[Tensor], Tensor]
    vocab: Optional[Tensor] = None

    def __call__(self, h: Tensor) -> Tensor:
        return self.fn(h)


@dataclass
class DecodingModel:
    """A network ready for decoding and how it was made.

    ``net``: the (possibly packed / cast / quantised) copy decoding runs; ``dtype``: its
    weights' precision name; ``precision``: why that one (``dtype: auto``,
    :mod:`mt.decode.precision`); ``packed`` / ``int8``: which variant; ``padding``: the
    batch-invariance rule (:mod:`mt.decode.shapes`).
    """

    net: Transformer
    device: torch.device
    dtype: str = "fp32"
    packed: bool = False
    int8: bool = False
    padding: PaddingRule = PaddingRule()
    precision: PrecisionChoice = PrecisionChoice("fp32", "as requested")

    @property
    def cfg(self):
        return self.net.cfg

    @property
    def decoder_start_id(self) -> int:
        return self.net.decoder_start_id

    def describe(self) -> str:
        """E.g. ``fp32, oneDNN-packed`` — for logs and reports."""
        kind = "int8 (dynamic)" if self.int8 else self.dtype
        return kind + (", oneDNN-packed" if self.packed else "")

    def encode(self, src: Tensor) -> EncoderOut:
        """``src``: ``(batch, src_len)`` → encoder output. Without padding rows (the linear
        layers' rows do not depend on the row count) the projections and feed-forward layers
        skip padding tokens: invariant sources are padded to >= 32 positions, ~2× a typical
        sentence's tokens."""
        if self.padding.rows == 1:
            return _encode_real_tokens(self.net, src)
        return self.net.encode(src)

    def start(self, enc: EncoderOut, beam: int, vocab: Optional[Tensor] = None) -> tuple[DecoderState, OutputLayer]:
        """The decoder state for ``beam`` rows per sentence and the output layer for this
        search (over ``vocab`` ids only when a shortlist gives them)."""
        return self.net.start_state(enc, beam), self.output_layer(vocab)

    def decode_step(self, tokens: Tensor, state: DecoderState, out: OutputLayer) -> Tensor:
        """``tokens``: ``(rows,)`` → logits ``(rows, V')``."""
        return out(self.net.decode_hidden_step(tokens, state))

    def output_layer(self, vocab: Optional[Tensor] = None) -> OutputLayer:
        if vocab is None:
            return OutputLayer(self.net.output_logits)
        vocab = vocab.to(self.device)
        return OutputLayer(_restricted_output(self.net, vocab), vocab)


# --------------------------------------------------------------------------- building


def prepare(
    model: Transformer,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
    int8: bool = False,
    pack: bool = True,
    probe: bool = True,
) -> DecodingModel:
    """What decoding runs for ``model``: an inference copy (``model`` is never changed),
    int8-quantised (CPU only), or cast to ``dtype``, then with oneDNN-packed linear layers on
    CPU when ``pack``. ``probe``: measure the padding rule on this machine
    (:func:`mt.decode.invariance.padding_rule`, remembered per CPU, shape and variant); else
    an unprobed rule (rows of 4, ``invariant=False``), e.g. for validation during training.
    ``dtype="auto"``: the precision :func:`mt.decode.precision.resolve` picks for this machine."""
    DecodeOptions(dtype=dtype, int8=int8)  # the same checks as the flags: ConfigError naming them
    device = resolve_device(device)
    if int8 and device.type != "cpu":
        raise ConfigError("--int8: CPU-only (dynamic quantisation); use --device cpu")
    choice = choose_precision(dtype, device, int8, model)
    dm = _build(model, device, choice, int8, pack, probe)
    if dtype == "auto" and probe and choice.dtype != "fp32" and not dm.padding.invariant:
        # the default path keeps its guarantee: the faster precision only where it holds
        why = f"auto: fp32, {choice.dtype} was faster ({choice.speedup}x) but not batch-invariant on this CPU"
        dm = _build(model, device, PrecisionChoice("fp32", why, choice.speedup), int8, pack, probe)
    return dm


def choose_precision(dtype: str, device: torch.device, int8: bool, model: Transformer) -> PrecisionChoice:
    """``dtype`` resolved for ``model`` on ``device`` (``auto``: :func:`mt.decode.precision.resolve`,
    whose probe times this module's unprobed CPU variants)."""
    return resolve_precision(dtype, device, int8, model, lambda m, d: prepare(m, "cpu", d, probe=False))


def _build(model: Transformer, device: torch.device, choice: PrecisionChoice, int8: bool, pack: bool,
           probe: bool) -> DecodingModel:  # fmt: skip
    net, packed = _variant_net(model, device, choice.dtype, int8, pack)
    dm = DecodingModel(net.eval(), device, choice.dtype, packed, int8, precision=choice)
    if probe:
        dm.padding = padding_rule(dm)
    return dm


def _variant_net(model: Transformer, device: torch.device, dtype: str, int8: bool, pack: bool) -> tuple[Transformer, bool]:
    """An inference copy of ``model`` (no gradients) for the variant, and whether it is packed."""
    net = copy.deepcopy(model).to(device=device, dtype=DTYPES[dtype]).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if int8:
        untie_output(net)
        return quantize_int8_(net), False
    if pack and device.type == "cpu" and packing_available(DTYPES[dtype]):
        untie_output(net)
        return pack_linears_(net), True
    return net, False


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device: {e}") from None


def untie_output(model: Transformer) -> None:
    """Give a tied model its own output layer, a copy of the embedding matrix, so that layer
    can be converted for inference (int8, packed) while the embedding lookup stays as it is.
    A no-op for a model that already has one."""
    if getattr(model, "output_proj", None) is None:
        weight = model.tgt_embed.weight
        model.output_proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        model.output_proj.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)


# --------------------------------------------------------------------------- pieces


def _output_weight(net: Transformer) -> Tensor:
    """The output layer's ``(vocab, d_model)`` float weight (dequantised for int8)."""
    proj = getattr(net, "output_proj", None)
    if proj is None:
        return net.tgt_embed.weight
    w = proj.weight() if callable(proj.weight) else proj.weight
    return w.dequantize() if w.is_quantized else w


def _restricted_output(net: Transformer, ids: Tensor) -> Callable[[Tensor], Tensor]:
    """The output layer (final-logits bias included) for target ids ``ids`` only: a packed
    layer packs its own restriction, anything else multiplies by the gathered rows."""
    dtype = next(net.parameters()).dtype
    bias = net.final_logits_bias.index_select(0, ids).to(dtype) if net.cfg.final_logits_bias else None
    proj = getattr(net, "output_proj", None)
    if hasattr(proj, "rows"):  # mt.decode.packed.PackedLinear
        layer = proj.rows(ids)
        return layer if bias is None else (lambda h: layer(h).add_(bias))
    weight = _output_weight(net).index_select(0, ids).to(dtype)
    return lambda h: F.linear(h, weight, bias)


def _encode_real_tokens(net: Transformer, src: Tensor) -> EncoderOut:
    """:meth:`Transformer.encode` with the projections and feed-forward layers run on the
    real tokens only (``(tokens, d_model)`` rows); attention runs padded, padding keys
    masked as always. Only for kernels whose rows do not depend on the row count."""
    pad_mask = src.eq(net.cfg.pad_id)
    real, mask = ~pad_mask, (~pad_mask)[:, None, None, :]
    x = net._embed(src, 0, "src")
    h = x[real]
    for layer in net.encoder_layers:
        h = layer.attn_block(h, lambda t, attn=layer.self_attn: _self_attention_tokens(attn, t, real, mask))
        h = layer.ffn_block(h, layer.ffn)
    return EncoderOut(x.new_zeros(x.shape).index_put_((real,), net.encoder_norm(h)), pad_mask)


def _self_attention_tokens(attn, x: Tensor, real: Tensor, mask: Tensor) -> Tensor:
    """Encoder self-attention for ``x`` ``(tokens, d_model)``, the rows of a padded
    ``(batch, len, d_model)`` where ``real`` ``(batch, len)`` is True; ``mask``
    ``(batch, 1, 1, len)``. Padding keys/values are zeros, masked."""
    qkv = x.new_zeros(*real.shape, x.shape[-1] * 3).index_put_((real,), attn.qkv_proj(x))
    q, k, v = (attn._heads(t) for t in qkv.chunk(3, dim=-1))
    return attn.out_proj(attn._merge(attn._sdpa(q, k, v, mask, False))[real])
