"""``train.ema_decay``: the weights' moving average is what validation and the saved models
use, it never changes the training trajectory, and it survives a resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from _train_tiny import make_prepared, write_config
from mt.config import load_config
from mt.modelio import load_model
from mt.train import checkpoint as ckpt
from mt.train.ema import WeightEMA
from mt.train.metrics import read_metrics
from mt.train.trainer import train


def test_average_follows_the_decay_schedule_and_applied_swaps_in_place() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.5)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 4.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        d = min(0.5, (1 + n) / (10 + n))  # 0.1, then 2/11, then 3/12: the warm-up wins early
        expected = d * expected + (1 - d) * value
        ema.update(model)
    assert torch.allclose(ema.shadow[0], torch.full((1, 2), expected))
    param = model.weight
    with ema.applied(model):
        assert model.weight is param and torch.allclose(model.weight, torch.full((1, 2), expected))
    assert model.weight is param and torch.equal(model.weight, torch.full((1, 2), 4.0))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("shared") / "run")


def _run(tmp_path, data_dir, name: str, **train_overrides):
    run = tmp_path / name
    run.mkdir()
    (run / "data").symlink_to(data_dir)
    settings = dict(max_steps=16, save_every=8, valid_every=8, log_every=2) | train_overrides
    return load_config(write_config(tmp_path / f"{name}.yaml", run, **settings))


def test_the_average_is_saved_and_validated_but_training_is_unchanged(tmp_path, data_dir, capsys) -> None:
    plain, averaged = _run(tmp_path, data_dir, "plain"), _run(tmp_path, data_dir, "ema", ema_decay=0.99)
    train(plain)
    assert "moving average" not in capsys.readouterr().err
    train(averaged)
    assert "validating and saving a moving average of the weights (ema_decay 0.99)" in capsys.readouterr().err
    last = {name: ckpt.load_checkpoint(ckpt.latest_checkpoint(cfg.run_path)) for name, cfg in (("plain", plain), ("ema", averaged))}
    # the raw trajectory is the same update for update: the average never feeds back
    assert all(torch.equal(last["plain"].model_state[k], v) for k, v in last["ema"].model_state.items())
    assert last["plain"].ema is None
    tensors, meta = last["ema"].ema
    assert meta == {"decay": 0.99, "updates": 16}
    shipped = load_model(averaged.run_path / "model_last").model.state_dict()
    assert all(torch.equal(shipped[k], v) for k, v in tensors.items())  # model_last is the average...
    assert not any(torch.equal(shipped[k], last["ema"].model_state[k]) for k in tensors)  # ... not the raw weights
    # ... and validation measured it: the same run, other weights, another valid loss
    valid = {name: [r["loss"] for r in read_metrics(cfg.run_path / "metrics.jsonl") if r["kind"] == "valid"]
             for name, cfg in (("plain", plain), ("ema", averaged))}  # fmt: skip
    assert len(valid["ema"]) == 2 and valid["ema"] != valid["plain"]


def test_a_resumed_run_continues_the_average(tmp_path, data_dir) -> None:
    whole = _run(tmp_path, data_dir, "whole", ema_decay=0.9)
    train(whole)
    half = _run(tmp_path, data_dir, "half", ema_decay=0.9, max_steps=8)
    train(half)
    train(load_config(write_config(tmp_path / "half.yaml", half.run_path, max_steps=16, save_every=8, valid_every=8,
                                   log_every=2, ema_decay=0.9)), resume=True)  # fmt: skip
    a = load_file(str(ckpt.latest_checkpoint(whole.run_path) / "ema.safetensors"))
    b = load_file(str(ckpt.latest_checkpoint(half.run_path) / "ema.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_decay_outside_its_range_is_a_config_error(tmp_path, data_dir) -> None:
    from mt.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.ema_decay: must be in \[0, 1\)"):
        _run(tmp_path, data_dir, "bad", ema_decay=1.0)


def test_turning_the_average_on_at_resume_starts_it_there(tmp_path, data_dir, capsys) -> None:
    cfg = _run(tmp_path, data_dir, "late", max_steps=8)
    train(cfg)
    train(load_config(write_config(tmp_path / "late.yaml", cfg.run_path, max_steps=16, save_every=8, valid_every=8,
                                   log_every=2, ema_decay=0.9)), resume=True)  # fmt: skip
    assert "train.ema_decay is new to this run; its average starts at step 8" in capsys.readouterr().err
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(cfg.run_path)).ema[1] == {"decay": 0.9, "updates": 8}
