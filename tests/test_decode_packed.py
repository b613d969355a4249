"""oneDNN-packed linear layers (mt/decode/packed.py): same results, batch-invariant rows."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mt.decode.options import DecodeOptions
from mt.decode.packed import PackedLinear, pack_linears, packing_available
from mt.decode.search import beam_search
from mt.decode.shapes import row_multiple
from mt.decode.translator import Translator
from _decode_support import IntText, random_sources, src_tensor, toy_model

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN linear ops")


@pytest.mark.parametrize("post_op,algorithm,act", [("none", "", lambda x: x), ("relu", "", F.relu),
                                                   ("swish", "", F.silu), ("gelu", "none", F.gelu)])
def test_packed_linear_matches_linear(post_op, algorithm, act):
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(96, 48, generator=g), torch.randn(96, generator=g)
    x = torch.randn(3, 7, 48, generator=g)
    for bias in (b, None):
        packed = PackedLinear(w, bias, post_op, algorithm)
        assert torch.allclose(packed(x), act(F.linear(x, w, bias)), atol=1e-4, rtol=1e-4)


def test_packed_rows_do_not_depend_on_the_row_count():
    g = torch.Generator().manual_seed(1)
    layer = PackedLinear(torch.randn(500, 64, generator=g), torch.randn(500, generator=g))
    x = torch.randn(60, 64, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        full = layer(x)
        for m in range(1, 60):
            assert torch.equal(layer(x[:m]), full[:m]) and torch.equal(layer(x[-m:]), full[-m:]), m
    finally:
        torch.set_num_threads(before)


def test_pack_linears_copies_and_decodes_the_same_batch_invariantly():
    model = toy_model()
    packed = pack_linears(model)
    assert not any(isinstance(m, PackedLinear) for m in model.modules())  # the original is untouched
    assert not any(type(m) is nn.Linear for m in packed.modules())
    assert isinstance(packed.output_proj, PackedLinear)  # the tied output layer too
    ids = random_sources(10, seed=3, max_len=15)
    opts = DecodeOptions(beam=3, n_best=2)
    plain, fast = beam_search(model, src_tensor(ids), opts), beam_search(packed, src_tensor(ids), opts)
    assert [[h.tokens for h in x] for x in plain] == [[h.tokens for h in x] for x in fast]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # alone or in any batch: identical tokens and scores
        tr = Translator(packed, IntText())
        texts = [" ".join(map(str, x)) for x in ids]
        batch = tr.translate(texts, opts)
        alone = [tr.translate([t], opts)[0] for t in reversed(texts)][::-1]
        assert [[(h.tokens, h.score) for h in x] for x in batch] == [[(h.tokens, h.score) for h in x] for x in alone]
    finally:
        torch.set_num_threads(before)


def _rows_per_step(model, beam: int) -> list[int]:
    """Decoder rows of each step when one sentence is beam-searched alone."""
    seen: list[int] = []
    step = model.decode_step

    def counting(tokens, state):
        seen.append(tokens.shape[0])
        return step(tokens, state)

    model.decode_step = counting
    try:
        beam_search(model, src_tensor(random_sources(1, seed=4, max_len=9)), DecodeOptions(beam=beam))
    finally:
        del model.decode_step
    return seen


def test_packed_model_decodes_a_lone_sentence_without_padding_rows():
    """MKL needs rows in multiples of 4 for batch invariance, so a sentence alone at beam 5 runs
    as 4 sentences (20 rows); packed rows are row-count invariant, so it runs 5 rows."""
    plain = copy.deepcopy(toy_model())
    packed = pack_linears(plain)
    assert row_multiple(plain) == 4 and row_multiple(packed) == 1
    assert set(_rows_per_step(plain, 5)[1:]) == {20}
    rows = _rows_per_step(packed, 5)
    assert rows[0] == 1 and set(rows[1:]) == {5}


def test_packed_model_decodes_a_shortlist_like_the_plain_model():
    model = toy_model()
    packed = pack_linears(model)
    allowed = torch.tensor([1, 3] + list(range(10, 50)))
    ids = random_sources(8, seed=6, max_len=12)
    opts = DecodeOptions(beam=3)
    plain = beam_search(model, src_tensor(ids), opts, allowed)
    fast = beam_search(packed, src_tensor(ids), opts, allowed)
    assert [h[0].tokens for h in plain] == [h[0].tokens for h in fast]
    assert all(set(h[0].tokens) <= set(allowed.tolist()) for h in fast)


def test_packed_bf16_model_decodes():
    """`--dtype bf16` on CPU packs bf16 weights too; the tokens stay those of the bf16 model."""
    model = copy.deepcopy(toy_model()).to(torch.bfloat16)  # toy_model() is shared: never cast it in place
    try:
        packed = pack_linears(model)
        ids = random_sources(6, seed=8, max_len=10)
        fast = beam_search(packed, src_tensor(ids), DecodeOptions(beam=2))
    except RuntimeError as e:  # a CPU without bf16 support in oneDNN
        pytest.skip(f"bf16 oneDNN linear unavailable: {e}")
    plain = beam_search(model, src_tensor(ids), DecodeOptions(beam=2))
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(plain, fast))
    assert same >= len(ids) - 1  # bf16 rounding may flip a near-tie; nearly all must agree
