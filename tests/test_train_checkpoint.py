"""Checkpoints: round trip without pickle, corruption detection, pruning, averaging."""

import json
import random

import numpy as np
import pytest
import torch

from mt.config import ModelConfig, to_dict
from mt.model import Transformer
from mt.train import checkpoint as ckpt


def _model(seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(preset="tiny", vocab_size=40, d_model=16, n_heads=2, ffn_dim=32, enc_layers=1, dec_layers=1))


def _trained(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    src = torch.randint(4, 40, (3, 5))
    for _ in range(2):
        model(src, src).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    model = _model()
    opt = _trained(model)
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    ckpt.save_checkpoint(tmp_path, 7, model, opt, {"sampler": {"epoch": 1, "position": 3}, "x": [1, 2]})
    expected = (torch.rand(3), random.random(), np.random.rand())

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    c = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert c.step == 7 and c.state["trainer"] == {"sampler": {"epoch": 1, "position": 3}, "x": [1, 2]}
    model2 = _model(seed=1)
    model2.load_state_dict(c.model_state)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert model2.src_embed.weight is model2.tgt_embed.weight  # tie survives loading
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(c.optimizer_state)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for name, value in s1["state"][pid].items():
            assert torch.equal(value, s2["state"][pid][name])
    ckpt.set_rng_state(c.state["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    # tied weights are stored once
    assert "tgt_embed.weight" in c.state["aliases"]


def test_no_pickle_anywhere(tmp_path):
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, 1, model, _trained(model), {})
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]
    json.loads((path / "state.json").read_text())


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "bad_json"])
def test_damaged_checkpoint_is_detected_with_a_clear_message(tmp_path, damage):
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, 3, model, _trained(model), {})
    target = path / "optim.safetensors"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
        match = "truncated"
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        match = "checksum"
    elif damage == "delete":
        target.unlink()
        match = "missing"
    else:
        (path / "state.json").write_text('{"format": "mt-checkpoint", "files": {')
        match = "corrupt"
    with pytest.raises(ckpt.CheckpointError, match=match) as e:
        ckpt.load_checkpoint(path)
    assert str(path) in str(e.value)


def test_keep_last_prunes_and_temporaries_are_ignored(tmp_path):
    model = _model()
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, model, None, {}, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    half = ckpt.checkpoint_dir(tmp_path) / ".step_00000005.tmpabc"  # a killed writer's leftovers
    half.mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000004"
    ckpt.remove_stale_temporaries(tmp_path)
    assert not half.exists()


def test_average_checkpoints_writes_a_loadable_model_dir(tmp_path):
    from _train_tiny import make_prepared
    from mt.modelio import load_model

    run = tmp_path / "run"
    make_prepared(run, n_train=50, n_valid=5)
    from mt.data.text import TextPipeline

    vocab = TextPipeline.load(run / "data").vocab_size
    cfg = ModelConfig(preset=None, vocab_size=vocab, d_model=16, n_heads=2, ffn_dim=32, enc_layers=1, dec_layers=1)
    weights = []
    for step in (1, 2, 3):
        torch.manual_seed(step)
        m = Transformer(cfg)
        weights.append(m.state_dict())
        ckpt.save_checkpoint(run, step, m, None, {"model_config": to_dict(cfg), "step": step, "data_path": str(run / "data")})
    out = ckpt.average_checkpoints(run, tmp_path / "avg", last=2)
    loaded = load_model(out)
    expected = (weights[1]["encoder_layers.0.ffn.fc1.weight"] + weights[2]["encoder_layers.0.ffn.fc1.weight"]) / 2
    torch.testing.assert_close(loaded.model.state_dict()["encoder_layers.0.ffn.fc1.weight"], expected)
    assert loaded.meta["steps"] == [2, 3]
    # explicit inputs, including model directories
    out2 = ckpt.average_checkpoints(run, tmp_path / "avg2", inputs=[str(out), str(ckpt.list_checkpoints(run)[0])])
    assert load_model(out2).model.num_parameters() == loaded.model.num_parameters()


def test_average_refuses_to_replace_a_directory_that_is_not_a_model(tmp_path, capsys):
    """A mistyped --out must not delete the user's files: one-line error, directory intact;
    an earlier model directory is still replaced."""
    from _train_tiny import make_prepared
    from mt.cli import main

    run = tmp_path / "run"
    make_prepared(run, n_train=50, n_valid=5)
    from mt.data.text import TextPipeline

    vocab = TextPipeline.load(run / "data").vocab_size
    cfg = ModelConfig(preset=None, vocab_size=vocab, d_model=16, n_heads=2, ffn_dim=32, enc_layers=1, dec_layers=1)
    ckpt.save_checkpoint(run, 1, Transformer(cfg), None, {"model_config": to_dict(cfg), "step": 1, "data_path": str(run / "data")})
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    assert main(["average", str(run), "--out", str(precious), "--last", "1"]) == 2
    err = capsys.readouterr().err
    assert "thesis" in err and "not a model directory" in err and "Traceback" not in err
    assert (precious / "chapter1.tex").read_text() == "years of work"
    model_dir = tmp_path / "avg"
    assert main(["average", str(run), "--out", str(model_dir), "--last", "1"]) == 0
    assert main(["average", str(run), "--out", str(model_dir), "--last", "1"]) == 0  # a model dir is replaced
