"""Typed experiment configuration, loaded from YAML and validated once.

One YAML file describes an experiment; each command reads the sections it needs::

    run_dir: runs/multi30k_de_en
    data:   {...}   # mt prepare
    model:  {...}   # mt train
    train:  {...}   # mt train
    decode: {...}   # decoding: validation during training, then stored with the model

Every error names the file and the dotted field path (``model.n_heads``), so a typo
fails before any work starts instead of deep inside torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml

from mt.data import languages
from mt.errors import ConfigError  # re-exported: mt.config.ConfigError


# --------------------------------------------------------------------------- sections


@dataclass
class CorpusConfig:
    """One parallel corpus.

    ``format``: ``text`` (two aligned files ``src``/``tgt``), ``tsv`` / ``jsonl`` (one file
    ``path`` with columns/keys ``src_field``/``tgt_field``), or ``hf`` (a Hugging Face
    ``datasets`` name or local path in ``path``, with ``split``; translation-style rows
    ``{"translation": {"de": .., "en": ..}}`` or flat columns).
    Relative paths resolve against ``data.data_dir``.

    TSV fields are 0-based column numbers (default ``0`` and ``1``) or, when the file has a
    header line (``header: true``), column names. JSONL/HF fields default to the language
    codes (``{"de": .., "en": ..}`` or ``{"translation": {"de": .., "en": ..}}``).
    ``streaming`` (HF only): ``null`` streams hub datasets and loads local ones.
    """

    format: Literal["text", "tsv", "jsonl", "hf"] = "text"
    src: Optional[str] = None
    tgt: Optional[str] = None
    path: Optional[str] = None
    src_field: Optional[str] = None
    tgt_field: Optional[str] = None
    header: bool = False  # tsv: first line names the columns
    split: str = "train"
    hf_config: Optional[str] = None
    streaming: Optional[bool] = None

    def label(self) -> str:
        """A short name in reports: ``tatoeba/dev`` for ``tatoeba/dev.de`` + ``tatoeba/dev.en``."""
        if self.format != "text":
            return f"{self.path}:{self.split}" if self.format == "hf" else str(self.path)
        src, tgt = Path(str(self.src)), Path(str(self.tgt))
        return str(src.with_suffix("")) if src.with_suffix("") == tgt.with_suffix("") else f"{src} | {tgt}"

    def validate(self, where: str) -> None:
        if self.format == "text":
            if not self.src or not self.tgt:
                raise ConfigError(f"{where}: format 'text' needs both 'src' and 'tgt' file paths")
            if self.path:
                raise ConfigError(f"{where}.path: not used by format 'text' (use src/tgt)")
        else:
            if not self.path:
                raise ConfigError(f"{where}.path: format '{self.format}' needs 'path'")
            if self.src or self.tgt:
                name = "src" if self.src else "tgt"
                raise ConfigError(f"{where}.{name}: not used by format '{self.format}' (use path)")
        if self.format == "tsv" and not self.header:
            for name in ("src_field", "tgt_field"):
                value = getattr(self, name)
                if value is not None and not str(value).isdigit():
                    raise ConfigError(
                        f"{where}.{name}: a TSV without header takes a 0-based column number, got {value!r}"
                    )


def is_file_name_safe(name: str) -> bool:
    """Letters, digits, ``-`` and ``_``, starting with a letter or digit: safe in any file name."""
    return bool(name) and name[0].isalnum() and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


# fields of data.clean that decide the normalisation: the model sees text normalised one way
# at inference, so every training corpus must share them
SHARED_CLEAN_FIELDS = ("normalize_punct", "unicode_form")


@dataclass
class TrainCorpusConfig(CorpusConfig):
    """One named corpus of a ``data.train`` list (docs/data.md).

    ``weight``: relative share of each epoch's examples (epoch size = all corpora's cleaned
    pairs); ``upsample``: every pair repeated this many times per epoch. A list uses one kind
    for all its corpora; neither set = ``upsample: 1``. ``clean``: overrides of ``data.clean``
    filter fields for this corpus. ``test``: test sets that belong to this corpus; they join
    ``data.test`` (names unique across all).
    """

    name: str = ""
    weight: Optional[float] = None
    upsample: Optional[int] = None
    clean: dict[str, Any] = field(default_factory=dict)
    test: dict[str, CorpusConfig] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        if not is_file_name_safe(self.name):
            raise ConfigError(f"{where}.name: each corpus of a list needs a name of letters/digits/-/_, got {self.name!r}")
        super().validate(where)
        if self.weight is not None and not (0.0 < self.weight < math.inf):  # NaN fails too
            raise ConfigError(f"{where}.weight: corpus {self.name!r}: must be > 0, got {self.weight}")
        if self.upsample is not None and self.upsample < 1:
            raise ConfigError(f"{where}.upsample: corpus {self.name!r}: must be an integer >= 1, got {self.upsample}")
        if self.weight is not None and self.upsample is not None:
            raise ConfigError(f"{where}.upsample: corpus {self.name!r}: set weight or upsample, not both")
        for key in self.clean:
            if key in SHARED_CLEAN_FIELDS:
                raise ConfigError(
                    f"{where}.clean.{key}: corpus {self.name!r}: normalisation is shared by all corpora (set data.clean.{key})"
                )

    def mode(self) -> Optional[str]:
        return "weight" if self.weight is not None else "upsample" if self.upsample is not None else None


@dataclass
class CleanConfig:
    """Filters applied to the training bitext (valid/test are only normalised).

    ``normalize_punct``: Moses punctuation normalisation: ``auto`` (by language, see
    ``mt/data/languages.py``: on for Latin, Cyrillic and Greek script), for all languages
    (``true``/``false``) or per language (``{de: true, chr: false}``; languages not listed: ``auto``).
    ``unicode_form``: Unicode normalisation applied before everything else (``NFKC`` folds
    full-width forms and ligatures; ``auto`` = NFKC unless a language of the pair is one where
    it changes letters or punctuation the references keep, e.g. Chinese or Thai: then NFC).
    ``control_chars``: ``strip`` removes C0/C1 control characters from a line, ``drop`` drops
    the pair. ``invalid_utf8``: ``drop`` the pair (counted) or stop with an ``error`` naming
    file and line.
    """

    min_tokens: int = 1  # per side: whitespace tokens, or characters for Chinese, Japanese, Thai, ...
    max_tokens: int = 250  # per side, in words (a side counted in characters is rescaled: mt/data/clean.py)
    max_ratio: float = 3.0  # longer/shorter side, in the same rescaled lengths
    dedup: bool = True
    drop_identical: bool = True
    invalid_utf8: Literal["drop", "error"] = "drop"
    control_chars: Literal["strip", "drop"] = "strip"
    normalize_punct: Union[bool, Literal["auto"], dict[str, bool]] = "auto"  # Moses punctuation normalisation
    unicode_form: Literal["auto", "NFKC", "NFC", "none"] = "auto"

    def validate(self, where: str) -> None:
        if self.min_tokens < 0:
            raise ConfigError(f"{where}.min_tokens: must be >= 0, got {self.min_tokens}")
        if self.max_tokens < max(1, self.min_tokens):
            raise ConfigError(f"{where}.max_tokens: must be >= min_tokens and >= 1")
        if self.max_ratio < 1.0:
            raise ConfigError(f"{where}.max_ratio: must be >= 1.0, got {self.max_ratio}")

    def punct_for(self, lang: str) -> bool:
        """Whether Moses punctuation normalisation applies to ``lang``."""
        setting = self.normalize_punct
        if isinstance(setting, dict):
            setting = setting.get(lang, "auto")
        return languages.moses_punct(lang) if setting == "auto" else bool(setting)

    def unicode_form_for(self, langs: tuple[str, ...]) -> str:
        """The Unicode normalisation of text in the pair ``langs`` (``auto`` resolved)."""
        return languages.unicode_form(langs) if self.unicode_form == "auto" else self.unicode_form

    def resolved(self, src_lang: str, tgt_lang: str) -> "CleanConfig":
        """A copy with the ``auto`` settings decided for this pair (per-language punctuation)."""
        langs = (src_lang, tgt_lang)
        punct = {lang: self.punct_for(lang) for lang in langs}
        return dataclasses.replace(self, normalize_punct=punct, unicode_form=self.unicode_form_for(langs))


@dataclass
class SpmConfig:
    """SentencePiece settings. Ids 0..3 are always pad, unk, bos, eos.

    ``joint``: one model for both languages (needed for ``model.share_embeddings``) or one
    per language. ``byte_fallback`` spells characters outside the vocabulary as UTF-8 byte
    pieces, so decoding gives back every input exactly instead of ``⁇``.
    ``num_threads``: 0 = all CPU cores (training and batch encoding).
    ``character_coverage``: ``null`` = by script (``mt/data/languages.py``: 1.0 for alphabets
    and syllabaries, 0.9995 for CJK; a joint model takes the smaller of its two languages).
    """

    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    joint: bool = True
    character_coverage: Optional[float] = None
    byte_fallback: bool = True
    user_symbols: list[str] = field(default_factory=lambda: ["<bt>"])
    input_sentence_size: int = 2_000_000
    seed: int = 1
    num_threads: int = 0

    def validate(self, where: str) -> None:
        if self.vocab_size < 16:
            raise ConfigError(f"{where}.vocab_size: must be >= 16, got {self.vocab_size}")
        if self.character_coverage is not None and not 0.9 <= self.character_coverage <= 1.0:
            raise ConfigError(f"{where}.character_coverage: must be in [0.9, 1.0] (or null: by script)")
        for i, sym in enumerate(self.user_symbols):
            if not sym or any(c.isspace() for c in sym):
                raise ConfigError(f"{where}.user_symbols.{i}: must be non-empty without spaces, got {sym!r}")
        if self.input_sentence_size < 0 or self.num_threads < 0:
            name = "input_sentence_size" if self.input_sentence_size < 0 else "num_threads"
            raise ConfigError(f"{where}.{name}: must be >= 0")

    def coverage_for(self, langs: tuple[str, ...]) -> float:
        """``character_coverage`` of a model trained on text in ``langs`` (``null`` resolved)."""
        if self.character_coverage is not None:
            return self.character_coverage
        return languages.character_coverage(langs)


@dataclass
class DataConfig:
    """The ``data`` section: what ``mt prepare`` reads, cleans and binarises (docs/data.md).

    ``train`` is one corpus, or a list of named corpora (:class:`TrainCorpusConfig`) mixed by
    weight or upsampling. ``valid`` is the tuning set: one corpus, or a list of corpora read as
    one, interleaved so that every prefix samples each in proportion (a joint model tuned on
    all of its domains); ``test`` maps names (used in file names,
    e.g. ``test2016``) to corpora; the test sets named inside a training corpus join it.
    ``target_lang_tag`` prepends ``<2xx>`` (xx = ``tgt_lang``) to every source.
    ``spm_from``: a directory with a ``text.json`` (prepared data or model) whose SentencePiece
    model(s) are reused, so several corpora share one vocabulary (back-translation rounds);
    its languages may be this config's in either order. ``bleu_tokenize``: sacreBLEU tokenizer
    per output language (``{zh: char}``); languages not listed use mt/data/languages.py.
    """

    src_lang: str = "de"
    tgt_lang: str = "en"
    data_dir: Optional[str] = None  # default: $MT_DATA_DIR, else the download cache
    fetch: Optional[Literal["multi30k"]] = None  # dataset to fetch into data_dir if absent
    train: Union[CorpusConfig, list[TrainCorpusConfig], None] = None
    valid: Union[CorpusConfig, list[CorpusConfig], None] = None
    test: dict[str, CorpusConfig] = field(default_factory=dict)
    clean: CleanConfig = field(default_factory=CleanConfig)
    spm: SpmConfig = field(default_factory=SpmConfig)
    target_lang_tag: bool = False  # prepend <2xx> to sources (multilingual models)
    # reuse the SentencePiece model(s) of this directory (a prepared data dir or a model dir,
    # anything with text.json) instead of training new ones; data.spm is then ignored
    spm_from: Optional[str] = None
    bleu_tokenize: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a corpus's own test sets are test sets like any other: every reader of data.test
        # (prepare, the back-translation evaluation) sees them. Equal duplicates are fine, so
        # a config written back by to_dict loads again.
        if not isinstance(self.train, list):
            return
        self.test = dict(self.test)
        for corpus in self.train:
            for name, test in corpus.test.items():
                if name in self.test and self.test[name] != test:
                    raise ConfigError(f"test.{name}: corpus {corpus.name!r} names a test set that already exists")
                self.test[name] = test

    def validate(self, where: str) -> None:
        if self.train is None or self.train == []:
            raise ConfigError(f"{where}.train: a training corpus is required")
        for name in ("src_lang", "tgt_lang"):
            languages.check_code(getattr(self, name), f"{where}.{name}")
        if self.src_lang == self.tgt_lang:
            raise ConfigError(f"{where}.tgt_lang: must differ from src_lang ({self.src_lang!r})")
        if isinstance(self.train, list):
            self._validate_corpora(f"{where}.train")
        if self.valid == []:
            raise ConfigError(f"{where}.valid: an empty list; give a corpus, a list of corpora, or null")
        for name in self.test:
            if name in ("train", "valid") or not is_file_name_safe(name):
                raise ConfigError(
                    f"{where}.test.{name}: test set names must be letters/digits/-/_ and not train/valid"
                )
        for lang, tokenizer in self.bleu_tokenize.items():
            languages.check_code(lang, f"{where}.bleu_tokenize.{lang}")
            languages.check_tokenizer(tokenizer, f"{where}.bleu_tokenize.{lang}")

    def _validate_corpora(self, where: str) -> None:
        assert isinstance(self.train, list)
        seen: dict[str, int] = {}
        first_mode = next((c.mode() for c in self.train if c.mode()), None)
        for i, c in enumerate(self.train):
            if c.name in seen:
                raise ConfigError(f"{where}[{i}].name: {c.name!r} is also the name of {where}[{seen[c.name]}]")
            seen[c.name] = i
            if c.mode() not in (None, first_mode):
                raise ConfigError(
                    f"{where}[{i}].{c.mode()}: corpus {c.name!r}: the list mixes weight and upsample; "
                    "use one kind for all corpora"
                )
            self.clean_for(c, f"{where}[{i}].clean")  # overrides: known fields, valid values

    def train_corpora(self) -> list[TrainCorpusConfig]:
        """The training corpora as a list; a single ``train`` corpus is named ``train``."""
        if isinstance(self.train, list):
            return list(self.train)
        if self.train is None:
            return []
        values = {f.name: getattr(self.train, f.name) for f in dataclasses.fields(CorpusConfig)}
        return [TrainCorpusConfig(**values, name="train")]

    def clean_for(self, corpus: TrainCorpusConfig, where: str = "data.train.clean") -> CleanConfig:
        """``data.clean`` with ``corpus``'s overrides applied (and validated)."""
        if not corpus.clean:
            return self.clean
        return from_dict(CleanConfig, {**to_dict(self.clean), **corpus.clean}, where)

    def bleu_tokenize_for(self, lang: str) -> str:
        """sacreBLEU ``tokenize`` for output in ``lang`` (``bleu_tokenize``, else by language)."""
        return languages.bleu_tokenizer(lang, self.bleu_tokenize)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_heads=4, enc_layers=2, dec_layers=2, ffn_dim=128),
    "small": dict(d_model=256, n_heads=4, enc_layers=3, dec_layers=3, ffn_dim=1024),
    "base": dict(d_model=512, n_heads=8, enc_layers=6, dec_layers=6, ffn_dim=2048),
    "big": dict(d_model=1024, n_heads=16, enc_layers=6, dec_layers=6, ffn_dim=4096),
}


