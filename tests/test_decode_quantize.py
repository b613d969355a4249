"""Int8 decoding (``mt.decode.quantize``): a quantised copy, close to the fp32 model."""

import torch

from mt.decode.options import DecodeOptions
from mt.decode.quantize import quantize_int8
from mt.decode.search import greedy_search
from _decode_support import random_sources, src_tensor, toy_model


def test_int8_copy_quantises_output_projection_and_leaves_original():
    model = toy_model()
    q = quantize_int8(model)
    assert isinstance(q.output_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert not hasattr(model, "output_proj")  # the tied fp32 model is untouched
    assert model.tgt_embed.weight is model.src_embed.weight
    ids = random_sources(24, seed=5)
    fp32 = greedy_search(model, src_tensor(ids), DecodeOptions(beam=1))
    int8 = greedy_search(q, src_tensor(ids), DecodeOptions(beam=1))
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(fp32, int8))
    assert same >= 0.75 * len(ids)  # 20 of 24 when written


def test_int8_can_keep_fp32_output_projection():
    q = quantize_int8(toy_model(), output_proj=False)
    assert not hasattr(q, "output_proj")


def test_int8_pads_no_rows():
    """Padding rows only buy batch invariance from MKL's fp32 kernels; int8's per-batch
    activation scales rule that out, so an int8 model decodes just its own rows."""
    from mt.decode.search import beam_search
    from mt.decode.shapes import row_multiple

    q = quantize_int8(toy_model())
    assert row_multiple(toy_model()) == 4 and row_multiple(q) == 1
    rows = []
    step = q.decode_step
    q.decode_step = lambda tokens, state: rows.append(tokens.shape[0]) or step(tokens, state)
    beam_search(q, src_tensor(random_sources(1, seed=4, max_len=9)), DecodeOptions(beam=5))
    assert rows[0] == 1 and set(rows[1:]) == {5}
