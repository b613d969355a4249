"""The benchmark scripts under ``bench/`` as modules, for tests that call their ``main`` or pieces."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bench_script(name: str) -> ModuleType:
    """``bench/<name>.py``, imported once (``bench`` is a namespace package under the repository root)."""
    return importlib.import_module(f"bench.{name}")
