"""Text normalisation and SentencePiece subwords: the one way text becomes ids and back.

All normalisation happens in :func:`normalize`; SentencePiece is trained with the
``identity`` rule and byte fallback, so for every string ``x``::

    pipeline.decode_target(pipeline.encode_target([x])) == [normalize(x, tgt_lang)]

exactly: no ``⁇`` for unseen characters, no second, hidden normalisation inside the
tokenizer. ``normalize`` is idempotent, so normalising already-clean text changes nothing.
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence, Union

import sentencepiece as spm

from mt.data import DataError
from mt.errors import MissingFileError
from mt.fileio import atomic_write_bytes, read_json_object

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
UnicodeForm = Literal["NFKC", "NFC", "none"]
PunctSetting = Union[bool, dict[str, bool]]

# C0/C1 control characters, except the ones that are whitespace (tab, LF, VT, FF, CR, NEL):
# those become spaces when whitespace is collapsed.
CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
# SentencePiece writes spaces as U+2581; a literal one in the text would decode as a space.
_SPM_SPACE = "\u2581"
# SentencePiece's list calls start a thread pool: ~0.1 ms per call on the reference VM, 15x
# a one-sentence encode. Shorter lists than this (a server request) go one string at a time.
SMALL_LIST = 32


@functools.lru_cache(maxsize=None)
def _punct_normalizer(lang: str):  # -> sacremoses.MosesPunctNormalizer
    from sacremoses import MosesPunctNormalizer

    return MosesPunctNormalizer(lang=lang)


def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds a control character that :func:`normalize` would remove."""
    return CONTROL_RE.search(text) is not None


def normalize(text: str, lang: str, punct: bool = True, unicode_form: UnicodeForm = "NFKC") -> str:
    """Canonical form of one sentence: what the model sees and what decoding returns.

    Steps: Unicode ``unicode_form`` (NFKC folds full-width forms, ligatures, non-breaking
    spaces), control characters removed, Moses punctuation normalisation for ``lang``
    (sacremoses; quotes, dashes, spacing around punctuation) when ``punct``, U+2581 → ``_``,
    whitespace runs collapsed to one space and stripped.
    """
    if unicode_form != "none":
        text = unicodedata.normalize(unicode_form, text)
    text = CONTROL_RE.sub("", text)
    # collapse first as well: Moses' rules only know ASCII spaces (e.g. "( x\x85)" vs "( x )")
    text = " ".join(text.split())
    if punct:
        text = _punct_normalizer(lang).normalize(text)
    if _SPM_SPACE in text:
        text = text.replace(_SPM_SPACE, "_")
    return " ".join(text.split())


def _punct_map(setting: PunctSetting, langs: Iterable[str]) -> dict[str, bool]:
    if isinstance(setting, dict):
        return {lang: bool(setting.get(lang, True)) for lang in langs}
    return {lang: bool(setting) for lang in langs}


def train_sentencepiece(
    inputs: Sequence[str | Path],
    model_prefix: str | Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    byte_fallback: bool = True,
    user_symbols: Sequence[str] = (),
    input_sentence_size: int = 2_000_000,
    seed: int = 1,
    num_threads: int = 0,
) -> Path:
    """Train a SentencePiece model on already-normalised text files; returns ``<prefix>.model``.

    Ids 0..3 are pad, unk, bos, eos; ``user_symbols`` follow (4, 5, ...), so a joint and a
    separate model give them the same ids. ``vocab_size`` is a soft limit: a corpus too small
    for it gets a smaller vocabulary instead of an error.
    """
    model_prefix = Path(model_prefix)
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            input=[str(p) for p in inputs],
            model_prefix=str(model_prefix),
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            user_defined_symbols=list(user_symbols),
            # normalisation is ours (normalize()); spm must not change the text again
            normalization_rule_name="identity",
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(f"SentencePiece training failed (vocab_size={vocab_size}): {e}") from e
    return model_prefix.with_name(model_prefix.name + ".model")


