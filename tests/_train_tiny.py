"""A tiny synthetic prepared-data directory and config for the trainer tests.

The "language pair" maps each source word to a fixed target word and reverses the order,
so a few dozen updates already lower the loss. Built directly with the data modules
(SentencePiece + binarize), so these tests do not depend on ``mt prepare``.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from mt.data.binarize import write_indexed
from mt.data.text import TextPipeline, train_sentencepiece

SRC_WORDS = ["haus", "baum", "katze", "hund", "rot", "blau", "gross", "klein", "und", "der", "die", "das"]
TGT_WORDS = ["house", "tree", "cat", "dog", "red", "blue", "big", "small", "and", "the", "thee", "that"]


def synthetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        idx = [rng.randrange(len(SRC_WORDS)) for _ in range(rng.randint(2, 9))]
        pairs.append((" ".join(SRC_WORDS[i] for i in idx), " ".join(TGT_WORDS[i] for i in reversed(idx))))
    return pairs


def make_prepared(run_dir: Path, n_train: int = 300, n_valid: int = 20, long_pairs: int = 0) -> Path:
    """Write ``run_dir/data`` in the prepared layout (CONTRACTS.md); returns the data dir.
    ``long_pairs`` appends that many 80-word pairs, longer than the test model's 64 positions."""
    data = run_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, valid = synthetic_pairs(n_train, 1), synthetic_pairs(n_valid, 2)
    train += [(" ".join(SRC_WORDS[i % 12] for i in range(80)), " ".join(TGT_WORDS[i % 12] for i in range(80)))] * long_pairs
    corpus = data / "spm_input.txt"
    corpus.write_text("\n".join(s + "\n" + t for s, t in train) + "\n", encoding="utf-8")
    model = train_sentencepiece([corpus], data / "spm", vocab_size=64, model_type="unigram", byte_fallback=False, num_threads=1, user_symbols=[])
    corpus.unlink()
    text = TextPipeline("de", "en", model, model, False, num_threads=1)
    text.save(data)
    for split, pairs in (("train", train), ("valid", valid)):
        src, tgt = [p[0] for p in pairs], [p[1] for p in pairs]
        write_indexed(data / f"{split}.de", text.encode_source(src), vocab_size=text.vocab_size)
        write_indexed(data / f"{split}.en", text.encode_target(tgt), vocab_size=text.vocab_size)
        if split == "valid":
            (data / "valid.de.txt").write_text("\n".join(src) + "\n", encoding="utf-8")
            (data / "valid.en.txt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return data


def write_config(path: Path, run_dir: Path, **train_overrides) -> Path:
    """A config for a 1+1-layer d32 model trained for a few dozen updates on one thread."""
    train = dict(
        seed=3, max_tokens=200, lr=3e-3, warmup_steps=5, max_steps=24, threads=1,
        valid_every=8, save_every=4, log_every=2, keep_last=3, valid_bleu=False,
        best_metric="loss", progress="off", peak_tflops=0.1,
    )  # fmt: skip
    train.update(train_overrides)
    cfg = {
        "run_dir": str(run_dir),
        "data": {"src_lang": "de", "tgt_lang": "en", "train": {"src": "unused.de", "tgt": "unused.en"}},
        "model": dict(preset=None, d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64, dropout=0.1, max_positions=64),
        "train": train,
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path