# generous upper bounds of the architecture fields, far above any real translation model;
# they exist so that a typo fails in validation instead of in a 100 GB allocation
MODEL_LIMITS: dict[str, int] = {
    "vocab_size": 1 << 21,
    "d_model": 16384,
    "n_heads": 1024,
    "enc_layers": 256,
    "dec_layers": 256,
    "ffn_dim": 131072,
    "max_positions": 1 << 16,
}
MAX_PARAMETERS = 4_000_000_000  # 16 GB of fp32 weights


@dataclass
class ModelConfig:
    """Transformer architecture. ``preset`` fills any field left unset (None)."""

    preset: Optional[Literal["tiny", "small", "base", "big"]] = "small"
    vocab_size: int = 0  # 0 = taken from the SentencePiece model at train time
    d_model: Optional[int] = None
    n_heads: Optional[int] = None
    enc_layers: Optional[int] = None
    dec_layers: Optional[int] = None
    ffn_dim: Optional[int] = None
    dropout: float = 0.1
    attn_dropout: float = 0.0
    act_dropout: float = 0.0
    activation: Literal["relu", "gelu", "swish"] = "relu"
    norm: Literal["pre", "post"] = "pre"
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: int = 1024
    scale_embedding: bool = True
    tie_output: bool = True  # decoder input embedding == output projection
    share_embeddings: bool = True  # encoder embedding == decoder embedding (joint vocab)
    layernorm_embedding: bool = False
    final_logits_bias: bool = False  # MarianMT has one
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    decoder_start_id: Optional[int] = None  # None = bos_id; MarianMT starts with pad

    def resolved(self) -> "ModelConfig":
        """Copy with preset values filled in for fields left as None."""
        values = dataclasses.asdict(self)
        preset = PRESETS.get(self.preset or "", {})
        for key, val in preset.items():
            if values[key] is None:
                values[key] = val
        missing = [k for k in ("d_model", "n_heads", "enc_layers", "dec_layers", "ffn_dim") if values[k] is None]
        if missing:
            raise ConfigError(f"model.{missing[0]}: not set and no preset given")
        return ModelConfig(**values)

    def validate(self, where: str) -> None:
        """Sizes positive and bounded (``MODEL_LIMITS``, ``MAX_PARAMETERS``: a typo such as
        ``d_model: 100000`` fails here, not by allocating 100 GB), heads dividing ``d_model``,
        special ids inside the vocabulary. ``vocab_size`` 0 means "from SentencePiece"."""
        r = self.resolved()
        for name, limit in MODEL_LIMITS.items():
            value = getattr(r, name)
            low = 0 if name == "vocab_size" else 1
            if not low <= value <= limit:
                bound = f">= {low} and <= {limit}" if low == 0 else f"in [1, {limit}]"
                raise ConfigError(f"{where}.{name}: must be {bound}, got {value}")
        if r.d_model % r.n_heads != 0:
            raise ConfigError(f"{where}.n_heads: {r.n_heads} heads do not divide d_model={r.d_model}")
        for name in ("dropout", "attn_dropout", "act_dropout"):
            value = getattr(r, name)
            if not 0.0 <= value < 1.0:  # NaN fails too
                raise ConfigError(f"{where}.{name}: must be in [0, 1), got {value}")
        for name in ("pad_id", "unk_id", "bos_id", "eos_id", "decoder_start_id"):
            value = getattr(r, name)
            if value is None:
                continue
            if value < 0 or (r.vocab_size and value >= r.vocab_size):
                top = f"vocab_size={r.vocab_size}" if r.vocab_size else "the vocabulary size"
                raise ConfigError(f"{where}.{name}: must be >= 0 and < {top}, got {value}")
        # the sinusoidal position table is a buffer of max_positions x d_model
        n = r.estimated_parameters() + (r.max_positions * r.d_model if r.positions == "sinusoidal" else 0)
        if n > MAX_PARAMETERS:
            raise ConfigError(
                f"{where}: about {n / 1e9:.1f} billion weights (d_model={r.d_model}, ffn_dim={r.ffn_dim}, "
                f"enc_layers={r.enc_layers}, dec_layers={r.dec_layers}, vocab_size={r.vocab_size}), "
                f"more than the limit of {MAX_PARAMETERS / 1e9:.0f} billion"
            )

    @property
    def start_id(self) -> int:
        """The token the decoder starts with: ``decoder_start_id``, or ``bos_id`` when unset."""
        return self.bos_id if self.decoder_start_id is None else self.decoder_start_id

    def estimated_parameters(self) -> int:
        """Parameters (unique tensors, tied ones once) of :class:`mt.model.Transformer` with
        this configuration, from the sizes alone: no tensor is allocated."""
        r = self.resolved()
        d, f, v = r.d_model, r.ffn_dim, r.vocab_size
        attn = 4 * d * d + 4 * d  # fused qkv (or q + kv) and output projections, with biases
        ffn = 2 * d * f + f + d
        norm = 2 * d
        enc = r.enc_layers * (attn + ffn + 2 * norm)
        dec = r.dec_layers * (2 * attn + ffn + 3 * norm)
        emb = v * d * (1 if r.share_embeddings else 2) + (0 if r.tie_output else v * d)
        pos = 2 * r.max_positions * d if r.positions == "learned" else 0
        extra = (2 * norm if r.layernorm_embedding else 0) + (2 * norm if r.norm == "pre" else 0)
        return enc + dec + emb + pos + extra


