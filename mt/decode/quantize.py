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
batch-invariant, unlike fp32 decoding.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from mt.model import Transformer


def quantize_int8(model: Transformer, output_proj: bool = True) -> Transformer:
    """A copy of ``model`` (CPU, eval) with int8 dynamically quantised ``nn.Linear`` layers.

    ``output_proj=False`` keeps a tied output projection in fp32 (slower, a little closer
    to the fp32 outputs).
    """
    model = copy.deepcopy(model).cpu().eval()
    if output_proj:
        # The output projection is ~15% of a decoder step's multiply-adds; applied with
        # F.linear on the tied embedding it would stay fp32. Give the copy its own Linear
        # (same weights) so it is quantised too; the embedding lookup stays fp32.
        model.untie_output()
    # activation scales are per batch, so int8 decoding is not batch-invariant whatever the
    # row count: padding rows for MKL's sake (mt/decode/shapes.py) would be wasted work
    model.pad_rows = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.ao deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