class TextPipeline:
    """Normalisation + SentencePiece for one language pair.

    ``src_spm_path``/``tgt_spm_path`` are the same file for a joint vocabulary.
    ``normalize_punct``: bool, or per language ``{"de": True, "en": False}``.
    ``target_lang_tag``: prepend the ``<2{tgt_lang}>`` piece to every encoded source.
    Encoded sequences are bare ids (no BOS/EOS), see CONTRACTS.md.
    """

    def __init__(
        self,
        src_lang: str,
        tgt_lang: str,
        src_spm_path: str | Path,
        tgt_spm_path: Optional[str | Path] = None,
        normalize_punct: PunctSetting = True,
        *,
        unicode_form: UnicodeForm = "NFKC",
        target_lang_tag: bool = False,
        num_threads: int = 0,
    ) -> None:
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.punct = _punct_map(normalize_punct, (src_lang, tgt_lang))
        self.unicode_form: UnicodeForm = unicode_form
        self.target_lang_tag = target_lang_tag
        self.num_threads = num_threads or os.cpu_count() or 1
        tgt_spm_path = tgt_spm_path if tgt_spm_path is not None else src_spm_path
        self.joint = Path(src_spm_path).resolve() == Path(tgt_spm_path).resolve()
        self._src_proto = Path(src_spm_path).read_bytes()
        self._tgt_proto = self._src_proto if self.joint else Path(tgt_spm_path).read_bytes()
        self.src_sp = _processor(self._src_proto, src_spm_path)
        self.tgt_sp = self.src_sp if self.joint else _processor(self._tgt_proto, tgt_spm_path)
        for path, sp in ((src_spm_path, self.src_sp), (tgt_spm_path, self.tgt_sp)):
            ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
            if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
                raise DataError(f"{path}: SentencePiece model has pad/unk/bos/eos ids {ids}, expected (0, 1, 2, 3)")
        self.tag_id: Optional[int] = None
        if target_lang_tag:
            tag = f"<2{tgt_lang}>"
            self.tag_id = self.src_sp.piece_to_id(tag)
            if self.tag_id == UNK_ID:
                raise DataError(f"target_lang_tag: piece {tag!r} is not a user symbol of the source model")

    # ---- sizes and pieces

    @property
    def src_vocab_size(self) -> int:
        return self.src_sp.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt_sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: the larger vocabulary when source and target are separate."""
        return max(self.src_vocab_size, self.tgt_vocab_size)

    def piece_to_id(self, piece: str) -> int:
        """Target-model id of ``piece`` (special and user symbols have the same id in both)."""
        return self.tgt_sp.piece_to_id(piece)

    def id_to_piece(self, i: int) -> str:
        return self.tgt_sp.id_to_piece(i)

    def source_vocabulary(self) -> list[str]:
        """The source piece of every model id, in id order (what exporters write as a vocabulary)."""
        return [self.src_sp.id_to_piece(i) for i in range(self.src_vocab_size)]

    def target_vocabulary(self) -> list[str]:
        """The target piece of every model id, in id order."""
        return [self.tgt_sp.id_to_piece(i) for i in range(self.tgt_vocab_size)]

    # ---- text ↔ ids

    def normalize_source(self, text: str) -> str:
        return normalize(text, self.src_lang, self.punct[self.src_lang], self.unicode_form)

    def normalize_target(self, text: str) -> str:
        return normalize(text, self.tgt_lang, self.punct[self.tgt_lang], self.unicode_form)

    def encode_source(self, texts: list[str], normalized: bool = False) -> list[list[int]]:
        """Ids of ``texts`` (normalised first unless ``normalized``), with the language tag if set."""
        if not normalized:
            texts = [self.normalize_source(t) for t in texts]
        ids = self._encode(self.src_sp, texts)
        if self.tag_id is not None:
            ids = [[self.tag_id] + seq for seq in ids]
        return ids

    def encode_target(self, texts: list[str], normalized: bool = False) -> list[list[int]]:
        if not normalized:
            texts = [self.normalize_target(t) for t in texts]
        return self._encode(self.tgt_sp, texts)

    def _encode(self, sp: spm.SentencePieceProcessor, texts: list[str]) -> list[list[int]]:
        if len(texts) < SMALL_LIST:
            return [sp.encode(t, out_type=int) for t in texts]
        return sp.encode(texts, out_type=int, num_threads=self.num_threads)

    def _decode(self, sp: spm.SentencePieceProcessor, ids: Sequence[Sequence[int]]) -> list[str]:
        n = sp.get_piece_size()
        # ids from a larger shared embedding (separate vocabularies) are not this model's
        clean = [[int(i) if 0 <= int(i) < n else UNK_ID for i in seq] for seq in ids]
        if len(clean) < SMALL_LIST:
            return [sp.decode(seq) for seq in clean]
        return sp.decode(clean, num_threads=self.num_threads)

    def decode_target(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenised text; pad/bos/eos are control pieces and decode to nothing."""
        return self._decode(self.tgt_sp, ids)

    def decode_source(self, ids: Sequence[Sequence[int]]) -> list[str]:
        if self.tag_id is not None:
            ids = [seq[1:] if len(seq) and int(seq[0]) == self.tag_id else seq for seq in ids]
        return self._decode(self.src_sp, ids)

    # ---- persistence

    def config(self) -> dict:
        files = {"src": "spm.model", "tgt": "spm.model"} if self.joint else {"src": "spm.src.model", "tgt": "spm.tgt.model"}
        return {
            "format": 1,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "normalize_punct": self.punct,
            "unicode_form": self.unicode_form,
            "target_lang_tag": self.target_lang_tag,
            "spm": files,
        }

    def save(self, directory: str | Path) -> None:
        """Write ``text.json`` and the SentencePiece model file(s) into ``directory`` (atomic per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config()
        files = {cfg["spm"]["src"]: self._src_proto, cfg["spm"]["tgt"]: self._tgt_proto}
        files["text.json"] = (json.dumps(cfg, indent=2) + "\n").encode()
        for name, data in files.items():
            atomic_write_bytes(directory / name, data)

    @classmethod
    def load(cls, directory: str | Path, num_threads: int = 0) -> "TextPipeline":
        """Read ``directory/text.json`` and its SentencePiece model(s) (written by :meth:`save`).

        Every field is checked; errors (:class:`DataError`) name the file and the field. The
        SentencePiece models must be plain file names inside ``directory``: a ``text.json``
        from elsewhere cannot make mt read any other file."""
        directory = Path(directory)
        path = directory / "text.json"
        if not path.is_file():
            raise MissingFileError(f"{path}: text pipeline settings not found (run `mt prepare`)")
        cfg = read_json_object(path)
        _check_text_config(path, cfg)
        files = {side: directory / cfg["spm"][side] for side in ("src", "tgt")}
        for side, file in files.items():
            if not file.is_file():
                raise DataError(f"{path}: spm.{side}: {file} is missing (or not a file)")
        return cls(
            cfg["src_lang"],
            cfg["tgt_lang"],
            files["src"],
            files["tgt"],
            cfg["normalize_punct"],
            unicode_form=cfg.get("unicode_form", "NFKC"),
            target_lang_tag=cfg.get("target_lang_tag", False),
            num_threads=num_threads,
        )


def _processor(proto: bytes, path: str | Path) -> spm.SentencePieceProcessor:
    """A SentencePiece processor from the bytes of the model file ``path``; a file that is not
    a SentencePiece model raises :class:`DataError` naming it."""
    if not proto:
        raise DataError(f"{path}: empty file, expected a SentencePiece model")
    try:
        sp = spm.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, OSError):
        raise DataError(f"{path}: not a SentencePiece model (cannot parse it)") from None
    if sp.get_piece_size() < 4:
        raise DataError(f"{path}: SentencePiece model has {sp.get_piece_size()} pieces, expected pad/unk/bos/eos and more")
    return sp


def _is_language_code(value: object) -> bool:
    return (isinstance(value, str) and value[:1].isalpha()
            and all(c.isalnum() or c in "-_" for c in value))  # fmt: skip


def _check_text_config(path: Path, cfg: dict) -> None:
    """Validate the fields of a ``text.json`` (``path``, for the messages)."""
    fmt = cfg.get("format", 1)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt > 1:
        raise DataError(f"{path}: format: expected 1, got {fmt!r} (written by a newer mt?)")
    for name in ("src_lang", "tgt_lang"):
        if name not in cfg:
            raise DataError(f"{path}: {name}: missing")
        if not _is_language_code(cfg[name]):
            raise DataError(f"{path}: {name}: expected a language code like 'de', got {cfg[name]!r}")
    spm_files = cfg.get("spm")
    if not isinstance(spm_files, dict):
        raise DataError(f"{path}: spm: expected a mapping of src and tgt to file names, got {spm_files!r}")
    for side in ("src", "tgt"):
        name = spm_files.get(side)
        # a plain file name inside the directory: no separators, no "..", nothing absolute
        if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
                or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name):
            raise DataError(f"{path}: spm.{side}: expected a file name inside {path.parent}, got {name!r}")
    if "normalize_punct" not in cfg:
        raise DataError(f"{path}: normalize_punct: missing")
    punct = cfg["normalize_punct"]
    if not isinstance(punct, bool) and not (
        isinstance(punct, dict) and all(isinstance(k, str) and isinstance(v, bool) for k, v in punct.items())
    ):
        raise DataError(f"{path}: normalize_punct: expected true/false or {{language: true/false}}, got {punct!r}")
    form = cfg.get("unicode_form", "NFKC")
    if form not in ("NFKC", "NFC", "none"):
        raise DataError(f"{path}: unicode_form: expected NFKC, NFC or none, got {form!r}")
    tag = cfg.get("target_lang_tag", False)
    if not isinstance(tag, bool):
        raise DataError(f"{path}: target_lang_tag: expected true/false, got {tag!r}")
