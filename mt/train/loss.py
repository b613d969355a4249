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
    Here only the per-row log-sum-exp is kept; each chunk of rows is upcast to fp32 while
    it is hot in cache, in the forward and again in the backward, where the gradient has the
    closed form ``softmax - q`` (``q`` = the smoothed target distribution, summing to 1).

    Per row: ``nll = lse - x[t]`` and ``-sum_c log p_c = V * lse - sum_c x_c``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, eps: float, pad_id: int, chunk_rows: int) -> tuple[Tensor, Tensor]:
        n, vocab = logits.shape
        eps_other = eps / (vocab - 1)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        loss_rows = torch.empty(n, dtype=torch.float32, device=logits.device)
        nll_rows = torch.empty(n, dtype=torch.float32, device=logits.device)
        for a in range(0, n, chunk_rows):
            x = logits[a : a + chunk_rows].float()  # (rows, V)
            lse_c = torch.logsumexp(x, dim=-1)
            nll = lse_c - x.gather(1, target[a : a + chunk_rows, None]).squeeze(1)
            lse[a : a + chunk_rows] = lse_c
            nll_rows[a : a + chunk_rows] = nll
            if eps > 0.0:
                smooth = vocab * lse_c - x.sum(dim=-1)
                loss_rows[a : a + chunk_rows] = (1.0 - eps - eps_other) * nll + eps_other * smooth
            else:
                loss_rows[a : a + chunk_rows] = nll
        keep = target.ne(pad_id)
        loss = loss_rows.masked_fill_(~keep, 0.0).sum()
        nll_sum = nll_rows.masked_fill_(~keep, 0.0).sum()
        ctx.save_for_backward(logits, target, keep, lse)
        ctx.eps, ctx.chunk_rows = eps, chunk_rows
        ctx.mark_non_differentiable(nll_sum)
        return loss, nll_sum

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        logits, target, keep, lse = ctx.saved_tensors
        n, vocab = logits.shape
        eps, rows = ctx.eps, ctx.chunk_rows
        eps_other = eps / (vocab - 1)
        weight = keep.to(torch.float32) * grad_loss  # (N,): padding rows get no gradient
        grad = torch.empty_like(logits)
        for a in range(0, n, rows):
            g = logits[a : a + rows].to(torch.float32, copy=True).sub_(lse[a : a + rows, None]).exp_()  # softmax
            if eps_other:
                g.sub_(eps_other)
            t = target[a : a + rows, None]
            g.scatter_add_(1, t, torch.full(t.shape, -(1.0 - eps - eps_other), dtype=g.dtype, device=g.device))
            grad[a : a + rows] = g.mul_(weight[a : a + rows, None])
        return grad, None, None, None, None


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
        # CPU: ~2M-element chunks stay in L2/L3; GPU: few big chunks (launches cost more)
        budget = (1 << 21) if logits.device.type == "cpu" else (1 << 27)
        chunk_rows = max(1, budget // vocab)
    loss, nll = _SmoothedCrossEntropy.apply(logits.reshape(-1, vocab), target, float(eps), int(pad_id), chunk_rows)
    if n_tokens is None:
        n_tokens = int(target.ne(pad_id).sum())
    return LossOutput(loss=loss, nll=nll.detach(), n_tokens=n_tokens)


def per_token(total: float, n_tokens: int) -> float:
    """Sum → mean per token (0 for an empty count)."""
    return total / n_tokens if n_tokens else 0.0


def perplexity(nll_per_token: float) -> float:
    """``exp(nll)`` in base e, capped so a diverged run prints ``inf`` instead of raising."""
    return math.exp(nll_per_token) if nll_per_token < 700 else float("inf")
