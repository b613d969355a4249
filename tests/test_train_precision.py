"""``train.precision``: what ``auto`` trains in on each kind of device and CPU, and why."""

from __future__ import annotations

import pytest
import torch

import mt.train.trainer as trainer
from mt.config import ConfigError
from mt.runtime import PRECISION_PIN_ENV

CPU = torch.device("cpu")


@pytest.fixture
def cpu_with(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(PRECISION_PIN_ENV, raising=False)

    def flags(*native: str) -> None:
        monkeypatch.setattr(trainer, "native_bf16", lambda: list(native))

    return flags


def test_auto_is_bf16_only_where_the_cpu_has_native_bf16(cpu_with) -> None:
    cpu_with()
    bf16, why = trainer.training_precision("auto", CPU)
    assert bf16 is False and why == "auto: fp32, this CPU has no native bf16 (avx512_bf16 / amx_bf16)"
    cpu_with("amx_bf16")
    assert trainer.training_precision("auto", CPU) == (True, "auto: bf16, native on this CPU (amx_bf16)")
    assert trainer.training_precision("auto", torch.device("cuda")) == (True, "auto: bf16 on cuda")
    assert trainer.training_precision("auto", torch.device("mps"))[0] is False


def test_explicit_precision_is_kept_and_emulated_bf16_is_named(cpu_with) -> None:
    cpu_with()
    assert trainer.training_precision("fp32", CPU) == (False, "train.precision fp32")
    bf16, why = trainer.training_precision("bf16", CPU)
    assert bf16 is True and "no native bf16" in why and "set train.precision to auto or fp32" in why
    cpu_with("avx512_bf16")
    assert trainer.training_precision("bf16", CPU) == (True, "train.precision bf16")


def test_the_pin_decides_auto_and_a_bad_pin_is_one_clear_error(cpu_with, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_with("avx512_bf16")
    monkeypatch.setenv(PRECISION_PIN_ENV, "fp32")
    assert trainer.training_precision("auto", CPU) == (False, f"auto: fp32, pinned by {PRECISION_PIN_ENV}")
    assert trainer.training_precision("bf16", CPU)[0] is True  # a pin decides auto only
    monkeypatch.setenv(PRECISION_PIN_ENV, "int4")
    with pytest.raises(ConfigError, match=f"{PRECISION_PIN_ENV}='int4': expected fp32 or bf16"):
        trainer.training_precision("auto", CPU)
