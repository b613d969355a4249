"""Tiny corpora, configs and a random model for the back-translation tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import yaml

from mt.config import ModelConfig
from mt.model import Transformer
from mt.modelio import save_model

WORDS_DE = "ein zwei drei hund katze mann frau kind läuft springt spielt am im auf dem der die das".split()
WORDS_EN = "a two three dog cat man woman child runs jumps plays at in on the of big small".split()


def corpus(n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    """``n`` word-for-word "translations" (random words, seeded by ``offset``)."""
    rng = random.Random(offset)
    de, en = [], []
    for _ in range(n):
        idx = [rng.randrange(len(WORDS_DE)) for _ in range(rng.randint(3, 8))]
        de.append(" ".join(WORDS_DE[i] for i in idx) + ".")
        en.append(" ".join(WORDS_EN[i] for i in idx) + ".")
    return de, en


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def make_raw(raw: Path, n_train: int = 300, n_mono: int = 60) -> Path:
    """train/val/test bitext plus mono.de / mono.en under ``raw``."""
    for split, (n, off) in {"train": (n_train, 0), "val": (16, 1000), "test": (12, 2000)}.items():
        de, en = corpus(n, off)
        write(raw / f"{split}.de", de)
        write(raw / f"{split}.en", en)
    de, en = corpus(n_mono, 5000)
    write(raw / "mono.de", de)
    write(raw / "mono.en", en)
    return raw


def bt_config(tmp_path: Path, bt: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A de→en experiment with a d32 1+1-layer model, a few updates per stage, one thread."""
    raw = make_raw(tmp_path / "raw") if not (tmp_path / "raw" / "train.de").exists() else tmp_path / "raw"
    cfg: dict[str, Any] = {
        "run_dir": str(tmp_path / "bt"),
        "data": {
            "src_lang": "de", "tgt_lang": "en", "data_dir": str(raw),
            "train": {"src": "train.de", "tgt": "train.en"},
            "valid": {"src": "val.de", "tgt": "val.en"},
            "test": {"test1": {"src": "test.de", "tgt": "test.en"}},
            "spm": {"vocab_size": 320, "num_threads": 1, "user_symbols": ["<bt>"]},
        },
        "model": dict(preset=None, d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64, max_positions=64),
        "train": dict(seed=1, max_tokens=400, lr=3e-3, warmup_steps=2, max_steps=4, threads=1, valid_every=4,
                      save_every=4, log_every=2, valid_bleu=False, best_metric="loss", progress="off", peak_tflops=0.1),
        "decode": {"beam": 2, "max_len_b": 5},
        "backtranslate": {
            "rounds": 1, "mono_tgt": "mono.en", "mono_src": "mono.de",
            "generation": {"max_tokens": 400, "max_len_b": 5},
            "shard_size": 25,
            "device": "cpu", **(bt or {}),
        },
        **extra,
    }  # fmt: skip
    path = tmp_path / "bt.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def random_model(out: Path, text_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny model directory using the TextPipeline in ``text_dir``."""
    from mt.data.text import TextPipeline

    text = TextPipeline.load(text_dir, num_threads=1)
    torch.manual_seed(seed)
    cfg = ModelConfig(preset=None, vocab_size=text.vocab_size, d_model=32, n_heads=2, enc_layers=1, dec_layers=1,
                      ffn_dim=64, max_positions=64, dropout=0.0)  # fmt: skip
    return save_model(out, Transformer(cfg).eval(), text)
