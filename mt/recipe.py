"""``mt recipe init`` / ``mt recipe run``: any language pair, from raw text to a served model.

``init`` reads the user's corpora (checking every file and counting the pairs by lines), picks
the model, vocabulary, dropout, batch and training length by corpus size (:data:`SIZE_TABLE`,
evidence in docs/recipes.md), holds out valid/test pairs when none are given, and writes one
commented YAML config to edit. ``run`` executes such a config, stage by stage::

    without monolingual text:  prepare → train → final → evaluate → report
    with monolingual text:     backtranslate (mt backtranslate: prepare + train of both
                               directions, BT rounds, final_model) → evaluate → report

Each stage is recorded in ``run_dir/recipe_manifest.json`` (the back-translation pipeline's
:class:`~mt.backtranslate.pipeline.Manifest`) and logged to ``run_dir/recipe.jsonl``; a killed run
continues with ``--resume``: finished stages are skipped, an interrupted training resumes from its
last checkpoint and an interrupted back-translation run at its own stage (its own manifest).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import yaml

from mt.config import ConfigError, CorpusConfig, DecodeOptions, is_file_name_safe, apply_override, from_dict, to_dict
from mt.errors import MissingFileError
from mt.fileio import atomic_dir, atomic_write, atomic_write_json, atomic_write_text, count_lines, exclusive_dir

if TYPE_CHECKING:
    from mt.config import ExperimentConfig

MANIFEST = "recipe_manifest.json"
RECIPE_LOCK = ".recipe.lock"  # held by a running `mt recipe run` (mt.fileio.exclusive_dir)
LOG = "recipe.jsonl"
HELD_OUT_MAX = 1000  # pairs per held-out split (valid, test) and corpus
HELD_OUT_SHARE = 20  # else 1/20 of the corpus


# --------------------------------------------------------------------------- the size table


@dataclass(frozen=True)
class SizeSettings:
    """Defaults for corpora of fewer than ``below`` training pairs (``None``: no bound)."""

    bucket: str
    below: Optional[int]
    d_model: int
    n_heads: int
    layers: int  # encoder and decoder each
    ffn_dim: int
    vocab_size: int  # joint SentencePiece vocabulary
    dropout: float
    attn_dropout: float
    act_dropout: float
    max_tokens: int  # per batch (source + target, padded)
    update_freq: int
    lr: float
    warmup_steps: int
    max_steps: int
    valid_every: int
    bt_rounds: int
    bt_sampling: str  # how synthetic sources are generated: "none" = beam search, "topk" = sampling
    evidence: str

    def model_section(self) -> dict[str, Any]:
        return dict(preset=None, d_model=self.d_model, n_heads=self.n_heads, enc_layers=self.layers,
                    dec_layers=self.layers, ffn_dim=self.ffn_dim, dropout=self.dropout, attn_dropout=self.attn_dropout,
                    act_dropout=self.act_dropout, share_embeddings=True, tie_output=True)  # fmt: skip

    def parameters(self) -> int:
        """Weights of this model at this vocabulary size (tied, shared embeddings)."""
        from mt.config import ModelConfig

        return ModelConfig(**{**self.model_section(), "vocab_size": self.vocab_size}).estimated_parameters()


_LOW = ("Sennrich & Zhang 2019 (low-resource NMT: smaller subword vocabularies, smaller batches, "
        "more dropout, a smaller model); Araabi & Monz 2020 (the same for the Transformer)")  # fmt: skip
SIZE_TABLE: tuple[SizeSettings, ...] = (
    SizeSettings("tiny", 5_000, 256, 4, 2, 512, 2_000, 0.3, 0.1, 0.1, 2048, 1, 1e-3, 400, 4_000, 200, 2, "none", _LOW),
    SizeSettings("very_low", 20_000, 256, 4, 3, 512, 4_000, 0.3, 0.1, 0.1, 2048, 1, 1e-3, 600, 8_000, 250, 2, "none", _LOW),
    SizeSettings("low", 80_000, 256, 8, 3, 512, 8_000, 0.2, 0.0, 0.0, 4096, 1, 1.5e-3, 600, 12_000, 500, 2, "none",
                 "this project's Multi30k recipe (29k pairs, d256 3+3, 8k vocabulary, dropout 0.2: 41.1 test2016 BLEU)"),
    SizeSettings("medium", 400_000, 512, 4, 6, 1024, 10_000, 0.3, 0.0, 0.0, 4096, 1, 5e-4, 4000, 60_000, 1000, 1, "topk",
                 "fairseq's IWSLT'14 de-en example (160k pairs): transformer_iwslt_de_en, 10k joint BPE, dropout 0.3"),
    SizeSettings("high", 2_000_000, 512, 8, 6, 2048, 16_000, 0.1, 0.0, 0.0, 8192, 2, 7e-4, 4000, 100_000, 2000, 1, "topk",
                 "Vaswani et al. 2017, Transformer base"),
    SizeSettings("very_high", None, 512, 8, 6, 2048, 32_000, 0.1, 0.0, 0.0, 8192, 4, 7e-4, 4000, 200_000, 2500, 1, "topk",
                 "Vaswani et al. 2017, Transformer base on WMT14 en-de (4.5M pairs, 37k BPE, ~25k tokens per batch)"),
)  # fmt: skip


def settings_for(pairs: int) -> SizeSettings:
    """The row of :data:`SIZE_TABLE` for a corpus of ``pairs`` training pairs."""
    return next(s for s in SIZE_TABLE if s.below is None or pairs < s.below)


# --------------------------------------------------------------------------- corpora named on the command line


@dataclass
class CorpusArg:
    """One ``--train`` / ``--valid`` / ``--test`` value: ``[NAME=]SRC,TGT`` or ``[NAME=]FILE``
    (``.tsv``, ``.jsonl``, a Hugging Face ``save_to_disk`` directory, optionally ``DIR@SPLIT``),
    with ``:WEIGHT`` after it for ``--train``."""

    flag: str
    raw: str
    name: Optional[str]
    corpus: CorpusConfig
    weight: Optional[float] = None

    @property
    def where(self) -> str:
        return f"{self.flag} {self.raw}"

    def paths(self) -> list[Path]:
        c = self.corpus
        return [Path(p) for p in ((c.src, c.tgt) if c.format == "text" else (c.path,)) if p]


def _split_name(value: str) -> tuple[Optional[str], str]:
    head, sep, rest = value.partition("=")
    if sep and "/" not in head and is_file_name_safe(head):
        return head, rest
    return None, value


def _split_weight(value: str, where: str) -> tuple[str, Optional[float]]:
    head, sep, tail = value.rpartition(":")
    if not sep:
        return value, None
    try:
        weight = float(tail)
    except ValueError:
        return value, None  # a ':' inside a path
    if not 0.0 < weight < float("inf"):
        raise ConfigError(f"{where}: the weight after ':' must be > 0, got {tail}")
    return head, weight


def _corpus_from(path_spec: str, where: str) -> CorpusConfig:
    if "," in path_spec:
        src, tgt = (p.strip() for p in path_spec.split(",", 1))
        if not src or not tgt:
            raise ConfigError(f"{where}: expected SRC_FILE,TGT_FILE")
        return CorpusConfig(format="text", src=_absolute(src), tgt=_absolute(tgt))
    base, at, split = path_spec.rpartition("@")
    if at and Path(base).is_dir():
        return CorpusConfig(format="hf", path=_absolute(base), split=split or "train")
    path = Path(path_spec)
    if path.is_dir():
        return CorpusConfig(format="hf", path=_absolute(path_spec))
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return CorpusConfig(format="tsv", path=_absolute(path_spec))
    if suffix in (".jsonl", ".json"):
        return CorpusConfig(format="jsonl", path=_absolute(path_spec))
    if not path.exists():
        raise MissingFileError(f"{where}: file not found: {path}")
    raise ConfigError(
        f"{where}: expected SRC_FILE,TGT_FILE, a .tsv or .jsonl file, or a Hugging Face dataset directory (DIR[@SPLIT])"
    )


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def parse_corpus_arg(value: str, flag: str, weighted: bool = False) -> CorpusArg:
    """Parse one corpus flag value; a one-line :class:`ConfigError` naming the flag if malformed."""
    where = f"{flag} {value}"
    name, rest = _split_name(value)
    weight = None
    if weighted:
        rest, weight = _split_weight(rest, where)
    return CorpusArg(flag, value, name, _corpus_from(rest, where), weight)


def count_pairs(arg: CorpusArg, src_lang: str, tgt_lang: str) -> int:
    """The pairs of a corpus, checked: files present, aligned, not empty. Text/TSV/JSONL
    count lines; a Hugging Face dataset is read through (its rows)."""
    for path in arg.paths():
        if not path.exists():
            raise MissingFileError(f"{arg.where}: file not found: {path}")
    c = arg.corpus
    if c.format == "text":
        src, tgt = arg.paths()
        n_src, n_tgt = count_lines(src), count_lines(tgt)
        if n_src != n_tgt:
            longer = src if n_src > n_tgt else tgt
            raise ConfigError(
                f"{arg.where}: line counts differ: {src} has {n_src} lines, {tgt} has {n_tgt} lines "
                f"(first line without a partner: {longer}:{min(n_src, n_tgt) + 1})"
            )
        n = n_src
    elif c.format in ("tsv", "jsonl"):
        n = count_lines(arg.paths()[0]) - int(c.header)
    else:
        from mt.data.sources import open_corpus

        n = sum(1 for _ in open_corpus(c, src_lang, tgt_lang, None, "drop", arg.where))
    if n == 0:
        raise ConfigError(f"{arg.where}: no pairs (the file is empty)")
    return n


# --------------------------------------------------------------------------- holding out valid/test pairs


@dataclass
class HeldOut:
    """Where one corpus's split went: the training files and the held-out (valid, test) files."""

    train: CorpusConfig
    valid: Optional[tuple[Path, Path]]
    test: Optional[tuple[Path, Path]]
    counts: dict[str, int]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _read_pairs(corpus: CorpusConfig, src_lang: str, tgt_lang: str, where: str) -> Iterator[tuple[str, str]]:
    from mt.data.sources import open_corpus

    return iter(open_corpus(corpus, src_lang, tgt_lang, None, "drop", where))


