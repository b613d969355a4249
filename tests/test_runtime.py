"""CPU runtime settings: flush-to-zero is scoped, malloc tuning applies on glibc."""

import sys

import pytest
import torch

from mt.runtime import denormals_flushed, tune_malloc

SUBNORMAL = 1e-40  # below float32's smallest normal (1.18e-38)


def _survives() -> bool:
    return bool((torch.tensor([SUBNORMAL], dtype=torch.float32) * 1.0).item() != 0.0)


def test_flush_to_zero_only_inside_the_block():
    assert _survives()
    with denormals_flushed():
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU has no flush-to-zero control")
        assert not _survives()
    assert _survives()  # library users' float code keeps IEEE subnormals


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc-only")
def test_tune_malloc_applies_on_glibc():
    assert tune_malloc() is True
