import math

import pytest
import torch

from mt.decode.lengths import length_penalty, max_output_len, min_output_len, normalize
from mt.config import DecodeOptions
from mt.decode.search import beam_search, greedy_search
from _decode_support import plain, random_sources, src_tensor


def test_formulas():
    assert normalize(-6.0, 3, "avg", 1.0) == pytest.approx(-2.0)  # mean log-prob per token
    assert normalize(-6.0, 4, "avg", 0.5) == pytest.approx(-3.0)
    assert normalize(-6.0, 7, "gnmt", 1.0) == pytest.approx(-6.0 / 2.0)  # (5+7)/6 = 2
    assert normalize(-6.0, 7, "gnmt", 0.6) == pytest.approx(-6.0 / 2.0**0.6)
    assert normalize(-6.0, 9, "none", 1.0) == -6.0
    t = normalize(torch.tensor([-4.0, -9.0]), torch.tensor([2, 3]), "avg", 2.0)
    assert torch.allclose(t, torch.tensor([-1.0, -1.0]))


def test_neutral_values():
    for mode in ("avg", "gnmt", "none"):
        assert normalize(-5.0, 11, mode, 0.0) == -5.0
    assert length_penalty(1, "gnmt", 1.3) == 1.0  # length 1 (EOS only) is neutral in gnmt
    with pytest.raises(ValueError):
        length_penalty(3, "bogus", 1.0)


@pytest.mark.parametrize("mode,alpha", [("avg", 1.0), ("gnmt", 0.6), ("none", 1.0)])
def test_eos_counts_toward_length(mode, alpha):
    """A hypothesis of n tokens is normalised with length n + 1 (its EOS included)."""
    model = plain()
    ids = random_sources(6, seed=3)
    for search, beam in ((greedy_search, 1), (beam_search, 3)):
        opts = DecodeOptions(beam=beam, n_best=beam, length_norm=mode, alpha=alpha)
        for hyps in search(model, src_tensor(ids), opts):
            for h in hyps:
                expected = h.log_prob / (length_penalty(len(h.tokens) + 1, mode, alpha))
                assert h.score == pytest.approx(expected, rel=1e-6)
                if mode != "none" and alpha > 0:
                    assert h.score != pytest.approx(h.log_prob / length_penalty(len(h.tokens), mode, alpha), rel=1e-9)


def test_length_limits():
    assert max_output_len(10, 1.2, 10, 1024) == 22
    assert max_output_len(10, 1.2, 10, 16) == 15  # the decoder-start token takes a position
    assert max_output_len(0, 0.0, 0, 1024) == 0
    assert torch.equal(max_output_len(torch.tensor([3, 100]), 1.5, 2, 64), torch.tensor([6, 63]))
    assert min_output_len(5, 3) == 3
    assert torch.equal(min_output_len(2, torch.tensor([1, 9])), torch.tensor([1, 2]))
    assert math.isclose(normalize(-1.0, 1, "avg", 1.0), -1.0)
