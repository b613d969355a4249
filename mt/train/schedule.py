"""Learning-rate schedules: linear warmup followed by inverse-sqrt, linear, cosine or
constant decay.

``LRSchedule`` behaves like ``torch.optim.lr_scheduler.LambdaLR`` (``step()`` after each
optimizer update, ``get_last_lr()``, ``state_dict()``) but its state is a single integer,
so checkpoints store it as JSON.
"""

from __future__ import annotations

import math
from typing import Optional

import torch


def lr_multiplier(step: int, kind: str, warmup: int, max_steps: int, min_ratio: float = 0.0,
                  decay_start: Optional[int] = None) -> float:  # fmt: skip
    """Multiplier of the peak learning rate for optimizer update ``step`` (1-based).

    * warmup: ``step / warmup`` for ``step <= warmup`` (all kinds);
    * then the peak (1) until ``decay_start`` (default: ``warmup``, no hold);
    * ``inverse_sqrt``: ``sqrt(decay_start / step)`` afterwards (fairseq/Vaswani);
    * ``linear``: straight line from 1 at ``decay_start`` to ``min_ratio`` at ``max_steps``;
    * ``cosine``: half cosine from 1 to ``min_ratio`` over the same span;
    * ``constant``: 1.
    Decaying kinds never go below ``min_ratio`` (``min_lr / lr``). Without a hold, inverse-sqrt
    ties the decay to the warmup: warmup 0 decays from update 1 (peak / 31.6 at update 1,000),
    so comparing warmups at one peak needs one ``decay_start``.
    """
    step = max(step, 1)
    start = warmup if decay_start is None else max(decay_start, warmup)
    if warmup > 0 and step <= warmup:
        return step / warmup
    if kind == "constant" or step <= start:
        return 1.0
    if kind == "inverse_sqrt":
        return max(min_ratio, math.sqrt(max(start, 1) / step))
    span = max(max_steps - start, 1)
    progress = min(max(step - start, 0) / span, 1.0)
    if kind == "linear":
        decay = 1.0 - progress
    elif kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown learning-rate schedule {kind!r}")
    return min_ratio + (1.0 - min_ratio) * decay


class LRSchedule:
    """Sets ``lr`` of every parameter group of ``optimizer`` from ``lr_multiplier``.

    Call ``step()`` once after each optimizer update. The rate for update ``k`` (1-based)
    is in place before that update runs; construction sets the rate of update 1.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str = "inverse_sqrt",
        warmup: int = 1000,
        max_steps: int = 100_000,
        min_lr: float = 0.0,
        decay_start: Optional[int] = None,
    ) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.warmup = warmup
        self.decay_start = decay_start
        self.max_steps = max_steps
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base
        self.min_ratio = min_lr / self.base_lrs[0] if self.base_lrs[0] > 0 else 0.0
        self.last_step = 0  # optimizer updates done
        self._apply()

    def multiplier(self, step: int) -> float:
        return lr_multiplier(step, self.kind, self.warmup, self.max_steps, self.min_ratio, self.decay_start)

    def _apply(self) -> None:
        m = self.multiplier(self.last_step + 1)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * m

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "kind": self.kind, "warmup": self.warmup, "max_steps": self.max_steps,
                "decay_start": self.decay_start}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; the shape of the schedule comes from the current config so
        a resumed run may, e.g., extend ``max_steps``."""
        self.last_step = int(state["last_step"])
        self._apply()
