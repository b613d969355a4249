"""Batch invariance: a sentence's translation (tokens *and* scores, bit for bit) does not
depend on the batch it is decoded in, the batch order or the batch size.

Whether a path can be invariant depends on this CPU's kernels, so the decoding model's
padding rule comes from a run-time probe (mt/decode/invariance.py); these tests check the
property itself, with many more sentences and beams than the probe, for every path the probe
calls invariant, and skip (with the probe's finding, shown by ``pytest -ra``) the ones it does
not. The default CPU path must be invariant: that test never skips."""

import functools
import random

import pytest
import torch

from mt.config import DecodeOptions
from mt.decode.invariance import decoding_is_invariant, linear_row_multiple, padding_rule
from mt.decode.shapes import PaddingRule
from mt.decode.translator import Translator, generate
from mt.decode.variant import prepare
from _decode_support import IntText, random_sources, src_tensor, toy_model

IDS = random_sources(30, seed=11, max_len=45)
PATHS = {
    "fp32": dict(dtype="fp32", pack=False),
    "fp32-packed": dict(dtype="fp32", pack=True),
    "bf16": dict(dtype="bf16", pack=False),
    "bf16-packed": dict(dtype="bf16", pack=True),
}


@functools.lru_cache(maxsize=None)
def _model(path: str):
    torch.set_num_threads(2)  # the probe and the tests run on the same thread count
    return prepare(toy_model(), "cpu", **PATHS[path])


def _invariant_model(path: str):
    dm = _model(path)
    if PATHS[path]["pack"] and not dm.packed:
        pytest.skip(f"oneDNN cannot pack {PATHS[path]['dtype']} linear layers on this CPU (or this torch has no oneDNN ops)")
    if not dm.padding.invariant:
        pytest.skip(f"probe: {dm.padding.finding}")
    return dm


def _key(hyps):
    return [(h.tokens, h.score, h.log_prob) for h in hyps]


# every beam for fp32; bf16 on CPU is slow unpacked, so odd and even beams once each
CASES = [(path, beam) for path in PATHS for beam in ((1, 2, 3, 4, 5) if path.startswith("fp32") else (1, 4))]


@pytest.mark.parametrize("path, beam", CASES)
def test_one_at_a_time_equals_batched(path, beam):
    model = _invariant_model(path)
    torch.set_num_threads(2)
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


@pytest.mark.parametrize("path", PATHS)
def test_translator_any_batching_same_output(path):
    model = _invariant_model(path)
    torch.set_num_threads(2)
    tr = Translator(model, IntText())
    texts = [" ".join(map(str, x)) for x in IDS]
    opts = DecodeOptions(beam=4, n_best=2)
    ref = [_key(h) for h in tr.translate_batch(texts, opts.replace(max_tokens=100_000))]
    for max_tokens in (1, 37, 250):
        assert [_key(h) for h in tr.translate_batch(texts, opts.replace(max_tokens=max_tokens))] == ref
    rev = tr.translate_batch(texts[::-1], opts.replace(max_tokens=90))
    assert [_key(h) for h in rev[::-1]] == ref


def test_default_cpu_path_is_invariant():
    """What `mt translate` builds by default on CPU (fp32, packed where oneDNN exists)."""
    torch.set_num_threads(2)
    dm = prepare(toy_model(), "cpu")
    assert dm.padding.invariant, dm.padding.finding


# ----------------------------------------------------------------------------- the probe itself


class _RowCountDependent(torch.nn.Module):
    """A linear layer whose rows change in the last bit unless the row count is a multiple
    of ``m``, like a GEMM kernel with a small-matrix path (``m == 0``: rows depend on every
    row count)."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.m = 8, 8, m

    def forward(self, x):
        y = x * 0.5 + 1.0  # exact per row whatever the kernel (no sums across elements)
        if self.m == 0:
            return y + x.shape[0] * 1e-3
        if x.shape[0] % self.m:
            y = torch.nextafter(y, torch.full_like(y, float("inf")))
        return y


class _Net(torch.nn.Module):
    def __init__(self, layer) -> None:
        super().__init__()
        self.layer = layer
        self.weight = torch.nn.Parameter(torch.zeros(1))  # the probe takes the dtype from it
        self.cfg = type("Cfg", (), {"d_model": 8})()

    def output_logits(self, h):
        return h


@pytest.mark.parametrize("m, expected", [(1, 1), (4, 4), (8, 8), (0, None)])
def test_linear_probe_finds_the_row_multiple(m, expected):
    assert linear_row_multiple(_Net(_RowCountDependent(m)), torch.device("cpu")) == expected


def test_end_to_end_probe_catches_a_batch_dependent_model():
    dm = prepare(toy_model(), "cpu", pack=False, probe=False)
    rule = PaddingRule(rows=4)
    inner = dm.net.decode_hidden_step

    def leaky(tokens, state):  # rows change with the batch's padded source length
        h = inner(tokens, state)
        return h + (state.src_mask.shape[-1] > 32) * 1e-6

    assert decoding_is_invariant(dm, rule)
    dm.net.decode_hidden_step = leaky
    try:
        assert not decoding_is_invariant(dm, rule)
    finally:
        del dm.net.decode_hidden_step


def test_int8_is_reported_not_invariant():
    dm = prepare(toy_model(), "cpu", int8=True, probe=False)
    rule = padding_rule(dm)
    assert not rule.invariant and "int8" in rule.finding and rule.rows == 1


def test_findings_are_remembered_across_processes(tmp_path, monkeypatch):
    """A second process (here: an emptied in-process cache) reads the finding back instead of
    probing again; a damaged cache file is ignored, and `off` disables it."""
    from mt.decode import invariance

    monkeypatch.setenv("MT_PROBE_CACHE", str(tmp_path / "probe.json"))
    monkeypatch.setattr(invariance, "_CACHE", {})
    dm = prepare(toy_model(), "cpu", pack=False)
    assert (tmp_path / "probe.json").is_file()
    monkeypatch.setattr(invariance, "_CACHE", {})
    monkeypatch.setattr(invariance, "_probe", lambda dm: pytest.fail("probed again"))
    assert padding_rule(dm) == dm.padding
    (tmp_path / "probe.json").write_text("{not json")
    monkeypatch.setattr(invariance, "_CACHE", {})
    monkeypatch.setattr(invariance, "_probe", lambda dm: PaddingRule(rows=8, finding="fresh"))
    assert padding_rule(dm).finding == "fresh"
    monkeypatch.setenv("MT_PROBE_CACHE", "off")
    assert invariance.cache_path() is None
