"""Random-initialised model directories for tests, benchmarks and demos.

Writes a real model directory (``mt.modelio.save_model``) with a tiny SentencePiece model
trained on synthetic text, so the server, the tests and ``bench/serve_load.py`` can run
before any trained model exists. The translations are gibberish by construction; only the
*mechanics* (batching, limits, speed) are meaningful.

Not part of the installed packages: ``bench/`` scripts import it as ``bench.devmodel`` (they
put the repository root on ``sys.path``), the tests through ``tests/_serve_support.py``.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import torch

from mt.config import ModelConfig
from mt.data.text import TextPipeline, train_sentencepiece
from mt.model import Transformer
from mt.modelio import save_model

_SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "gu", "sch", "ein", "der", "ung", "en"]


def synthetic_sentences(n: int, seed: int = 1, n_words: int = 300) -> list[str]:
    """``n`` sentences over ``n_words`` made-up words (deterministic for a seed)."""
    rng = random.Random(seed)
    letters = "abcdefghiklmnoprstuvwyzäöü"
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(min(n_words, 300))]
    # beyond the syllable words: random letter strings, so large vocabularies can be learnt
    words += ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n_words - len(words))]
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))).capitalize() + rng.choice([".", "!", "?"])
        for _ in range(n)
    ]


def make_random_model_dir(
    out_dir: str | Path,
    preset: str = "tiny",
    src_lang: str = "de",
    tgt_lang: str = "en",
    vocab_size: int = 400,
    seed: int = 1,
) -> Path:
    """Write a random-init ``preset`` transformer with a synthetic-text SentencePiece model.

    ``meta["random_init"] = True`` marks it, so nobody mistakes it for a trained model.
    """
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        # big enough for SentencePiece to fill ~vocab_size pieces (a realistic output layer)
        lines = synthetic_sentences(max(3000, 3 * vocab_size), seed, n_words=max(300, 4 * vocab_size))
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        spm_path = train_sentencepiece([corpus], Path(tmp) / "spm", vocab_size, seed=seed, num_threads=1)
        text = TextPipeline(src_lang, tgt_lang, spm_path, normalize_punct=False)
        torch.manual_seed(seed)
        model = Transformer(ModelConfig(preset=preset, vocab_size=text.vocab_size)).eval()
        save_model(out, model, text, {"random_init": True, "preset": preset})
    return out
