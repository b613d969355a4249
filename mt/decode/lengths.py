"""Length normalisation and output-length limits for beam search.

Beam search sums log-probabilities, which favours short outputs; normalisation divides
the summed log-probability of a *finished* hypothesis by a length penalty before finished
hypotheses are compared (active hypotheses are always ranked by their raw sum, as they
all have the same length).

Modes (``length`` = number of generated tokens, **the final EOS included**, so an empty
translation has length 1 and no mode divides by zero; this is fairseq's convention):

=========  ===========================================  ========================================
mode       normalised score                             neutral value (same as ``none``)
=========  ===========================================  ========================================
``none``   ``score``                                    —
``avg``    ``score / length ** alpha``                  ``alpha = 0``; ``alpha = 1`` is the mean
                                                        log-probability per token
``gnmt``   ``score / ((5 + length) / 6) ** alpha``      ``alpha = 0`` (Wu et al. 2016, eq. 14)
=========  ===========================================  ========================================

Length limits (``src_len`` = source subword tokens, *excluding* the EOS appended to every
source; output lengths *exclude* the final EOS):

* ``max_len = min(floor(a * src_len + b), max_positions - 1)``: at step ``max_len`` only
  EOS may be chosen. ``max_positions - 1`` because the decoder-start token takes position 0.
* ``min_len``: EOS is blocked while fewer than ``min_len`` tokens have been generated
  (clipped to ``max_len`` so a hypothesis can always end).
"""

from __future__ import annotations

import math
from typing import Literal, Union

import torch
from torch import Tensor

from mt.config import LENGTH_NORMS

LengthNorm = Literal["avg", "gnmt", "none"]
MODES: tuple[str, ...] = LENGTH_NORMS  # defined with the decoding settings


def length_penalty(length: Union[Tensor, int], mode: str, alpha: float) -> Union[Tensor, float]:
    """The divisor for a hypothesis of ``length`` tokens (EOS included); 1 for ``none``."""
    if mode == "none" or alpha == 0.0:
        return torch.ones_like(length, dtype=torch.float) if isinstance(length, Tensor) else 1.0
    if mode == "avg":
        base = length
    elif mode == "gnmt":
        base = (5.0 + length) / 6.0
    else:
        raise ValueError(f"unknown length normalisation {mode!r} (choose from {', '.join(MODES)})")
    if isinstance(base, Tensor):
        return base.float().pow(alpha)
    return float(base) ** alpha


def normalize(score: Union[Tensor, float], length: Union[Tensor, int], mode: str, alpha: float):
    """``score`` (summed log-prob) divided by :func:`length_penalty`; same shape as ``score``."""
    return score / length_penalty(length, mode, alpha)


def max_output_len(src_len: Union[Tensor, int], a: float, b: int, max_positions: int):
    """Most tokens (EOS excluded) that may be generated for a source of ``src_len`` tokens."""
    limit = max_positions - 1
    if isinstance(src_len, Tensor):
        return torch.floor(src_len.double() * a + b).long().clamp(min=0, max=limit)
    return max(0, min(int(math.floor(src_len * a + b)), limit))


def min_output_len(min_len: int, max_len: Union[Tensor, int]):
    """``min_len`` clipped to ``max_len`` so every hypothesis can still finish."""
    if isinstance(max_len, Tensor):
        return max_len.clamp(max=min_len)
    return min(min_len, max_len)
