"""Optional dependencies: which install extra provides what, and one error when one is missing.

``pip install mt`` is enough to prepare data, train without plots, translate, evaluate and
score; the extras (``pyproject.toml``) add what only some installs need::

    train    matplotlib (learning-curve and report plots), datasets (Hugging Face corpora)
    serve    fastapi, uvicorn, pydantic, ... (``mt serve``), the language identifier
    convert  ctranslate2 (``mt export --to ctranslate2``)

A command that needs a missing one stops with a one-line :class:`MissingDependencyError`
naming the extra to install, instead of an ``ImportError`` traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from mt.errors import UserError

# import name -> the extra that installs it
EXTRAS: dict[str, str] = {
    "matplotlib": "train",
    "datasets": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "pydantic": "serve",
    "prometheus_client": "serve",
    "py3langid": "serve",
    "ctranslate2": "convert",
}


class MissingDependencyError(UserError):
    """An optional package a command needs is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module``; if it is not installed, raise :class:`MissingDependencyError`
    saying that ``purpose`` (e.g. ``"mt serve"``) needs it and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise  # the package is there but something it imports is broken: a real error
        extra = EXTRAS.get(top)
        hint = f"pip install 'mt[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(f"{purpose} needs the Python package {top!r}, which is not installed: {hint}") from None


def pyplot() -> Optional[ModuleType]:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None without matplotlib (the
    ``train`` extra): plots are extras, their numbers are always written as text too."""
    if not available("matplotlib"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available(module: str) -> bool:
    """Whether ``module`` can be imported (for features that are skipped, not required)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True
