"""An exponential moving average of the weights during training (``train.ema_decay``).

What OpenNMT-py calls ``-average_decay`` and Marian ``--exponential-smoothing``: after every
update ``ema = d * ema + (1 - d) * weights`` with ``d = min(ema_decay, (1 + n) / (10 + n))``
after ``n`` updates, so early averages forget the random initialisation quickly and the
window widens to about ``1 / (1 - ema_decay)`` updates as training goes on.

The average never feeds back into training: the optimizer keeps updating the raw weights,
so a run with it follows the same trajectory as one without. Validation, ``model_best`` and
``model_last`` use the averaged weights (:meth:`WeightEMA.applied`); checkpoints keep the raw
weights, with the average beside them, so a resumed run continues both.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn


class WeightEMA:
    """fp32 shadow copies of a model's parameters (tied parameters once)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in model.parameters()]

    def _params(self, model: nn.Module) -> list[Tensor]:
        params = list(model.parameters())
        assert len(params) == len(self.shadow), "the model's parameters changed under its average"
        return params

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self._params(model)], weight)
        self.updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in ``model`` for the block, the raw ones restored after it
        (in place, so optimizer, DDP and compiled wrappers keep their tensors)."""
        params = self._params(model)
        raw = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, self.shadow)
        try:
            yield
        finally:
            torch._foreach_copy_(params, raw)

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, float | int]]:
        """Tensors by parameter name, and the JSON part (decay, updates)."""
        return dict(zip(self.names, self.shadow)), {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, float | int]) -> None:
        missing = set(self.names) - set(tensors)
        if missing:
            raise KeyError(f"weight average lacks {sorted(missing)[:3]}")
        self.shadow = [tensors[n].float().clone() for n in self.names]
        self.updates = int(meta["updates"])
