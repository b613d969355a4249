"""Dropout from packed random bits (mt.model.Dropout): rate, scale, gradient, determinism."""

import pytest
import torch

from mt.model import Dropout, Transformer, dropout_mask_bits
from mt.config import ModelConfig


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drops_at_rate_p_and_keeps_the_expectation(p, dtype):
    torch.manual_seed(0)
    x = torch.full((400, 1000), 2.0, dtype=dtype)
    y = Dropout(p).train()(x)
    dropped = (y == 0).double().mean().item()
    # 400k Bernoulli draws: standard error < 0.001
    assert abs(dropped - p) < 0.005
    kept = y[y != 0].double()
    expected_scale = 65536 / (65536 - round(p * 65536))
    assert torch.allclose(kept, torch.full_like(kept, 2.0 * expected_scale), rtol=1e-2)
    assert abs(y.double().mean().item() - 2.0) < 0.02


def test_masks_are_independent_across_elements_and_calls():
    torch.manual_seed(0)
    a, _ = dropout_mask_bits(torch.Size([200, 500]), 0.5)
    b, _ = dropout_mask_bits(torch.Size([200, 500]), 0.5)
    assert 0.45 < (a != b).double().mean().item() < 0.55  # two calls: different masks
    # neighbours (the four 16-bit lanes of one 64-bit draw) are uncorrelated
    flat = a.flatten().double()
    corr = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()
    assert abs(corr) < 0.02


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(3)
    x = torch.randn(64, 32, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    kept = y.detach() != 0
    scale = 65536 / (65536 - round(0.25 * 65536))
    assert torch.equal(x.grad, kept.float() * scale)


def test_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(5, 7)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_the_same_seed_gives_the_same_training_forward():
    # resumed runs restore torch's RNG state and must redraw the same masks
    cfg = ModelConfig(preset="tiny", vocab_size=40, dropout=0.3)
    torch.manual_seed(0)
    model = Transformer(cfg).train()
    src = torch.randint(4, 40, (3, 7))
    tgt = torch.randint(4, 40, (3, 6))
    torch.manual_seed(11)
    a = model(src, tgt)
    torch.manual_seed(11)
    b = model(src, tgt)
    c = model(src, tgt)
    assert torch.equal(a, b) and not torch.equal(b, c)
