"""mt: neural machine translation — data, transformer, decoding, back-translation, serving."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def load_model(model_dir: str, device: str = "cpu") -> Any:
    """Load a model directory (config.json + model.safetensors + SentencePiece); see mt.modelio."""
    from mt.modelio import load_model as _load

    return _load(model_dir, device=device)
