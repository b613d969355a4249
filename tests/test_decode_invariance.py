"""Batch invariance: a sentence's translation (tokens *and* scores, bit for bit) does not
depend on the batch it is decoded in, the batch order or the batch size (CPU, fp32).
See mt/decode/shapes.py for what makes this hold."""

import functools
import random

import pytest
import torch

from mt.decode.options import DecodeOptions
from mt.decode.packed import pack_linears, packing_available
from mt.decode.translator import Translator, generate
from _decode_support import IntText, random_sources, src_tensor, toy_model

IDS = random_sources(30, seed=11, max_len=45)
MODELS = ["plain", pytest.param("packed", marks=pytest.mark.skipif(not packing_available(), reason="no oneDNN ops"))]


@functools.lru_cache(maxsize=None)
def _model(kind: str):
    """The toy model as stored (MKL linears: padded to 4 rows) or oneDNN-packed (no padding)."""
    return toy_model() if kind == "plain" else pack_linears(toy_model())


def _key(hyps):
    return [(h.tokens, h.score, h.log_prob) for h in hyps]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("beam", [1, 2, 3, 4, 5])
def test_one_at_a_time_equals_batched(beam, kind):
    torch.set_num_threads(2)  # the fused attention kernel is only batch-dependent with threads
    model = _model(kind)
    opts = DecodeOptions(beam=beam, n_best=beam)
    batched = generate(model, src_tensor(IDS), opts)
    for i in range(0, len(IDS), 3):  # every third sentence alone keeps the test fast
        alone = generate(model, src_tensor([IDS[i]]), opts)[0]
        assert _key(alone) == _key(batched[i]), i
    order = list(range(len(IDS)))
    random.Random(0).shuffle(order)
    shuffled = generate(model, src_tensor([IDS[i] for i in order[:13]]), opts)
    for j, i in enumerate(order[:13]):
        assert _key(shuffled[j]) == _key(batched[i])


@pytest.mark.parametrize("kind", MODELS)
def test_translator_any_batching_same_output(kind):
    torch.set_num_threads(2)
    model = _model(kind)
    tr = Translator(model, IntText())
    texts = [" ".join(map(str, x)) for x in IDS]
    opts = DecodeOptions(beam=4, n_best=2)
    ref = [_key(h) for h in tr.translate(texts, opts.replace(max_tokens=100_000))]
    for max_tokens in (1, 37, 250):
        assert [_key(h) for h in tr.translate(texts, opts.replace(max_tokens=max_tokens))] == ref
    rev = tr.translate(texts[::-1], opts.replace(max_tokens=90))
    assert [_key(h) for h in rev[::-1]] == ref
