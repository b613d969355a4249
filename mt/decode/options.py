"""What to generate and how: :class:`DecodeOptions`, and the :class:`Hypothesis` it yields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from mt.decode.lengths import MODES

SAMPLING_MODES = ("none", "topk", "topp", "beam_noise")


@dataclass
class Hypothesis:
    """One output. ``tokens``: target ids without the final EOS; ``score``: summed
    log-probability (EOS included) after length normalisation (see :mod:`mt.decode.lengths`);
    ``log_prob``: the same before normalisation."""

    text: str
    tokens: list[int] = field(default_factory=list)
    score: float = 0.0
    log_prob: float = 0.0


@dataclass
class DecodeOptions:
    """Decoding settings (the CLI's ``--beam`` … ``--max-tokens``, the config's ``decode:``).

    ``sampling``: ``none`` = beam search (greedy when ``beam == 1``); ``topk`` / ``topp`` =
    ancestral sampling of ``n_best`` outputs per sentence from the ``topk`` most likely
    tokens / the smallest set with probability ≥ ``topp``, after dividing logits by
    ``temperature``; ``beam_noise`` = beam search, then noise on the output
    (Edunov et al. 2018). ``seed`` makes sampling and noise reproducible.
    ``max_tokens``: padded source tokens per decoding batch.
    """

    beam: int = 5
    length_norm: str = "avg"
    alpha: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 1
    n_best: int = 1
    no_repeat_ngram: int = 0
    unk_penalty: float = 0.0
    sampling: str = "none"
    topk: int = 10
    topp: float = 0.9
    temperature: float = 1.0
    seed: int = 1
    max_tokens: int = 4096

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.length_norm not in MODES:
            raise ValueError(f"length_norm must be one of {MODES}, got {self.length_norm!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        # sampling draws n_best independent samples, so n_best is not bounded by beam there
        if self.n_best < 1 or (self.sampling in ("none", "beam_noise") and self.n_best > self.beam):
            raise ValueError(f"n_best must be in [1, beam={self.beam}], got {self.n_best}")
        if self.min_len < 0 or self.max_len_b < 0 or self.max_len_a < 0:
            raise ValueError("min_len, max_len_a and max_len_b must be >= 0")
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0, got {self.no_repeat_ngram}")
        if self.topk < 1 or not 0.0 < self.topp <= 1.0 or self.temperature <= 0:
            raise ValueError("need topk >= 1, 0 < topp <= 1 and temperature > 0")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def replace(self, **changes: Any) -> "DecodeOptions":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, cfg: Any, **changes: Any) -> "DecodeOptions":
        """From a :class:`mt.config.DecodeConfig` (``beam_size`` → ``beam``)."""
        values = dataclasses.asdict(cfg)
        values["beam"] = values.pop("beam_size")
        values.update(changes)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_args(cls, args: argparse.Namespace, n_best: Optional[int] = None) -> "DecodeOptions":
        """From the CLI's decoding argument group (``mt.cli._add_decode_options``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in names and v is not None}
        if n_best is not None:
            values["n_best"] = n_best
        return cls(**values)
