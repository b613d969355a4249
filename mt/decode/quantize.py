"""Int8 CPU inference: dynamic quantisation of the linear layers (``mt translate --int8``).

``torch.ao.quantization.quantize_dynamic`` stores ``nn.Linear`` weights as int8 and
quantises activations on the fly per batch; attention, LayerNorm and embeddings stay fp32.
The output projection is quantised too (a tied one gets its own int8 copy of the
embedding matrix). The API is deprecated in favour of torchao but still works in the
pinned torch, needs no extra dependency, and runs on any x86/ARM CPU.

torchao was tried (0.18.0, the release that installs next to torch 2.13): its
``Int8DynamicActivationInt8WeightConfig`` runs here, but in eager mode it decoded Multi30k
test2016 at beam 5 at 107-111 sent/s against 193 for ``quantize_dynamic`` (same BLEU, 40.96;
two alternating runs in one script on the 2-core reference VM, 2026-11-27). Its CPU speed
comes with ``torch.compile``, which this project does not use for decoding; so
``quantize_dynamic`` stays until it is removed.

Dynamic activation scales are computed per batch, so int8 outputs are *not*
batch-invariant (the invariance probe does not even try: :mod:`mt.decode.invariance`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mt.model import Transformer


def quantize_int8_(model: Transformer) -> Transformer:
    """Quantise an inference copy's ``nn.Linear`` layers to int8 in place (dynamic
    activation scales). :func:`mt.decode.variant.prepare` makes the copy and first unties a
    tied output projection: that layer is ~15% of a decoder step's multiply-adds and would
    otherwise stay fp32; the embedding lookup stays fp32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.ao deprecation notice
        return torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
