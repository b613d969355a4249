"""Where the integration tests find the real data: ``$MT_DATA_DIR``, else ``../shared/data``
beside the repository; tests that need a corpus skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MT_DATA_DIR") or REPO.parent / "shared" / "data")


def multi30k_dir() -> Path:
    """``DATA/multi30k``, or skip the test."""
    path = DATA / "multi30k"
    if not (path / "train.de").is_file():
        pytest.skip(f"Multi30k not found at {path} (set MT_DATA_DIR to the folder holding multi30k/)")
    return path
