"""Decoding: search (greedy/beam), sampling, length normalisation, decoding-model variants
and the text-level :class:`Translator`. See each module's docstring; ``Translator``,
``Hypothesis`` and ``generate`` are importable from here (loaded on first use, so that
``mt.decode.options`` stays cheap to import for the CLI)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Translator": "mt.decode.translator", "generate": "mt.decode.translator",
            "Hypothesis": "mt.decode.options", "DecodeOptions": "mt.config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mt.decode' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