def held_out_size(pairs: int) -> int:
    """Pairs held out for each missing split: 1/20 of the corpus, at most 1,000 (at least 1)."""
    return max(1, min(HELD_OUT_MAX, pairs // HELD_OUT_SHARE))


def hold_out(arg: CorpusArg, src_lang: str, tgt_lang: str, out_dir: Path, prefix: str,
             n_valid: int, n_test: int) -> HeldOut:  # fmt: skip
    """Split ``arg``'s corpus into train / valid / test text files under ``out_dir``.

    Deterministic: the pairs whose source sentences have the smallest hashes are held out
    (the first ``n_valid`` for valid, the next ``n_test`` for test), so the choice does not
    depend on the file's order (a corpus sorted by length still gives a mixed sample), and every
    training pair whose source equals a held-out source is dropped too, so no test sentence is
    also a training sentence."""
    hashes = [_hash(s) for s, _ in _read_pairs(arg.corpus, src_lang, tgt_lang, arg.where)]
    order = sorted(range(len(hashes)), key=lambda i: (hashes[i], i))
    valid_ids = set(order[:n_valid])
    test_ids = set(order[n_valid : n_valid + n_test])
    held_hashes = {hashes[i] for i in valid_ids | test_ids}
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {"train": f"{prefix}train", "valid": f"{prefix}valid", "test": f"{prefix}test"}
    files = {split: (out_dir / f"{stem}.{src_lang}", out_dir / f"{stem}.{tgt_lang}") for split, stem in names.items()}
    counts = dict.fromkeys(names, 0) | {"dropped_duplicates": 0}
    with contextlib.ExitStack() as stack:  # every file replaced, or (on an error) none
        w = {split: (stack.enter_context(atomic_write(a)), stack.enter_context(atomic_write(b)))
             for split, (a, b) in files.items()}  # fmt: skip
        for i, (s, t) in enumerate(_read_pairs(arg.corpus, src_lang, tgt_lang, arg.where)):
            split = "valid" if i in valid_ids else "test" if i in test_ids else "train"
            if split == "train" and hashes[i] in held_hashes:
                counts["dropped_duplicates"] += 1
                continue
            w[split][0].write(s + "\n")
            w[split][1].write(t + "\n")
            counts[split] += 1
    train = CorpusConfig(format="text", src=str(files["train"][0]), tgt=str(files["train"][1]))
    return HeldOut(train, files["valid"] if n_valid else None, files["test"] if n_test else None, counts)


# --------------------------------------------------------------------------- building the config


@dataclass
class InitOptions:
    """What ``mt recipe init`` was given (see :func:`add_recipe_parser`)."""

    src: str
    tgt: str
    train: list[str]
    out: str
    valid: list[str] = dataclasses.field(default_factory=list)
    test: list[str] = dataclasses.field(default_factory=list)
    mono_src: Optional[str] = None
    mono_tgt: Optional[str] = None
    run_dir: Optional[str] = None
    max_minutes: Optional[float] = None
    threads: Optional[int] = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    force: bool = False
    command: str = ""  # the command line, quoted at the top of the config


@dataclass
class Plan:
    """The config ``init`` writes, and why: the size row, the pair count, notes to print."""

    config: dict[str, Any]
    settings: SizeSettings
    pairs: int
    notes: list[str]
    comments: dict[str, str]


def _data_relative(path: str, data_dir: Path) -> str:
    """``path`` relative to the data directory when it lies inside it (a portable config)."""
    try:
        return str(Path(path).relative_to(data_dir.resolve()))
    except ValueError:
        return path


def _corpus_dict(corpus: CorpusConfig, data_dir: Path) -> dict[str, Any]:
    d = {k: v for k, v in to_dict(corpus).items() if v != getattr(CorpusConfig(), k) or k in ("src", "tgt", "path")}
    for key in ("src", "tgt", "path"):
        if d.get(key):
            d[key] = _data_relative(d[key], data_dir)
    return {k: v for k, v in d.items() if v is not None}


def _check_languages(o: InitOptions) -> None:
    from mt.data.languages import check_code

    check_code(o.src, "--src")
    check_code(o.tgt, "--tgt")
    if o.src == o.tgt:
        raise ConfigError(f"--tgt: must differ from --src ({o.src!r})")


def _check_mono(flag: str, path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{flag} {path}: file not found")
    if p.stat().st_size == 0:
        raise ConfigError(f"{flag} {path}: no text (the file is empty)")
    return _absolute(path)


def _check_out(o: InitOptions) -> None:
    out = Path(o.out)
    if out.is_dir():
        raise ConfigError(f"--out {o.out}: is a directory, expected a YAML file name")
    if out.exists() and not o.force:
        raise ConfigError(f"--out {o.out}: exists; use --force to overwrite it")
    if not out.parent.is_dir():
        raise MissingFileError(f"--out {o.out}: directory {out.parent} does not exist")


class _Builder:
    """Builds the config dict of :func:`plan` step by step; ``notes`` say what was decided."""

    def __init__(self, o: InitOptions) -> None:
        from mt.data.fetch import resolve_data_dir

        self.o = o
        self.data_dir = resolve_data_dir(None, None)
        self.notes: list[str] = []
        self.run_dir = o.run_dir or f"runs/{o.src}_{o.tgt}".replace("-", "_")

    def corpora(self) -> tuple[list[CorpusArg], list[int]]:
        if not self.o.train:
            raise ConfigError("--train: at least one training corpus is required")
        args = [parse_corpus_arg(v, "--train", weighted=True) for v in self.o.train]
        counts = [count_pairs(a, self.o.src, self.o.tgt) for a in args]
        names = [a.name or f"corpus{i + 1}" for i, a in enumerate(args)]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"--train {args[i].raw}: the name {name!r} is used twice")
            args[i].name = name
        return args, counts

    def eval_sets(self) -> tuple[list[CorpusArg], list[CorpusArg]]:
        valid = [parse_corpus_arg(v, "--valid") for v in self.o.valid]
        tests = [parse_corpus_arg(v, "--test") for v in self.o.test]
        for arg in [*valid, *tests]:
            count_pairs(arg, self.o.src, self.o.tgt)
        for i, t in enumerate(tests):
            t.name = t.name or ("test" if len(tests) == 1 else f"test{i + 1}")
            if t.name in ("train", "valid") or t.name in [x.name for x in tests[:i]]:
                raise ConfigError(f"--test {t.raw}: test set name {t.name!r} is taken (train, valid and repeats are not allowed)")
        return valid, tests

    def data(self, train: list[CorpusArg], counts: list[int], valid: list[CorpusArg], tests: list[CorpusArg]) -> dict[str, Any]:
        held = self._hold_out(train, counts, not valid, not tests)
        corpora = [h.train if h else a.corpus for a, h in zip(train, held)]
        d: dict[str, Any] = {"src_lang": self.o.src, "tgt_lang": self.o.tgt}
        if len(train) == 1:
            d["train"] = _corpus_dict(corpora[0], self.data_dir)
        else:
            weighted = any(a.weight for a in train)  # a weighted list: corpora without one get 1 (docs/data.md)
            d["train"] = [{"name": a.name, **_corpus_dict(c, self.data_dir), **({"weight": a.weight or 1.0} if weighted else {})}
                          for a, c in zip(train, corpora)]  # fmt: skip
        parts = [_corpus_dict(v.corpus, self.data_dir) for v in valid] or self._held_valid(held)
        d["valid"] = parts[0] if len(parts) == 1 else parts  # several: prepare interleaves them
        if tests:
            d["test"] = {t.name: _corpus_dict(t.corpus, self.data_dir) for t in tests}
        else:
            d["test"] = {(f"{a.name}_test" if len(train) > 1 else "test"): self._text_corpus(h.test)
                         for a, h in zip(train, held) if h and h.test}  # fmt: skip
        return d

    def _hold_out(self, train: list[CorpusArg], counts: list[int], need_valid: bool, need_test: bool) -> list[Optional[HeldOut]]:
        """Hold the missing valid/test pairs out of each training corpus (nothing if none is missing)."""
        if not (need_valid or need_test):
            return [None] * len(train)
        split_dir = Path(self.run_dir).resolve() / "heldout"
        missing = "valid/test" if need_valid and need_test else "valid" if need_valid else "test"
        held: list[Optional[HeldOut]] = []
        for arg, n in zip(train, counts):
            size = held_out_size(n)
            prefix = f"{arg.name}." if len(train) > 1 else ""
            h = hold_out(arg, self.o.src, self.o.tgt, split_dir, prefix, size if need_valid else 0, size if need_test else 0)
            c = h.counts
            parts = " + ".join(f"{c[split]} {split}" for split in ("valid", "test") if c[split])
            self.notes.append(
                f"no {missing} set given: held out {parts} pairs of {arg.raw} (the pairs with the smallest hashes of "
                f"their source sentence: deterministic), dropped {c['dropped_duplicates']} training pairs repeating a "
                f"held-out source; {c['train']} pairs left for training, in {split_dir}"
            )
            held.append(h)
        return held

    def _text_corpus(self, files: Optional[tuple[Path, Path]]) -> dict[str, Any]:
        assert files is not None
        return _corpus_dict(CorpusConfig(format="text", src=str(files[0]), tgt=str(files[1])), self.data_dir)

    def _held_valid(self, held: list[Optional[HeldOut]]) -> list[dict[str, Any]]:
        """Every corpus's held-out valid pairs (``data.valid`` takes the list and interleaves it)."""
        return [self._text_corpus(h.valid) for h in held if h and h.valid]

    def sections(self, s: SizeSettings) -> dict[str, Any]:
        o = self.o
        train: dict[str, Any] = dict(
            max_tokens=s.max_tokens, update_freq=s.update_freq, lr=s.lr, warmup_steps=s.warmup_steps,
            schedule="inverse_sqrt", label_smoothing=0.1, clip_norm=1.0, max_steps=s.max_steps,
            max_time_minutes=o.max_minutes, patience=10, valid_every=s.valid_every, save_every=s.valid_every,
            keep_last=2, valid_bleu_sentences=500, valid_beam=1, best_metric="bleu", precision="auto", threads=o.threads,
        )  # fmt: skip
        spm = {"model_type": "unigram", "vocab_size": s.vocab_size, "joint": True, "user_symbols": ["<bt>"]}
        clean = {"min_tokens": 1, "max_tokens": 250, "max_ratio": 3.0, "dedup": True, "drop_identical": True}
        return {"clean": clean, "spm": spm, "model": s.model_section(), "train": train, "decode": {"beam": 5}}

    def backtranslate(self, s: SizeSettings, pairs: int, n_corpora: int) -> Optional[dict[str, Any]]:
        o = self.o
        mono_tgt, mono_src = _check_mono("--mono-tgt", o.mono_tgt), _check_mono("--mono-src", o.mono_src)
        if mono_tgt is None:
            if mono_src is not None:
                raise ConfigError("--mono-src: back-translation needs target-language text too (--mono-tgt)")
            return None
        if n_corpora > 1:
            raise ConfigError(
                "--mono-tgt: mt backtranslate takes one training corpus (a data.train list is refused); "
                "concatenate the corpora into one --train, or leave out --mono-tgt/--mono-src"
            )
        generation = {"sampling": "none", "beam": 5} if s.bt_sampling == "none" else {"sampling": "topk", "topk": 10}
        cont = {"lr": round(s.lr / 3, 6), "warmup_steps": 100, "max_steps": max(100, s.max_steps // 4)}
        if o.max_minutes:
            cont["max_time_minutes"] = round(o.max_minutes / 2, 1)
        bt = dict(
            rounds=s.bt_rounds, mono_tgt=_data_relative(mono_tgt, self.data_dir),
            mono_src=_data_relative(mono_src, self.data_dir) if mono_src else None, max_mono_lines=pairs,
            generation={**generation, "max_tokens": DecodeOptions().max_tokens}, shard_size=5000,
            filter={"max_tokens": 250, "max_ratio": 3.0, "dedup": True}, upsample=1, tagged=True,
            continue_from_previous=True, continue_train=cont, eval_beam=None, eval_sentences=0,
        )  # fmt: skip
        return bt


def plan(o: InitOptions) -> Plan:
    """Check every input and build the config (nothing is written but held-out splits)."""
    _check_languages(o)
    _check_out(o)
    b = _Builder(o)
    train, counts = b.corpora()
    valid, tests = b.eval_sets()
    pairs = sum(counts)
    s = settings_for(pairs)
    bt = b.backtranslate(s, pairs, len(train))  # checked before any held-out split is written
    data = b.data(train, counts, valid, tests)
    sections = b.sections(s)
    data["clean"], data["spm"] = sections.pop("clean"), sections.pop("spm")
    config: dict[str, Any] = {"run_dir": b.run_dir, "data": data, **sections}
    if bt is not None:
        config["backtranslate"] = bt
    for item in o.overrides:
        apply_override(config, item)
    _validate(config)
    return Plan(config, s, pairs, b.notes, _comments(s, pairs, o))


def _validate(config: dict[str, Any]) -> None:
    from mt.config import ExperimentConfig

    try:
        from_dict(ExperimentConfig, json.loads(json.dumps(config)))
    except ConfigError as e:
        raise ConfigError(f"the config to write: {e}") from None


def _comments(s: SizeSettings, pairs: int, o: InitOptions) -> dict[str, str]:
    """Inline comments for the scaled values (``section.key``); keys given by --set say so."""
    why = f"{s.bucket} bucket, {pairs:,} pairs"
    out = {
        "model.d_model": f"{why}: {s.parameters() / 1e6:.1f}M parameters at this vocabulary",
        "model.dropout": f"{why}; more dropout for less data",
        "data.spm": f"vocab_size by size ({why}); smaller vocabularies for less data",
        "train.max_tokens": f"batch by size ({why}); smaller batches for less data",
        "train.max_steps": f"{why}; training usually stops earlier (patience)",
        "train.patience": "stop after 10 validations without a better valid BLEU",
        "train.max_time_minutes": "wall-clock cap per training (--max-minutes); null = none",
        "train.precision": "auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), fp32 on others",
        "backtranslate.rounds": f"{why}: 2 rounds below 80k pairs, else 1",
        "backtranslate.generation": "beam search below 80k pairs (Edunov et al. 2018), else top-10 sampling",
        "backtranslate.max_mono_lines": "as many synthetic pairs as real ones",
    }
    for item in o.overrides:
        out[item.split("=", 1)[0].strip()] = "set by --set"
    return out


SECTION_HELP = {
    "data": "Training, tuning (valid) and test corpora; paths relative to the data directory ($MT_DATA_DIR) or absolute.",
    "model": "Transformer size: scaled to the corpus size (docs/recipes.md).",
    "train": "Training length, batch and learning rate: scaled to the corpus size.",
    "decode": "Decoding settings stored with the model (mt translate / evaluate / serve use them).",
    "backtranslate": "Iterative back-translation with the monolingual text (mt backtranslate; README).",
}


def render(p: Plan, command: str) -> str:
    """The config as YAML with a header (the command, the size row and why) and comments."""
    s = p.settings
    head = [
        f"Written by: {command}" if command else "Written by mt recipe init",
        "Run it with: mt recipe run {this file}   (resume a killed run: add --resume)",
        f"{p.pairs:,} training pairs: size bucket '{s.bucket}' (< {s.below:,} pairs)" if s.below
        else f"{p.pairs:,} training pairs: size bucket '{s.bucket}'",
        f"  model d{s.d_model} {s.layers}+{s.layers} layers, {s.n_heads} heads, FFN {s.ffn_dim}, vocabulary {s.vocab_size:,}, "
        f"dropout {s.dropout}; batch {s.max_tokens} tokens x {s.update_freq}, at most {s.max_steps:,} updates",
        f"  evidence: {s.evidence}",
        *(["  values given with --set replace the table's (their comments say so)"] if "set by --set" in p.comments.values() else []),
        *p.notes,
    ]  # fmt: skip
    lines = [f"# {h}" for h in head]
    for section, value in p.config.items():
        if section in SECTION_HELP:
            lines += ["", f"# {SECTION_HELP[section]}"]
        text = yaml.safe_dump({section: value}, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 20)
        for line in text.splitlines():
            key = line[2:].split(":", 1)[0] if line.startswith("  ") and not line.startswith("   ") else None
            comment = p.comments.get(f"{section}.{key}") if key else None
            lines.append(f"{line}  # {comment}" if comment else line)
    return "\n".join(lines) + "\n"


def init(o: InitOptions) -> Plan:
    """``mt recipe init``: check, plan, write the config; print the choices and why."""
    p = plan(o)
    atomic_write_text(o.out, render(p, o.command).replace("{this file}", o.out))
    s = p.settings
    print(f"mt recipe init: {p.pairs:,} training pairs → size bucket '{s.bucket}' ({s.evidence})")
    m = p.config["model"]
    print(f"  model: d_model {m['d_model']}, {m['enc_layers']}+{m['dec_layers']} layers, {m['n_heads']} heads, "
          f"FFN {m['ffn_dim']}, dropout {m['dropout']} (~{s.parameters() / 1e6:.1f}M parameters)")  # fmt: skip
    t = p.config["train"]
    print(f"  vocabulary {p.config['data']['spm']['vocab_size']}, batch {t['max_tokens']} tokens x {t['update_freq']}, "
          f"lr {t['lr']}, warmup {t['warmup_steps']}, at most {t['max_steps']} updates "
          f"(patience {t['patience']}, time cap {str(t['max_time_minutes']) + ' min' if t['max_time_minutes'] else 'none'})")  # fmt: skip
    bt = p.config.get("backtranslate")
    if bt:
        print(f"  back-translation: {bt['rounds']} rounds, generation {bt['generation']['sampling']}")
    for note in p.notes:
        print(f"  {note}")
    print(f"  wrote {o.out}; run it with: mt recipe run {o.out}")
    return p


# --------------------------------------------------------------------------- running a config


class RecipeRun:
    """One ``mt recipe run``: its stages in order, each recorded in ``recipe_manifest.json``."""

    def __init__(self, cfg: "ExperimentConfig", resume: bool = False, progress: bool = True,
                 command: Optional[str] = None) -> None:  # fmt: skip
        from mt.backtranslate.pipeline import Manifest

        self.cfg, self.progress = cfg, progress
        self.command = command or f"mt recipe run {shlex.quote(str(cfg.source_file))}"
        self.root = cfg.run_path
        self.pair = f"{cfg.data.src_lang}-{cfg.data.tgt_lang}"
        bt = cfg.backtranslate
        self.bt = bt if bt is not None and bt.rounds >= 1 else None
        self.manifest = Manifest.load(self.root / MANIFEST, label="mt recipe")
        if self.manifest.stages and not resume:
            raise ConfigError(
                f"{self.manifest.path}: this run_dir already has a recipe run; continue it with "
                "`mt recipe run CONFIG --resume`, or choose a new run_dir"
            )

    def run(self) -> dict[str, Any]:
        model = self._backtranslated() if self.bt else self._trained()
        evaluation = self._stage("evaluate", lambda: self._evaluate(model))
        return self._report(model, evaluation)

    # ---- stages

    def _trained(self) -> Path:
        from mt.backtranslate.pipeline import prepare_stage, train_stage

        self._stage("prepare", lambda: prepare_stage(self.cfg, self.progress))
        trained = self._stage("train", lambda: train_stage(self.cfg))
        return Path(self._stage("final", lambda: self._final(Path(trained["model"])))["path"])

    def _backtranslated(self) -> Path:
        return Path(self._stage("backtranslate", self._run_pipeline)["final_model"])

    def _run_pipeline(self) -> dict[str, Any]:
        """``mt backtranslate`` in this run_dir (resumes its own stages; this recipe's manifest
        already refused a rerun without --resume)."""
        from mt.backtranslate.pipeline import run_pipeline

        report = run_pipeline(self.cfg, resume=True, progress=self.progress)
        final = report["rounds"][report["final_model_round"]]["forward"]
        return {"final_model": report["final_model"], "round": report["final_model_round"],
                "rounds": len(report["rounds"]) - 1, "steps": final.get("steps"),
                "report": str(self.root / "bt_report.md")}  # fmt: skip

    def _final(self, model: Path) -> dict[str, Any]:
        """The trained model (best valid BLEU) copied to ``run_dir/final_model``, as back-translation does."""
        dest = self.root / "final_model"
        with atomic_dir(dest) as tmp:
            shutil.copytree(model, tmp, dirs_exist_ok=True)
        return {"path": str(dest), "from": str(model)}

    def _evaluate(self, model: Path) -> dict[str, Any]:
        from mt.backtranslate.pipeline import eval_sets, evaluate_model
        from mt.data.fetch import resolve_data_dir

        d = self.cfg.data
        sets = eval_sets(self.cfg, resolve_data_dir(None, d.data_dir))
        return evaluate_model(model, sets, self.cfg.decode, d.bleu_tokenize_for(d.tgt_lang), self.root / "eval",
                              self.pair, self.cfg.train.threads, prefix="mt recipe")  # fmt: skip

    def _stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``name`` through the manifest (skipped when done) and log it to recipe.jsonl."""
        skipped = self.manifest.done(name)
        if not skipped:
            self._log({"stage": name, "event": "start"})
        try:
            result = self.manifest.run(name, fn)
        except BaseException as e:
            self._log({"stage": name, "event": "failed", "error": f"{type(e).__name__}: {e}"})
            raise
        seconds = self.manifest.stages[name].get("seconds")
        self._log({"stage": name, "event": "skipped" if skipped else "done", "seconds": seconds})
        return result

    def _log(self, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with open(self.root / LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": now, **record}) + "\n")

    # ---- the report

    def _report(self, model: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
        from mt.modelio import read_model_config

        mcfg, meta = read_model_config(model)
        stages = {k: v.get("seconds") for k, v in self.manifest.stages.items()}
        report = {
            "pair": self.pair,
            "config": self.cfg.source_file,
            "command": self.command,
            "final_model": str(model),
            "scores": evaluation["scores"],
            "beam": evaluation["beam"],
            "dtype": evaluation.get("dtype"),  # absent from evaluations recorded before it was
            "dtype_reason": evaluation.get("dtype_reason"),
            "signatures": evaluation["signatures"],
            "model": {"parameters": mcfg.estimated_parameters(), **{k: getattr(mcfg, k) for k in (
                "d_model", "n_heads", "enc_layers", "dec_layers", "ffn_dim", "vocab_size", "dropout")}},
            "settings": {"train": to_dict(self.cfg.train), "spm": to_dict(self.cfg.data.spm)},
            "training": self.manifest.stages.get("train", {}).get("result"),
            "backtranslation": self.manifest.stages.get("backtranslate", {}).get("result"),
            "stage_seconds": stages,
            "total_seconds": round(sum(v or 0.0 for v in stages.values()), 1),
        }  # fmt: skip
        atomic_write_json(self.root / "report.json", report)
        atomic_write_text(self.root / "report.md", report_markdown(report))
        return report


def report_markdown(r: dict[str, Any]) -> str:
    """``report.md``: scores per test set, the model, the time per stage, how to serve it."""
    m = r["model"]
    lines = [
        f"# Recipe report: {r['pair']}",
        "",
        f"Config `{r['config']}`; final model `{r['final_model']}`; beam {r['beam']}"
        + (f", decoded in {r['dtype']} ({r['dtype_reason']})." if r.get("dtype") else "."),
        "",
        f"Reproduce: `{r.get('command', 'mt recipe run ' + str(r['config']))}`",
        "",
        "| set | sentences | BLEU | chrF |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {v['sentences']} | {v['bleu']:.2f} | {v['chrf']:.2f} |" for k, v in r["scores"].items()),
        "",
        f"BLEU signature: `{r['signatures'].get('bleu')}`  ",
        f"chrF signature: `{r['signatures'].get('chrf')}`",
        "",
        f"Model: {m['parameters']:,} parameters, d_model {m['d_model']}, {m['enc_layers']}+{m['dec_layers']} "
        f"layers, {m['n_heads']} heads, FFN {m['ffn_dim']}, vocabulary {m['vocab_size']}, dropout {m['dropout']}.",
    ]  # fmt: skip
    t = r["training"]
    if t:
        lines.append(f"Training: {t.get('steps')} updates ({t.get('stop_reason')}), {t.get('train_seconds')} s.")
    bt = r["backtranslation"]
    if bt:
        lines.append(f"Back-translation: {bt['rounds']} round(s); the final model is round {bt['round']}'s "
                     f"(best valid BLEU); per-round report `{bt['report']}`.")  # fmt: skip
    lines += ["", "| stage | minutes |", "|---|---:|"]
    lines += [f"| {k} | {(v or 0.0) / 60:.1f} |" for k, v in r["stage_seconds"].items()]
    lines += [f"| total | {r['total_seconds'] / 60:.1f} |", "", f"Serve it: `mt serve --model {r['pair']}={r['final_model']}`"]
    return "\n".join(lines) + "\n"


def run(cfg: "ExperimentConfig", resume: bool = False, progress: bool = True, command: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) the recipe of ``cfg``; returns the report dict. ``command``: the command
    line the report gives to reproduce it (default ``mt recipe run CONFIG``)."""
    t0 = time.perf_counter()
    with exclusive_dir(cfg.run_path, "running `mt recipe run`", lock=RECIPE_LOCK):  # one writer of its manifest
        report = RecipeRun(cfg, resume=resume, progress=progress, command=command).run()
    print(f"mt recipe: done in {(time.perf_counter() - t0) / 60:.1f} min; report {cfg.run_path / 'report.md'}",
          file=sys.stderr)  # fmt: skip
    return report


# --------------------------------------------------------------------------- command line


def command_line(o: InitOptions) -> str:
    """The ``mt recipe init`` command that gives ``o`` (quoted at the top of the config)."""
    words = ["mt", "recipe", "init", "--src", o.src, "--tgt", o.tgt]
    words += [w for v in o.train for w in ("--train", v)]
    words += [w for v in o.valid for w in ("--valid", v)]
    words += [w for v in o.test for w in ("--test", v)]
    for flag, value in (("--mono-src", o.mono_src), ("--mono-tgt", o.mono_tgt), ("--run-dir", o.run_dir),
                        ("--max-minutes", o.max_minutes), ("--threads", o.threads)):  # fmt: skip
        words += [flag, f"{value:g}" if isinstance(value, float) else str(value)] if value is not None else []
    words += [w for v in o.overrides for w in ("--set", v)]
    words += ["--out", o.out] + (["--force"] if o.force else [])
    return " ".join(shlex.quote(w) for w in words)


def _init_cli(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(InitOptions)}
    options = InitOptions(**{k: v for k, v in vars(args).items() if k in fields})
    options.command = command_line(options)
    init(options)
    return 0


def _run_cli(args: argparse.Namespace) -> int:
    from mt.config import load_config

    cfg = load_config(args.config, args.overrides)
    words = ["mt", "recipe", "run", str(args.config)] + [w for v in args.overrides for w in ("--set", v)]
    report = run(cfg, resume=args.resume, command=" ".join(shlex.quote(w) for w in words))
    for name, s in report["scores"].items():
        print(f"{name}: BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f}", file=sys.stderr)
    print(report["final_model"])
    return 0


def add_recipe_parser(subparsers: Any) -> None:
    """``mt recipe init ...`` and ``mt recipe run CONFIG [--resume]`` on the CLI's subcommands."""
    from mt.argtypes import add_overrides, positive_float, positive_int

    p = subparsers.add_parser("recipe", help="one command from raw text to a served model, for any language pair")
    actions = p.add_subparsers(dest="recipe_command", metavar="ACTION")
    i = actions.add_parser("init", help="write a config scaled to your corpus (model, vocabulary, dropout, batch, length)")
    i.add_argument("--src", required=True, help="source language code (ISO 639-1/639-3, e.g. de, chr)")
    i.add_argument("--tgt", required=True, help="target language code")
    i.add_argument("--train", action="append", default=[], metavar="[NAME=]SRC,TGT[:WEIGHT]",
                   help="a training corpus: two aligned text files, or one .tsv / .jsonl file or Hugging Face "
                        "save_to_disk directory (DIR[@SPLIT]); ':WEIGHT' = its share of each epoch (repeatable)")
    i.add_argument("--valid", action="append", default=[], metavar="SRC,TGT",
                   help="tuning set; repeated: read as one, interleaved (default: held out of each --train corpus)")
    i.add_argument("--test", action="append", default=[], metavar="[NAME=]SRC,TGT",
                   help="a test set (repeatable; default: one held out of each --train corpus)")
    i.add_argument("--mono-src", default=None, metavar="FILE", help="source-language text (back-translation round 2+)")
    i.add_argument("--mono-tgt", default=None, metavar="FILE", help="target-language text: enables back-translation")
    i.add_argument("--run-dir", default=None, help="where the run writes (default runs/SRC_TGT)")
    i.add_argument("--out", required=True, metavar="CONFIG", help="the YAML config to write")
    i.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    i.add_argument("--max-minutes", type=positive_float, default=None, help="wall-clock cap of each training")
    i.add_argument("--threads", type=positive_int, default=None, help="CPU threads for training and decoding")
    add_overrides(i, "the written config")
    i.set_defaults(func=_init_cli)
    r = actions.add_parser("run", help="prepare, train, back-translate, evaluate and report a recipe config")
    r.add_argument("config", help="a config written by `mt recipe init` (or any experiment YAML)")
    r.add_argument("--resume", action="store_true", help="continue a killed run; finished stages are skipped")
    add_overrides(r)
    r.set_defaults(func=_run_cli)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
