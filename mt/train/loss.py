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


def label_smoothed_nll(logits: Tensor, target: Tensor, eps: float, pad_id: int, n_tokens: int | None = None) -> LossOutput:
    """``logits``: ``(batch, len, vocab)`` (any float dtype), ``target``: ``(batch, len)``.

    The log-softmax is taken in fp32 so bf16 autocast does not bias the loss. ``n_tokens``
    may be passed when the caller already knows the non-pad count (saves a device sync).
    """
    vocab = logits.shape[-1]
    lprobs = F.log_softmax(logits.float(), dim=-1).view(-1, vocab)  # (N, V)
    target = target.reshape(-1)
    keep = target.ne(pad_id)  # (N,)
    nll = -lprobs.gather(1, target[:, None]).squeeze(1)  # (N,)
    nll = nll.masked_fill(~keep, 0.0).sum()
    if eps > 0.0:
        smooth = -lprobs.sum(dim=-1).masked_fill(~keep, 0.0).sum()  # sum over all classes
        eps_other = eps / (vocab - 1)
        loss = (1.0 - eps - eps_other) * nll + eps_other * smooth
    else:
        loss = nll
    if n_tokens is None:
        n_tokens = int(keep.sum())
    return LossOutput(loss=loss, nll=nll.detach(), n_tokens=n_tokens)


def per_token(total: float, n_tokens: int) -> float:
    """Sum → mean per token (0 for an empty count)."""
    return total / n_tokens if n_tokens else 0.0


def perplexity(nll_per_token: float) -> float:
    """``exp(nll)`` in base e, capped so a diverged run prints ``inf`` instead of raising."""
    return math.exp(nll_per_token) if nll_per_token < 700 else float("inf")
