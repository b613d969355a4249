"""Label-smoothed cross-entropy over target tokens, ignoring padding.

Losses are *sums* over tokens, not means: with token-based batches, gradient accumulation
and data parallelism the right normaliser is the number of target tokens in the whole
optimizer step, which only the trainer knows (it divides once, see ``trainer.py``).

Smoothing follows fairseq: the true class gets ``1 - eps`` and every other class
``eps / (V - 1)``, so with ``eps = 0`` this is exactly the NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossOutput:
    """``loss``: smoothed loss summed over non-pad tokens (differentiable, fp32 scalar);
    ``nll``: the unsmoothed negative log-likelihood sum (detached); ``n_tokens``: non-pad count."""

    loss: Tensor
    nll: Tensor
    n_tokens: int


def label_smoothed_nll_reference(
    logits: Tensor, target: Tensor, eps: float, pad_id: int, n_tokens: int | None = None
) -> LossOutput:
    """Plain-autograd version of :func:`label_smoothed_nll` (the tests' reference)."""
    vocab = logits.shape[-1]
    lprobs = F.log_softmax(logits.float(), dim=-1).view(-1, vocab)  # (N, V)
    target = target.reshape(-1)
    keep = target.ne(pad_id)  # (N,)
    nll = -lprobs.gather(1, target[:, None]).squeeze(1).masked_fill(~keep, 0.0).sum()
    smooth = -lprobs.sum(dim=-1).masked_fill(~keep, 0.0).sum()  # summed over all classes
    eps_other = eps / (vocab - 1)
    loss = (1.0 - eps - eps_other) * nll + eps_other * smooth
    return LossOutput(loss=loss, nll=nll.detach(), n_tokens=int(keep.sum()) if n_tokens is None else n_tokens)


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Label-smoothed CE over ``(N, V)`` logits, computed in row chunks.

    Autograd through ``log_softmax`` + ``gather`` + ``sum`` materialises several fp32
    ``(N, V)`` buffers (log-probs, a zero-filled scatter target, an expanded sum gradient);
    with an 8k-32k vocabulary those memory passes cost as much as a decoder layer on CPU.
    Here each chunk of rows is upcast to fp32 once, while it is hot in cache, and the
    forward also writes the gradient, whose closed form is ``softmax - q`` (``q`` = the
    smoothed target distribution, summing to 1). It takes the place of the logits among the
    saved tensors (same size), and the backward only scales it by the incoming gradient.
    Without autograd (validation) no gradient is written.

    Per row: ``nll = lse - x[t]`` and ``-sum_c log p_c = V * lse - sum_c x_c``.
    """

    @staticmethod
    def forward(
        ctx, logits: Tensor, target: Tensor, eps: float, pad_id: int, chunk_rows: int, want_grad: bool
    ) -> tuple[Tensor, Tensor]:
        n, vocab = logits.shape
        eps_other = eps / (vocab - 1)
        keep = target.ne(pad_id)  # (N,)
        weight = keep.to(torch.float32)[:, None]  # (N, 1): padding rows get no gradient
        loss_rows = torch.empty(n, dtype=torch.float32, device=logits.device)
        nll_rows = torch.empty(n, dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits) if want_grad else None
        for a in range(0, n, chunk_rows):
            rows = slice(a, a + chunk_rows)
            x = logits[rows].float()  # (rows, V)
            top = x.amax(dim=-1, keepdim=True)
            e = torch.sub(x, top).exp_()  # unnormalised softmax
            total = e.sum(dim=-1, keepdim=True)
            lse = (top + total.log()).squeeze(1)
            t = target[rows, None]
            nll = lse - x.gather(1, t).squeeze(1)
            nll_rows[rows] = nll
            if eps > 0.0:
                smooth = vocab * lse - x.sum(dim=-1)
                loss_rows[rows] = (1.0 - eps - eps_other) * nll + eps_other * smooth
            else:
                loss_rows[rows] = nll
            if grad is not None:
                w = weight[rows]
                g = e.mul_(w / total)  # softmax, zero on padding rows
                if eps_other:
                    g.sub_(eps_other * w)
                g.scatter_add_(1, t, -(1.0 - eps - eps_other) * w)
                grad[rows] = g
        loss = loss_rows.masked_fill_(~keep, 0.0).sum()
        nll_sum = nll_rows.masked_fill_(~keep, 0.0).sum()
        if grad is not None:
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(nll_sum)
        return loss, nll_sum

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        (grad,) = ctx.saved_tensors
        # in place: the saved gradient has no other reader, and a backward runs once; the
        # fp32 scalar is not cast to bf16 first, so each product rounds once
        return grad.mul_(grad_loss), None, None, None, None, None


def label_smoothed_nll(
    logits: Tensor,
    target: Tensor,
    eps: float,
    pad_id: int,
    n_tokens: int | None = None,
    chunk_rows: int | None = None,
) -> LossOutput:
    """``logits``: ``(batch, len, vocab)`` (any float dtype), ``target``: ``(batch, len)``.

    Softmax statistics are computed in fp32 so bf16 autocast does not bias the loss.
    ``n_tokens`` may be passed when the caller already knows the non-pad count (saves a
    device sync). ``chunk_rows``: rows upcast at a time (default: by device, see below).
    """
    vocab = logits.shape[-1]
    target = target.reshape(-1)
    if chunk_rows is None:
        # CPU: ~1M-element chunks stay in L2/L3; GPU: few big chunks (launches cost more)
        budget = (1 << 20) if logits.device.type == "cpu" else (1 << 27)
        chunk_rows = max(1, budget // vocab)
    want_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, nll = _SmoothedCrossEntropy.apply(
        logits.reshape(-1, vocab), target, float(eps), int(pad_id), chunk_rows, want_grad
    )
    if n_tokens is None:
        n_tokens = int(target.ne(pad_id).sum())
    return LossOutput(loss=loss, nll=nll.detach(), n_tokens=n_tokens)


def per_token(total: float, n_tokens: int) -> float:
    """Sum → mean per token (0 for an empty count)."""
    return total / n_tokens if n_tokens else 0.0


def perplexity(nll_per_token: float) -> float:
    """``exp(nll)`` in base e, capped so a diverged run prints ``inf`` instead of raising."""
    return math.exp(nll_per_token) if nll_per_token < 700 else float("inf")
