"""mt: neural machine translation — data, transformer, decoding, back-translation, serving."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {"load_model": "mt.modelio", "Translator": "mt.decode.translator", "DecodeOptions": "mt.config"}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Load the exported names on first use (PEP 562): ``import mt`` imports no torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mt' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