@dataclass
class TrainConfig:
    """The ``train`` section (``mt train``); see ``mt/train/trainer.py``.

    Batches hold ``max_tokens`` padded source+target tokens per process; one optimizer
    update sums ``update_freq`` batches on each of the ``world_size`` processes, and the
    loss is normalised by the target tokens of that whole update.
    """

    seed: int = 1
    max_tokens: int = 4096  # source+target-padded tokens per batch per process, see batching
    update_freq: int = 1  # gradient accumulation
    lr: float = 7e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0  # AdamW decoupled decay, matrices only (not biases/norms)
    warmup_steps: int = 1000
    schedule: Literal["inverse_sqrt", "linear", "cosine", "constant"] = "inverse_sqrt"
    # the peak is held from the end of warmup until this update, then decays (None: no hold;
    # inverse_sqrt then decays as sqrt(warmup / step), from update 1 when warmup is 0)
    decay_start: Optional[int] = None
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 = no clipping
    # moving average of the weights for validation and the saved models (0 = off; OpenNMT-py's
    # average_decay 1e-4 is 0.9999 here); training itself never sees it, see mt/train/ema.py
    ema_decay: float = 0.0
    max_steps: int = 100_000
    max_epochs: int = 1000
    max_time_minutes: Optional[float] = None  # wall-clock budget, validation included
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA and CPUs with native bf16, else fp32
    device: str = "auto"
    compile: bool = False  # torch.compile the model (on CPU no faster end to end: bench/results.md)
    threads: Optional[int] = None  # torch intra-op threads on CPU
    valid_every: int = 500
    valid_bleu: bool = True  # decode a valid subset for BLEU/chrF (else loss only)
    valid_bleu_sentences: int = 0  # 0 = all of valid
    valid_beam: int = 1
    best_metric: Literal["bleu", "loss", "chrf"] = "bleu"
    patience: int = 0  # validations without improvement before stopping; 0 = off
    save_every: int = 500
    keep_last: int = 5
    log_every: int = 50
    peak_tflops: Optional[float] = None  # hardware peak for MFU; None = table (GPU) or probe (CPU)
    progress: Literal["auto", "on", "off"] = "auto"  # tqdm bar; auto = only on a terminal
    # model directory whose weights initialise a new run (fine-tuning, continued BT rounds);
    # the architecture must match; optimizer and schedule start fresh; ignored on --resume
    init_from: Optional[str] = None

    def validate(self, where: str) -> None:
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr: must be positive, got {self.lr}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ConfigError(f"{where}.min_lr: must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.max_tokens <= 0:
            raise ConfigError(f"{where}.max_tokens: must be positive, got {self.max_tokens}")
        if self.update_freq < 1:
            raise ConfigError(f"{where}.update_freq: must be >= 1, got {self.update_freq}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"{where}.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{where}.ema_decay: must be in [0, 1) (0 = off), got {self.ema_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{where}.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.decay_start is not None and self.decay_start < self.warmup_steps:
            raise ConfigError(f"{where}.decay_start: must be >= warmup_steps ({self.warmup_steps}) or null, "
                              f"got {self.decay_start}")  # fmt: skip
        if self.max_steps <= 0 or self.max_epochs <= 0:
            name = "max_steps" if self.max_steps <= 0 else "max_epochs"
            raise ConfigError(f"{where}.{name}: must be positive, got {getattr(self, name)}")
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"{where}.betas[{i}]: must be in [0, 1), got {beta}")
        if self.eps <= 0:
            raise ConfigError(f"{where}.eps: must be positive, got {self.eps}")
        for name in ("weight_decay", "clip_norm", "patience", "valid_bleu_sentences"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("valid_every", "save_every", "log_every", "keep_last", "valid_beam"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be positive, got {getattr(self, name)}")
        for name in ("max_time_minutes", "threads", "peak_tflops"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{where}.{name}: must be positive (or null), got {value}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"{where}.device: expected auto, cpu, cuda, cuda:N or mps; got {dev!r}")


def _opt(default: Any, help: str, group: str = "search", low: Any = None, high: Any = None,
         low_open: bool = False, choices: tuple = ()) -> Any:
    """A :class:`DecodeOptions` field with what the CLI, the server schema and validation need:
    ``help``; ``group`` (``search``: what to generate, stored with a model; ``batch``:
    batching; ``model``: which decoding model is built, fixed once loaded); bounds ``low``
    (exclusive when ``low_open``) / ``high``; ``choices``."""
    meta = {"help": help, "group": group, "low": low, "high": high, "low_open": low_open, "choices": choices}
    return field(default=default, metadata=meta)


LENGTH_NORMS = ("avg", "gnmt", "none")
SAMPLING_MODES = ("none", "topk", "topp", "beam_noise")
ENGINES = ("torch", "ctranslate2")
DEVICES_HELP = "auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps"


@dataclass
class DecodeOptions:
    """Every decoding setting, defined once: the YAML ``decode:`` section, the flags of
    ``mt translate`` / ``evaluate`` / ``serve`` / back-translation generation
    (:mod:`mt.decode.options` generates them from these fields), the server's request
    schema, training's validation decoding (``replace(beam=...)``) and the defaults a model
    directory stores (the ``search`` group).

    ``sampling``: ``none`` = beam search (greedy when ``beam == 1``); ``topk`` / ``topp`` =
    ancestral sampling of ``n_best`` outputs per sentence from the ``topk`` most likely
    tokens / the smallest set with probability >= ``topp``, after dividing logits by
    ``temperature``; ``beam_noise`` = beam search, then noise on the output (Edunov et al.
    2018). ``seed`` makes sampling and noise reproducible.
    """

    beam: int = _opt(5, "beam size; 1 = greedy", low=1, high=1024)
    length_norm: str = _opt("avg", "avg: score/len^alpha; gnmt: score/((5+len)/6)^alpha; none",
                            choices=LENGTH_NORMS)
    alpha: float = _opt(1.0, "length normalisation exponent", low=0.0, high=10.0)
    max_len_a: float = _opt(1.2, "max output length = a * source length + b", low=0.0, high=100.0)
    max_len_b: int = _opt(10, "max output length = a * source length + b", low=0, high=100_000)
    min_len: int = _opt(1, "EOS is blocked before this many tokens", low=0, high=100_000)
    n_best: int = _opt(1, "hypotheses per input (<= beam for beam search); > 1 writes TSV", low=1, high=1024)
    no_repeat_ngram: int = _opt(0, "block repeated n-grams of this size (0 = off)", low=0, high=100)
    unk_penalty: float = _opt(0.0, "subtracted from the unknown token's log-prob", low=0.0, high=1e4)
    sampling: str = _opt("none", "sample instead of searching (back-translation)", choices=SAMPLING_MODES)
    topk: int = _opt(10, "sampling: draw from the k most likely tokens", low=1, high=1_000_000)
    topp: float = _opt(0.9, "sampling: draw from the nucleus of this mass", low=0.0, high=1.0, low_open=True)
    temperature: float = _opt(1.0, "sampling: divide logits by this", low=0.0, high=100.0, low_open=True)
    seed: int = _opt(1, "seed of sampling and noise", low=0, high=2**62)
    # 2,048: at beam 5 a batch holds sentences x 5 rows of cache; 4,096 was slower and ~1.4x the
    # memory on the 6M Multi30k model (bench/decode_memory.py, bench/results.md)
    max_tokens: int = _opt(2048, "padded source tokens per decoding batch", "batch", low=1, high=10_000_000)
    device: str = _opt("auto", DEVICES_HELP, "model")
    dtype: str = _opt("auto", "weights and activations (scores stay fp32); auto: bf16 where the CPU has native "
                      "bf16 and a probe finds it clearly faster, else fp32", "model",
                      choices=("auto", "fp32", "bf16", "fp16"))
    int8: bool = _opt(False, "int8 dynamic quantisation of the linear layers (CPU; not batch-invariant)", "model")
    pack: bool = _opt(True, "CPU: oneDNN-packed weights; --no-pack multiplies by the stored ones (F.linear)", "model")
    shortlist: bool = _opt(False, "logits only for the batch's likely target tokens (MODEL/shortlist.safetensors, "
                           "from `mt shortlist`): faster, approximate, not batch-invariant", "model")
    engine: str = _opt("torch", "torch: mt's own search (batch-invariant); ctranslate2: the model exported to "
                       "CTranslate2 and decoded by its C++ kernels (faster on CPU, not batch-invariant; "
                       "`pip install 'mt[convert]'`)", "model", choices=ENGINES)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Raise :class:`ConfigError` naming the first bad field by its path in ``where``
        (``decode.beam``); the CLI turns a field name into its flag (``--beam``)."""
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name), where)
        # sampling draws n_best independent samples, so n_best is not bounded by beam there
        if self.sampling in ("none", "beam_noise") and self.n_best > self.beam:
            raise ConfigError(f"{_label('n_best', where)}: must be <= {_label('beam', where)} "
                              f"({self.beam}) for beam search, got {self.n_best}")
        if self.int8 and self.dtype not in ("fp32", "auto"):
            raise ConfigError(f"{_label('int8', where)}: quantises fp32 weights; it cannot be combined with "
                              f"{_label('dtype', where)} {self.dtype}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"{_label('device', where)}: expected {DEVICES_HELP}; got {dev!r}")
        if self.engine == "ctranslate2":
            self._check_ctranslate2(where)

    def _check_ctranslate2(self, where: str) -> None:
        """What CTranslate2's search cannot do as mt does: a ConfigError naming the field."""
        unsupported = {"shortlist": self.shortlist, "sampling": self.sampling in ("topk", "topp"),
                       "length_norm": self.length_norm == "gnmt", "unk_penalty": self.unk_penalty > 0,
                       "device": self.device == "mps"}  # fmt: skip
        for name, bad in unsupported.items():
            if bad:
                raise ConfigError(f"{_label(name, where)}: {getattr(self, name)} is not available with "
                                  f"{_label('engine', where)} ctranslate2 (use {_label('engine', where)} torch)")

    def replace(self, **changes: Any) -> "DecodeOptions":
        return dataclasses.replace(self, **changes)

    def group(self, name: str) -> dict[str, Any]:
        """The fields of one group (``search``, ``batch``, ``model``) as a dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["group"] == name}


def _label(name: str, where: str) -> str:
    """The dotted field path (``decode.beam``), or the bare name where there is no section."""
    return f"{where}.{name}" if where else name


def _check_field(f: dataclasses.Field, value: Any, where: str) -> None:
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise ConfigError(f"{_label(f.name, where)}: must be one of {', '.join(m['choices'])}; got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = m.get("low"), m.get("high")
    if value != value:  # NaN fails every comparison below
        raise ConfigError(f"{_label(f.name, where)}: must be a number, got {value}")
    if low is not None and (value <= low if m["low_open"] else value < low):
        raise ConfigError(f"{_label(f.name, where)}: must be {'>' if m['low_open'] else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{_label(f.name, where)}: must be <= {high}, got {value}")


def bt_generation_default() -> DecodeOptions:
    """Back-translation's default generation: top-k sampling from the 10 most likely tokens
    (Edunov et al. 2018)."""
    return DecodeOptions(sampling="topk", topk=10)


@dataclass
class BTFilterConfig:
    """Filters for monolingual input lines and synthetic pairs (``backtranslate.filter``).

    Lengths are whitespace tokens, or characters rescaled to words for languages written
    without spaces (as the bitext cleaning counts them, ``mt/data/clean.py``). Monolingual
    lines that are empty, longer than ``max_tokens`` or not UTF-8 are dropped before
    generation; synthetic pairs are dropped when the generated side is empty, a side is longer
    than ``max_tokens``, the longer side exceeds ``max_ratio`` times the shorter, or
    (``dedup``) the pair was already kept.
    """

    max_tokens: int = 250
    max_ratio: float = 3.0
    dedup: bool = True

    def validate(self, where: str) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"{where}.max_tokens: must be >= 1, got {self.max_tokens}")
        if self.max_ratio < 1.0:
            raise ConfigError(f"{where}.max_ratio: must be >= 1.0, got {self.max_ratio}")


@dataclass
class BacktranslateConfig:
    """The ``backtranslate`` section (``mt backtranslate``); see ``mt/backtranslate/pipeline.py``.

    The experiment's ``data`` section is the forward direction (source → target, e.g. de→en);
    the reverse direction swaps it. ``mono_tgt`` (target-language text, back-translated by the
    reverse model into synthetic sources for the forward model) and ``mono_src`` (source-language
    text, translated by the forward model for the reverse model from round 2 on) resolve
    against the data directory like corpora. ``forward_model`` / ``reverse_model``: existing
    model directories used as the round-0 models instead of training them. ``forward_train`` /
    ``reverse_train``: ``train`` fields overridden for that direction's training stages;
    ``continue_train``: fields overridden (after those) for stages that start from the previous
    round's weights (``continue_from_previous``), typically a lower peak LR, a short warmup and
    a smaller step budget.
    """

    rounds: int = 1
    mono_tgt: Optional[str] = None
    mono_src: Optional[str] = None
    max_mono_lines: int = 0  # first N usable lines of each monolingual file; 0 = all
    # how the reverse model writes synthetic sources: sampling (topk, topp), beam search
    # (sampling: none), beam + noise (beam_noise) or greedy (sampling: none, beam: 1)
    generation: DecodeOptions = field(default_factory=bt_generation_default)
    # generation is cut into shards of this many lines; shard k is decoded with the seed mixed
    # with k, so a resumed or multi-process run writes exactly the lines an uninterrupted one would
    shard_size: int = 5000
    filter: BTFilterConfig = field(default_factory=BTFilterConfig)
    upsample: int = 1  # the bitext is repeated this many times next to the synthetic pairs
    tagged: bool = False  # prepend `tag` to synthetic sources (Caswell et al. 2019)
    tag: str = "<bt>"
    continue_from_previous: bool = False  # initialise round r's models from round r-1's
    # per round r >= 1, also train the forward model on the bitext alone, from the same start
    # and for the same number of updates: the control that separates back-translation's gain
    # from the extra training (report: "BT vs control")
    control: bool = False
    forward_model: Optional[str] = None
    reverse_model: Optional[str] = None
    forward_train: dict[str, Any] = field(default_factory=dict)
    reverse_train: dict[str, Any] = field(default_factory=dict)
    continue_train: dict[str, Any] = field(default_factory=dict)
    eval_beam: Optional[int] = None  # None = decode.beam
    eval_sentences: int = 0  # first N sentences of valid/test; 0 = all (report marks subsets)
    device: str = "auto"  # generation and evaluation

    def validate(self, where: str) -> None:
        if self.rounds < 0:
            raise ConfigError(f"{where}.rounds: must be >= 0, got {self.rounds}")
        if self.rounds >= 1 and not self.mono_tgt:
            raise ConfigError(f"{where}.mono_tgt: required for rounds >= 1 (target-language text)")
        if self.shard_size < 1:
            raise ConfigError(f"{where}.shard_size: must be >= 1, got {self.shard_size}")
        for name in ("max_mono_lines", "eval_sentences"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.upsample < 1:
            raise ConfigError(f"{where}.upsample: must be >= 1, got {self.upsample}")
        if not self.tag or any(c.isspace() for c in self.tag):
            raise ConfigError(f"{where}.tag: must be non-empty without spaces, got {self.tag!r}")
        if self.eval_beam is not None and self.eval_beam < 1:
            raise ConfigError(f"{where}.eval_beam: must be >= 1 (or null), got {self.eval_beam}")
        for name in ("forward_train", "reverse_train", "continue_train"):
            # the same checks as the train section (unknown keys, types, ranges)
            from_dict(TrainConfig, getattr(self, name), f"{where}.{name}")


@dataclass
class ExperimentConfig:
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    backtranslate: Optional[BacktranslateConfig] = None
    source_file: Optional[str] = None  # set by load_config; where relative paths resolve

    def validate(self, where: str) -> None:
        """Checks across sections."""
        bt = self.backtranslate
        if bt is not None and isinstance(self.data.train, list):
            raise ConfigError("data.train: mt backtranslate reads one bitext corpus, not a list of corpora")
        if bt is not None and bt.tagged and bt.tag not in self.data.spm.user_symbols and not self.data.spm_from:
            raise ConfigError(
                f"backtranslate.tag: {bt.tag!r} must be one of data.spm.user_symbols "
                f"({self.data.spm.user_symbols}) so it stays one piece"
            )

    @property
    def run_path(self) -> Path:
        return resolve_path(self.run_dir, self.source_file)

    @property
    def data_path(self) -> Path:
        """Prepared (binarised) data lives here."""
        return self.run_path / "data"


# --------------------------------------------------------------------------- loading


def resolve_path(path: str, relative_to_file: Optional[str] = None) -> Path:
    """Expand ``~``/``$VARS``; relative paths are taken from the current directory."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _fits_shape(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the container shape of annotation ``tp`` (scalars fit scalars)."""
    origin = get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return not isinstance(value, (dict, list, tuple))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (dataclasses, tuples)."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        # a mapping can only be a dataclass/dict arm, a list only a list arm: trying only those
        # keeps the real error (data.train.format: ...) instead of "matches none of"
        shaped = [a for a in args if a is not type(None) and _fits_shape(value, a)]
        for arg in shaped or args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            # YAML 1.1 reads on/off/yes/no as booleans; give a string choice its word back
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in args), value)
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if args else Any
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    ``where`` is the dotted prefix used in error messages. Each section's ``validate``
    is called after construction.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (allowed: {', '.join(sorted(names))})"
        )
    kwargs = {}
    defaults = {f.name: f.default_factory for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]) and name in defaults:
            value = {**to_dict(defaults[name]()), **value}  # keys not given keep the section's defaults
        kwargs[name] = _convert(value, hints[name], key)
    try:
        obj = cls(**kwargs)
    except ConfigError as e:  # raised by __post_init__ with the bare field name
        raise ConfigError(f"{where}.{e}" if where else str(e)) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where or cls.__name__)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data (JSON/YAML-ready) view of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Load and validate an experiment YAML; errors name the file and the field.

    ``overrides`` are ``section.key=value`` strings (value parsed as YAML), applied
    before validation, e.g. ``["train.max_steps=100", "model.preset=tiny"]``.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected an experiment YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            problem = getattr(e, "problem", None) or e
            raise ConfigError(f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}") from None
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config file (expected run_dir, data, model, train... sections)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in overrides or []:
        apply_override(data, item)
    data.pop("source_file", None)
    try:
        cfg = from_dict(ExperimentConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.source_file = str(path)
    return cfg


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` inside nested dict ``data`` (value parsed as YAML). A key inside a
    list picks an entry by its ``name`` (``data.train.tatoeba.weight=2``) or by position
    (``data.train.0.weight=2``), as corpora are named lists."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. train.max_steps=100")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, item, ".".join(parts[:i]))]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {item}: {part} is not a section")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item}: the value is not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if isinstance(node, list):
        node[_list_index(node, parts[-1], item, ".".join(parts[:-1]))] = value
    else:
        node[parts[-1]] = value


def _list_index(entries: list[Any], part: str, item: str, where: str) -> int:
    """The position of ``part`` in a list section: an entry's ``name``, else a 0-based index."""
    names = [e.get("name") if isinstance(e, dict) else None for e in entries]
    if part in names:
        return names.index(part)
    if part.isdigit() and int(part) < len(entries):
        return int(part)
    known = ", ".join(str(n) for n in names if n is not None)
    raise ConfigError(f"--set {item}: {where} has no entry {part!r} "
                      f"({'names: ' + known + '; or ' if known else ''}an index below {len(entries)})")  # fmt: skip
