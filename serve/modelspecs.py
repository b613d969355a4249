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


# ---------------------------------------------------------------------------- the files served

Manifest = dict[str, dict[str, str]]
"""``{model directory (absolute): {file name: sha256}}``."""


def model_manifest(specs: list[str]) -> Manifest:
    """sha256 of every regular file directly in each ``--model`` directory (weights, config,
    text pipeline, shortlist): what the server started with. A decoding process that replaces
    a dead one checks its files against this (:func:`check_manifest`), so it serves the very
    model the others serve, or none."""
    from mt.fileio import sha256_file

    manifest: Manifest = {}
    for spec in specs:
        d = os.path.abspath(parse_model_spec(spec)[1])
        if not os.path.isdir(d):  # loading it fails with the loader's own error
            manifest[d] = {}
            continue
        manifest[d] = {e.name: sha256_file(e.path) for e in sorted(os.scandir(d), key=lambda e: e.name)
                       if e.is_file() and not e.name.startswith(".")}
    return manifest


def check_manifest(manifest: Manifest) -> None:
    """Raise ``ValueError`` naming the first model directory whose files are not those of
    ``manifest`` (one missing or with other contents). Files added since do not count: the
    loaders read fixed names (``text.json`` names the SentencePiece files)."""
    from mt.fileio import sha256_file

    for d, files in manifest.items():
        if not os.path.isdir(d):
            raise ValueError(f"model directory {d} no longer exists (it was there at start-up)")
        for name, digest in files.items():
            path = os.path.join(d, name)
            if not os.path.isfile(path):
                raise ValueError(f"model directory {d} changed since start-up: {name} is missing")
            if sha256_file(path) != digest:
                raise ValueError(f"model directory {d} changed since start-up: {name} has other contents")
