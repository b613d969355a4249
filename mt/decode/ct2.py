"""Decoding with CTranslate2 (``engine: ctranslate2``): the model exported once
(:mod:`mt.export`) and searched by CTranslate2's C++ kernels, behind mt's own text pipeline,
batching, workers and documents.

Why an engine of its own: on CPU, CTranslate2 decodes the same weights 1.7-4x faster than
mt's PyTorch search (int8 against mt's default; ``bench/decode_vs_ct2.py``). The gap is the
per-step cost of many small eager ops and the kernels CTranslate2 fuses, which PyTorch does not
remove (``bench/results.md``). Rather than write those kernels again, mt uses the library that
has them; mt's own search stays the default because it is batch-invariant.

What stays mt's: normalisation and SentencePiece (``TextPipeline``), length-sorted token-budget
batches decoded ``workers`` at a time (:class:`~mt.decode.translator.Translator` holds a
:class:`Ct2Model` instead of a ``DecodingModel``; CTranslate2's
``inter_threads`` runs them in parallel, ``intra_threads`` = threads per worker), documents and
HTML. The search settings map to CTranslate2's keywords
(:func:`mt.export.ctranslate2_translate_options`): beam, ``alpha`` as ``length_penalty``,
``min_len``, ``no_repeat_ngram``, ``n_best``, the tokens mt never generates suppressed.
Differences (the export's README lists them): the maximum output length is one value per batch
(its longest source's), suppressed tokens are masked before the softmax, the cancellation hook
is asked once per batch instead of once per step, and the output is **not batch-invariant**
(CTranslate2 pads a batch to its longest source, so a sentence's scores can change in their
last bits with its batch). What CTranslate2 cannot do is refused when the settings are checked
(``DecodeOptions.validate``): sampling, shortlists, GNMT length normalisation, a finite
``unk_penalty``.

Precision: ``--int8`` → ``int8_float32`` (CPU) / ``int8_float16`` (CUDA); ``--dtype fp32`` /
``bf16`` / ``fp16`` → ``float32`` / ``bfloat16`` / ``float16``; ``auto`` → CTranslate2's own
``auto``, its fastest type on the device (int8 on most CPUs). The type it runs is printed and
recorded like ``dtype: auto``'s choice.

The export is cached per model content: ``$MT_CT2_CACHE`` (default
``~/.cache/mt/ctranslate2``) / the sha256 of the model's files; it is written atomically, so
processes starting together (the server's decoding processes) share one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mt.config import DecodeOptions, ModelConfig
from mt.decode.lengths import max_output_len
from mt.decode.options import Hypothesis
from mt.decode.precision import PrecisionChoice
from mt.decode.search import DecodeCancelled, StopCheck
from mt.decode.shapes import PaddingRule
from mt.errors import ConfigError
from mt.fileio import sha256_file

COMPUTE_TYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --dtype -> CTranslate2


@dataclass
class Ct2Model:
    """What a :class:`~mt.decode.translator.Translator` decodes with under ``engine:
    ctranslate2`` (:meth:`decode_batch`), with the fields reports read from a
    :class:`mt.decode.variant.DecodingModel`: ``cfg``, ``device``, ``dtype`` (the compute type
    CTranslate2 runs), ``precision`` (why), ``int8``, ``packed`` and ``padding`` (not
    invariant). ``translator``: the ``ctranslate2.Translator``; ``path``: the export it loaded;
    ``text``: the model's text pipeline (its piece tables map mt ids to CTranslate2's pieces)."""

    translator: Any
    path: Path
    cfg: ModelConfig
    text: Any
    device: torch.device
    dtype: str
    precision: PrecisionChoice
    packed: bool = False
    padding: PaddingRule = field(default_factory=lambda: PaddingRule(
        rows=1, invariant=False, finding="CTranslate2 engine: pads batches to their longest source; not probed"))

    def __post_init__(self) -> None:
        from mt.export import model_vocabularies

        self._src_pieces, tgt = model_vocabularies(self.cfg, self.text)
        self._tgt_ids = {p: i for i, p in enumerate(tgt)}
        self._keywords: dict[tuple, dict[str, Any]] = {}  # by search settings: building them reads the vocabularies

    @property
    def int8(self) -> bool:
        return self.dtype.startswith("int8")

    def describe(self) -> str:
        return f"CTranslate2 {self.dtype}"

    def decode_batch(self, sources: list[list[int]], opts: DecodeOptions,
                     should_stop: StopCheck = None) -> list[list[Hypothesis]]:  # fmt: skip
        """Bare source ids (no EOS) → per sentence its hypotheses (``text`` empty), through one
        ``translate_batch``; the cancellation hook is asked before it."""
        from mt.export import ctranslate2_translate_options

        if should_stop is not None and should_stop():
            raise DecodeCancelled("stopped before the batch was decoded")
        search = opts.group("search")
        key = tuple(sorted(search.items()))
        if key not in self._keywords:
            self._keywords[key] = ctranslate2_translate_options(self.cfg, self.text, search)
        keywords = self._keywords[key]
        limit = max(max_output_len(len(s), opts.max_len_a, opts.max_len_b, self.cfg.max_positions) for s in sources)
        pieces = [[self._src_pieces[i] for i in s] for s in sources]
        results = self.translator.translate_batch(
            pieces, max_decoding_length=limit, max_batch_size=len(pieces), return_scores=True, **keywords)
        alpha = keywords["length_penalty"]  # mt's normalisation exponent as CTranslate2 applies it
        return [[self._hypothesis(h, score, alpha) for h, score in zip(r.hypotheses, r.scores)] for r in results]

    def _hypothesis(self, pieces: list[str], score: float, alpha: float) -> Hypothesis:
        """CTranslate2's pieces (EOS excluded) and length-normalised score → a Hypothesis; the
        log-prob is the score times the normalisation (EOS counted, as in mt)."""
        tokens = [self._tgt_ids.get(p, self.cfg.unk_id) for p in pieces]
        return Hypothesis("", tokens, score, score * (len(tokens) + 1) ** alpha)


def load_model(loaded: Any, options: DecodeOptions, device: torch.device, workers: int) -> Ct2Model:
    """Export ``loaded`` (a ``mt.modelio.LoadedModel`` with its directory) once and load the
    export on ``device`` in ``options``' precision, ``workers`` batches at once sharing
    torch's thread count."""
    if loaded.path is None:
        raise ConfigError("engine: ctranslate2 needs the model's directory (it exports the model from it)")
    intra = max(1, torch.get_num_threads() // workers)
    return load_ct2(cached_export(Path(loaded.path)), loaded, device, options, workers, intra)


def load_ct2(path: Path, loaded: Any, device: torch.device, options: DecodeOptions, inter: int,
             intra: int) -> Ct2Model:
    """A ``ctranslate2.Translator`` for the export at ``path`` in ``options``' precision; an
    unsupported one (e.g. bf16 on a CPU without it) is a ConfigError naming ``dtype``."""
    from mt.extras import require

    ctranslate2 = require("ctranslate2", "--engine ctranslate2")
    if options.int8:
        wanted, reason = ("int8_float32" if device.type == "cpu" else "int8_float16"), "--int8"
    else:
        wanted = COMPUTE_TYPES[options.dtype]
        reason = "auto: CTranslate2's fastest type on this device" if wanted == "auto" else "as requested"
    threads = torch.get_num_threads()
    try:
        translator = ctranslate2.Translator(str(path), device=device.type, device_index=device.index or 0,
                                            compute_type=wanted, inter_threads=inter, intra_threads=intra)  # fmt: skip
    except ValueError as e:
        field = "int8" if options.int8 else "dtype"
        raise ConfigError(f"{field}: CTranslate2 cannot run {wanted} here: {e}") from None
    finally:
        torch.set_num_threads(threads)  # CTranslate2 sets OpenMP's thread count, which torch reads
    compute = translator.compute_type
    return Ct2Model(translator, path, loaded.model.cfg, loaded.text, device, compute, PrecisionChoice(compute, reason))


def cache_root() -> Path:
    """Where exports are cached: ``$MT_CT2_CACHE``, default ``~/.cache/mt/ctranslate2``."""
    return Path(os.environ.get("MT_CT2_CACHE", str(Path.home() / ".cache" / "mt" / "ctranslate2")))


def model_digest(model_dir: Path) -> str:
    """sha256 over the names and contents of the files an export is made from (weights,
    config, text pipeline and its SentencePiece models)."""
    h = hashlib.sha256()
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".model") or f.name == "model.safetensors"):
            h.update(f"{f.name}\0{sha256_file(f)}\0".encode())
    return h.hexdigest()[:32]


def cached_export(model_dir: Path) -> Path:
    """The float32 CTranslate2 export of ``model_dir`` in the cache, written if absent (the
    compute type is chosen when it is loaded). Another process writing it at the same time is
    fine: the export is renamed into place whole, and the loser reuses the winner's."""
    from mt.export import ExportError, export_model

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"$MT_CT2_CACHE {root}: cannot write the CTranslate2 export there ({e.strerror or e})") from None
    out = root / model_digest(model_dir)
    if not (out / "model.bin").is_file():
        try:
            export_model(model_dir, out, "ctranslate2", force=out.exists())  # a directory without model.bin is incomplete
        except (ExportError, OSError):
            if not (out / "model.bin").is_file():
                raise
    return out
