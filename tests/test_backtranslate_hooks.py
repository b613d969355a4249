"""The two hooks back-translation adds to existing stages: `data.spm_from` (prepare reuses a
SentencePiece model) and `train.init_from` (a run starts from a model's weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from _bt_support import bt_config
from _train_tiny import make_prepared, write_config

from mt.config import ConfigError, load_config
from mt.data import DataError
from mt.data.prepare import prepare
from mt.data.text import TextPipeline


def _prepare_cfg(tmp_path: Path, name: str, **data):
    """The back-translation test corpus as a plain experiment (no backtranslate section)."""
    raw = yaml.safe_load(bt_config(tmp_path).read_text())
    raw.pop("backtranslate")
    raw["run_dir"] = str(tmp_path / name)
    raw["data"].update(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return load_config(path)


def test_spm_from_reuses_the_model_in_either_direction(tmp_path: Path, capsys) -> None:
    first = prepare(_prepare_cfg(tmp_path, "a"), progress=False)
    # the reverse direction with the same SentencePiece model; a smaller spm.vocab_size is ignored
    rev = _prepare_cfg(tmp_path, "b", src_lang="en", tgt_lang="de", spm_from=str(first),
                       train={"src": "train.en", "tgt": "train.de"}, valid={"src": "val.en", "tgt": "val.de"},
                       test={}, spm={"vocab_size": 16, "num_threads": 1})  # fmt: skip
    out = prepare(rev, progress=False)
    assert (out / "spm.model").read_bytes() == (first / "spm.model").read_bytes()
    text = TextPipeline.load(out)
    assert (text.src_lang, text.tgt_lang) == ("en", "de")
    assert text.piece_to_id("<bt>") == TextPipeline.load(first).piece_to_id("<bt>") != text.src_sp.unk_id()
    # unchanged inputs: a no-op; a different reused model: rebuilt
    capsys.readouterr()
    prepare(rev, progress=False)
    assert "up to date" in capsys.readouterr().out
    other = prepare(_prepare_cfg(tmp_path, "c", spm={"vocab_size": 300, "num_threads": 1}), progress=False)
    rev.data.spm_from = str(other)
    prepare(rev, progress=False)
    assert "up to date" not in capsys.readouterr().out
    assert (out / "spm.model").read_bytes() == (other / "spm.model").read_bytes()


def test_spm_from_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.spm_from"):
        prepare(_prepare_cfg(tmp_path, "x", spm_from=str(tmp_path / "nothing")), progress=False)
    first = prepare(_prepare_cfg(tmp_path, "a"), progress=False)
    fr = _prepare_cfg(tmp_path, "fr", tgt_lang="fr", spm_from=str(first))
    with pytest.raises(DataError, match="no 'fr'"):
        prepare(fr, progress=False)


def test_init_from_starts_from_the_given_weights(tmp_path: Path) -> None:
    from mt.modelio import load_model
    from mt.train.trainer import Trainer, train

    run_a = tmp_path / "a"
    make_prepared(run_a)
    cfg_a = load_config(write_config(tmp_path / "a.yaml", run_a, max_steps=4, valid_every=4, save_every=4))
    train(cfg_a)
    source = load_model(run_a / "model_last").model

    run_b = tmp_path / "b"
    (run_b).mkdir()
    (run_b / "data").symlink_to(run_a / "data")
    cfg_b = load_config(write_config(tmp_path / "b.yaml", run_b, max_steps=4, seed=9), [f"train.init_from={run_a / 'model_last'}"])
    trainer = Trainer(cfg_b)
    for (name, p), q in zip(trainer.model.state_dict().items(), source.state_dict().values()):
        assert torch.equal(p, q), name
    # a different architecture is refused with the field named
    cfg_c = load_config(write_config(tmp_path / "c.yaml", tmp_path / "c", max_steps=4), [f"train.init_from={run_a / 'model_last'}", "model.ffn_dim=48"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data").symlink_to(run_a / "data")
    with pytest.raises(ConfigError, match="train.init_from"):
        Trainer(cfg_c)
