"""oneDNN-packed linear layers for CPU decoding (fp32 and bf16).

``F.linear`` on CPU calls MKL's ``sgemm`` with the weight in its stored ``(out, in)`` layout,
re-blocking it on every call. oneDNN can reorder a weight once into the blocked layout its
kernels read (``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile``'s CPU
freezing pass uses) and multiply by it directly (``_linear_pointwise``), optionally with the
activation fused. Measured on the 2-core reference VM, 160 rows (32 sentences × beam 5):

==============================  =================  =================
shape (rows × in × out)         F.linear, 2 thr.   packed, 2 threads
==============================  =================  =================
160 × 512 × 1536 (48M model)    2.18 ms            1.25 ms
160 × 256 × 8000 (output layer) 11.2 ms            4.6 ms
160 × 256 × 768 (6M model)      0.74 ms            0.57 ms
==============================  =================  =================

On the CPUs measured so far each output row came out bit-identical whatever the number of
rows, so decoding needs no padding rows (a sentence decoded alone at beam 5 runs 5 rows
instead of 20, 1.7× faster on one thread); whether that holds on *this* CPU is probed at run
time (:mod:`mt.decode.invariance`), not assumed.

:func:`pack_linears_` turns an inference copy's ``nn.Linear`` layers into
:class:`PackedLinear`; :func:`packing_available` says whether this torch has the ops.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mt.model import FeedForward, Transformer

# activations oneDNN can apply inside the matmul (name in mt.model.ACTIVATIONS -> post-op, algorithm)
FUSED_ACTIVATIONS = {F.relu: ("relu", ""), F.silu: ("swish", ""), F.gelu: ("gelu", "none")}


class PackedLinear(nn.Module):
    """``y = act(x @ W^T + b)`` with ``W`` reordered once for oneDNN. ``x``: ``(..., in)``.

    ``weight``/``bias`` stay as (frozen) parameters so the module still reports its size,
    device and dtype like an ``nn.Linear``; the packed copy is what ``forward`` reads.
    """

    def __init__(self, weight: Tensor, bias: Optional[Tensor], post_op: str = "none", algorithm: str = "") -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = weight.shape
        self.post_op, self.algorithm = post_op, algorithm
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach())

    def forward(self, x: Tensor) -> Tensor:
        return _linear_op()(x, self.packed, self.bias, self.post_op, [], self.algorithm or None)

    def rows(self, ids: Tensor) -> "PackedLinear":
        """The layer for output features ``ids`` only (an output shortlist), packed anew."""
        bias = None if self.bias is None else self.bias.index_select(0, ids)
        return PackedLinear(self.weight.index_select(0, ids), bias, self.post_op, self.algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, post_op={self.post_op}"


@functools.lru_cache(maxsize=None)
def _linear_op():
    """The op overload itself: resolving ``torch.ops.mkldnn._linear_pointwise`` by attribute
    lookups on every call showed up in decoding profiles."""
    return torch.ops.mkldnn._linear_pointwise.default


@functools.lru_cache(maxsize=None)
def packing_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch has the oneDNN ops (x86/ARM CPU builds do) and they take ``dtype`` on
    this CPU: oneDNN packs bf16 weights only where the CPU has bf16 conversion instructions
    (AVX512-BW/VL/DQ or AVX-NE-CONVERT), so the check runs one tiny packed product."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.ones(4, 4, dtype=dtype)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 4, dtype=dtype), torch.ops.mkldnn._reorder_linear_weight(w),
                                                 None, "none", [], None)  # fmt: skip
        return bool(torch.equal(out.float(), torch.full((2, 4), 4.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _identity(x: Tensor) -> Tensor:
    return x


def pack_linears_(model: Transformer) -> Transformer:
    """Replace ``model``'s ``nn.Linear`` layers by oneDNN-packed ones, in place (an inference
    copy: :func:`mt.decode.variant.prepare` makes it and unties a tied output projection
    first, so the output layer is packed too). Feed-forward activations are fused into the
    first layer where oneDNN supports them."""
    for module in list(model.modules()):
        if isinstance(module, FeedForward) and module.act in FUSED_ACTIVATIONS:
            post_op, algorithm = FUSED_ACTIVATIONS[module.act]
            module.fc1 = PackedLinear(module.fc1.weight, module.fc1.bias, post_op, algorithm)
            module.act = _identity
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinear(child.weight, child.bias))
    return model
