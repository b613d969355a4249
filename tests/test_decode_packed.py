"""oneDNN-packed linear layers (mt/decode/packed.py): same results, batch-invariant rows."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mt.config import DecodeOptions
from mt.decode.invariance import linear_row_multiple
from mt.decode.packed import PackedLinear, packing_available
from mt.decode.search import beam_search
from mt.decode.shapes import PaddingRule
from mt.decode.translator import Translator
from mt.decode.variant import prepare
from _decode_support import IntText, plain as _plain, random_sources, src_tensor, toy_model

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


def _packed(model=None, dtype="fp32"):
    return prepare(model if model is not None else toy_model(), "cpu", dtype=dtype, pack=True)


def test_prepare_packs_a_copy_and_decodes_the_same_batch_invariantly():
    model = toy_model()
    dm = _packed(model)
    assert dm.packed and not any(isinstance(m, PackedLinear) for m in model.modules())  # the original is untouched
    assert not any(type(m) is nn.Linear for m in dm.net.modules())
    assert isinstance(dm.net.output_proj, PackedLinear)  # the tied output layer too
    ids = random_sources(10, seed=3, max_len=15)
    opts = DecodeOptions(beam=3, n_best=2)
    plain, fast = beam_search(_plain(model), src_tensor(ids), opts), beam_search(dm, src_tensor(ids), opts)
    # other kernels, other rounding: a near-tie may flip, nearly every sentence must agree
    assert sum([h.tokens for h in x] == [h.tokens for h in y] for x, y in zip(plain, fast)) >= len(ids) - 1
    if not dm.padding.invariant:
        pytest.skip(f"probe: {dm.padding.finding}")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # alone or in any batch: identical tokens and scores
        tr = Translator(dm, IntText())
        texts = [" ".join(map(str, x)) for x in ids]
        batch = tr.translate_batch(texts, opts)
        alone = [tr.translate_batch([t], opts)[0] for t in reversed(texts)][::-1]
        assert [[(h.tokens, h.score) for h in x] for x in batch] == [[(h.tokens, h.score) for h in x] for x in alone]
    finally:
        torch.set_num_threads(before)


def _rows_per_step(dm, beam: int) -> list[int]:
    """Decoder rows of each step when one sentence is beam-searched alone."""
    seen: list[int] = []
    step = dm.decode_step

    def counting(tokens, state, out):
        seen.append(tokens.shape[0])
        return step(tokens, state, out)

    dm.decode_step = counting
    try:
        beam_search(dm, src_tensor(random_sources(1, seed=4, max_len=9)), DecodeOptions(beam=beam))
    finally:
        del dm.decode_step
    return seen


@pytest.mark.parametrize("rows", [1, 4])
def test_a_lone_sentence_runs_the_rows_its_padding_rule_asks_for(rows):
    """A sentence alone at beam 5 runs as many sentences as the rule's row multiple needs:
    5 rows with no padding rows (what packed layers usually get), 20 with rows of 4; step 0
    runs one row per sentence where that keeps the multiple."""
    dm = dataclasses.replace(_packed(), padding=PaddingRule(rows=rows))
    seen = _rows_per_step(dm, 5)
    per_step = dm.padding.sentence_multiple(5) * 5
    assert set(seen[1:]) == {per_step}
    assert seen[0] == per_step // 5  # beam 5 is odd: one row per sentence keeps any multiple


def test_the_probe_decides_the_packed_rule():
    """Whatever this CPU's kernels do, the packed model's rule is what the probe measured."""
    dm = _packed()
    assert dm.padding.finding.startswith("fp32, oneDNN-packed")
    assert dm.padding.rows == (linear_row_multiple(dm.net, dm.device) or 16)


def test_packed_model_decodes_a_shortlist_like_the_plain_model():
    model = toy_model()
    dm = _packed(model)
    allowed = torch.tensor([1, 3] + list(range(10, 50)))
    ids = random_sources(8, seed=6, max_len=12)
    opts = DecodeOptions(beam=3)
    plain = beam_search(_plain(model), src_tensor(ids), opts, allowed)
    fast = beam_search(dm, src_tensor(ids), opts, allowed)
    assert sum(a[0].tokens == b[0].tokens for a, b in zip(plain, fast)) >= len(ids) - 1
    assert all(set(h[0].tokens) <= set(allowed.tolist()) for h in fast)


def test_packed_bf16_model_decodes():
    """`--dtype bf16` on CPU packs bf16 weights too; the tokens stay those of the bf16 model."""
    try:
        dm = _packed(dtype="bf16")
        ids = random_sources(6, seed=8, max_len=10)
        fast = beam_search(dm, src_tensor(ids), DecodeOptions(beam=2))
    except RuntimeError as e:  # a CPU without bf16 support in oneDNN
        pytest.skip(f"bf16 oneDNN linear unavailable: {e}")
    plain = beam_search(_plain(toy_model(), dtype="bf16"), src_tensor(ids), DecodeOptions(beam=2))
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(plain, fast))
    assert same >= len(ids) - 1  # bf16 rounding may flip a near-tie; nearly all must agree
