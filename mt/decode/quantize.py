"""Int8 CPU inference: dynamic quantisation of the linear layers (``mt translate --int8``).

``torch.ao.quantization.quantize_dynamic`` stores ``nn.Linear`` weights as int8 and
quantises activations on the fly per batch; attention, LayerNorm, embeddings and the
output projection (a tied embedding, applied with ``F.linear``) stay fp32. The API is
deprecated in favour of torchao but still works in the pinned torch, needs no extra
dependency, and runs on any x86/ARM CPU.

Dynamic activation scales are computed per batch, so int8 outputs are *not*
batch-invariant, unlike fp32 decoding.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from mt.model import Transformer


def quantize_int8(model: Transformer) -> Transformer:
    """A copy of ``model`` (CPU, eval) with int8 dynamically quantised ``nn.Linear`` layers."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.ao deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
