"""Int8 decoding (``mt.decode.quantize``): a quantised copy, close to the fp32 model."""

import torch

from mt.config import DecodeOptions
from mt.decode.search import beam_search, greedy_search
from mt.decode.variant import prepare
from _decode_support import plain, random_sources, src_tensor, toy_model


def test_int8_copy_quantises_output_projection_and_leaves_original():
    model = toy_model()
    q = prepare(model, "cpu", int8=True)
    assert q.int8 and isinstance(q.net.output_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert not hasattr(model, "output_proj")  # the tied fp32 model is untouched
    assert model.tgt_embed.weight is model.src_embed.weight
    ids = random_sources(24, seed=5)
    fp32 = greedy_search(plain(model), src_tensor(ids), DecodeOptions(beam=1))
    int8 = greedy_search(q, src_tensor(ids), DecodeOptions(beam=1))
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(fp32, int8))
    assert same >= 0.75 * len(ids)  # 20 of 24 when written


def test_int8_pads_no_rows():
    """Padding rows only buy batch invariance; int8's per-batch activation scales rule that
    out, so an int8 model decodes just its own rows and says it is not invariant."""
    q = prepare(toy_model(), "cpu", int8=True)
    assert q.padding.rows == 1 and not q.padding.invariant
    rows = []
    step = q.decode_step
    q.decode_step = lambda tokens, state, out: rows.append(tokens.shape[0]) or step(tokens, state, out)
    beam_search(q, src_tensor(random_sources(1, seed=4, max_len=9)), DecodeOptions(beam=5))
    assert rows[0] == 1 and set(rows[1:]) == {5}
