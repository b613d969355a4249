"""``--model [NAME=]DIR`` specs: parse them and load the models.

Shared by the server CLI (:mod:`serve.cli`) and every decoding process
(:mod:`serve.processes`), so both give the models the same names.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from serve.engine import default_name


def parse_model_spec(spec: str) -> tuple[Optional[str], str]:
    """``"de-en=runs/x"`` → ``("de-en", "runs/x")``; ``"runs/x"`` → ``(None, "runs/x")``.
    A ``=`` after a path separator belongs to the directory name."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name and os.sep not in name:
        return name, path
    return None, spec


def load_models(specs: list[str]) -> dict[str, Any]:
    """Load ``[NAME=]DIR`` specs; names default to ``src-tgt`` from the metadata, else the dir."""
    from mt.modelio import load_model

    models: dict[str, Any] = {}
    for spec in specs:
        name, path = parse_model_spec(spec)
        loaded = load_model(path)
        name = name or default_name(loaded, path)
        if name in models:
            raise ValueError(f"--model {spec}: the name {name!r} is already used; give one as NAME=DIR")
        models[name] = loaded
    return models
