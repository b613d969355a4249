"""Label-smoothed loss and learning-rate schedules."""

import math

import pytest
import torch
import torch.nn.functional as F

from mt.train.loss import label_smoothed_nll, label_smoothed_nll_reference, perplexity
from mt.train.schedule import LRSchedule, lr_multiplier


def _data(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(4, 7, 50, generator=g)).to(dtype).requires_grad_()
    target = torch.randint(4, 50, (4, 7), generator=g)
    target[0, 4:] = 0  # padding
    target[2, 1:] = 0
    return logits, target


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("chunk_rows", [1, 5, None])
def test_fused_loss_matches_autograd_reference(eps, chunk_rows):
    logits, target = _data()
    out = label_smoothed_nll(logits, target, eps, pad_id=0, chunk_rows=chunk_rows)
    out.loss.backward()
    grad = logits.grad.clone()
    logits.grad = None
    ref = label_smoothed_nll_reference(logits, target, eps, pad_id=0)
    ref.loss.backward()
    assert out.n_tokens == ref.n_tokens == int(target.ne(0).sum())
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.nll, ref.nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, logits.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_written_in_the_forward_follows_the_upstream_gradient(dtype):
    logits, target = _data(dtype)
    out = label_smoothed_nll(logits, target, 0.1, pad_id=0)
    (out.loss * 0.37).backward()
    grad = logits.grad.float()
    ref_logits = logits.detach().float().requires_grad_()
    (label_smoothed_nll_reference(ref_logits, target, 0.1, pad_id=0).loss * 0.37).backward()
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    torch.testing.assert_close(grad, ref_logits.grad, rtol=tol, atol=tol)
    assert grad.abs().max() > 0.1  # not trivially zero


def test_loss_without_autograd_equals_the_training_loss():
    logits, target = _data()
    with torch.no_grad():
        quiet = label_smoothed_nll(logits, target, 0.1, pad_id=0)
    out = label_smoothed_nll(logits, target, 0.1, pad_id=0)
    assert torch.equal(quiet.loss, out.loss.detach()) and torch.equal(quiet.nll, out.nll)
    assert not quiet.loss.requires_grad and out.loss.requires_grad


def test_loss_without_smoothing_is_cross_entropy_and_ignores_padding():
    logits, target = _data()
    out = label_smoothed_nll(logits, target, 0.0, pad_id=0)
    expected = F.cross_entropy(logits.view(-1, 50), target.view(-1), ignore_index=0, reduction="sum")
    torch.testing.assert_close(out.loss, expected)
    # changing logits at padded positions changes nothing, and they get no gradient
    out.loss.backward()
    assert logits.grad[0, 4:].abs().max() == 0 and logits.grad[2, 1:].abs().max() == 0
    other = logits.detach().clone()
    other[0, 4:] += 100.0
    assert torch.equal(label_smoothed_nll(other, target, 0.0, 0).loss, out.loss.detach())


def test_smoothing_matches_torch_label_smoothing_definition():
    # fairseq: eps spread over the V-1 wrong classes == torch's eps' spread over all V
    # classes with eps' = eps * V / (V - 1)
    logits, target = _data()
    eps, vocab = 0.1, 50
    out = label_smoothed_nll(logits, target, eps, pad_id=0)
    torch_ls = F.cross_entropy(
        logits.view(-1, vocab), target.view(-1), ignore_index=0, reduction="sum", label_smoothing=eps * vocab / (vocab - 1)
    )
    torch.testing.assert_close(out.loss, torch_ls, rtol=1e-5, atol=1e-4)


def test_bf16_logits_give_fp32_loss_close_to_fp32():
    logits, target = _data()
    out32 = label_smoothed_nll(logits.detach(), target, 0.1, 0)
    out16 = label_smoothed_nll(logits.detach().bfloat16().requires_grad_(), target, 0.1, 0)
    assert out16.loss.dtype == torch.float32
    assert abs(out16.loss.item() - out32.loss.item()) / out32.loss.item() < 1e-2


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == float("inf")


# --------------------------------------------------------------------------- schedules


def test_warmup_then_inverse_sqrt():
    assert lr_multiplier(1, "inverse_sqrt", 100, 1000) == pytest.approx(0.01)
    assert lr_multiplier(100, "inverse_sqrt", 100, 1000) == pytest.approx(1.0)
    assert lr_multiplier(400, "inverse_sqrt", 100, 1000) == pytest.approx(0.5)
    assert lr_multiplier(10_000, "inverse_sqrt", 100, 1000, min_ratio=0.2) == pytest.approx(0.2)


def test_decay_start_holds_the_peak_so_warmups_compare_at_one_schedule():
    # without a hold, warmup 0 decays from update 1: the footgun of comparing warmups
    assert lr_multiplier(1000, "inverse_sqrt", 0, 1000) == pytest.approx(1 / 1000**0.5)
    for warmup in (0, 100, 800):
        assert lr_multiplier(800, "inverse_sqrt", warmup, 1000, decay_start=800) == pytest.approx(1.0)
        assert lr_multiplier(3200, "inverse_sqrt", warmup, 4000, decay_start=800) == pytest.approx(0.5)
    assert lr_multiplier(1, "inverse_sqrt", 0, 1000, decay_start=800) == 1.0
    assert lr_multiplier(50, "inverse_sqrt", 100, 1000, decay_start=800) == pytest.approx(0.5)
    assert lr_multiplier(60, "linear", 10, 110, decay_start=10) == lr_multiplier(60, "linear", 10, 110)
    assert lr_multiplier(60, "linear", 10, 110, decay_start=60) == 1.0
    assert lr_multiplier(85, "linear", 10, 110, decay_start=60) == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_decays_reach_min_at_max_steps(kind):
    assert lr_multiplier(10, kind, 10, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, kind, 10, 110) == pytest.approx(0.5)  # half way, both kinds
    assert lr_multiplier(110, kind, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_multiplier(500, kind, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    values = [lr_multiplier(s, kind, 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_constant_and_no_warmup():
    assert lr_multiplier(1, "constant", 0, 10) == 1.0
    assert lr_multiplier(5, "constant", 10, 100) == pytest.approx(0.5)
    assert lr_multiplier(1, "inverse_sqrt", 0, 10) == 1.0


def test_lr_schedule_drives_optimizer_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = LRSchedule(opt, "inverse_sqrt", warmup=4, max_steps=100)
    seen = []
    for _ in range(8):
        seen.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert seen[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert seen[7] == pytest.approx(1e-3 * math.sqrt(4 / 8))
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched2 = LRSchedule(opt2, "inverse_sqrt", warmup=4, max_steps=100)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
