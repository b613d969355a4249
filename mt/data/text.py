"""Text normalisation and SentencePiece subwords: the one way text becomes ids and back.

All normalisation happens in :func:`normalize`; SentencePiece is trained with the
``identity`` rule and byte fallback, so for every string ``x``::

    pipeline.decode_target(pipeline.encode_target([x])) == [normalize(x, tgt_lang)]

exactly: no ``⁇`` for unseen characters, no second, hidden normalisation inside the
tokenizer. ``normalize`` is idempotent, so normalising already-clean text changes nothing.

Imported models (``mt import marian``) bring their own SentencePiece models, whose ids are
not model ids: a :class:`Vocabulary` (``vocab.json``, the piece of every model id) maps
pieces to ids and back, and their SentencePiece normaliser (e.g. ``nmt_nfkc``) stays on, so
the exact round trip above holds only for mt's own models. See docs/marian.md.
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from dataclasses import dataclass
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
# text.json formats: 1 = mt's own SentencePiece ids; 2 = adds "vocab" (an explicit vocabulary)
FORMAT, VOCAB_FORMAT = 1, 2
# a target-language token at the start of a source text, as MarianTokenizer reads it: ">>fra<<"
LANG_TOKEN_RE = re.compile(r">>[^\s<>]+<<")


class _MosesPunct:
    """sacremoses' Moses punctuation rules for ``lang``, compiled once.

    ``MosesPunctNormalizer.normalize`` passes each of its ~45 patterns to ``re.sub`` as a
    string, so every call looks every pattern up in ``re``'s cache again; that lookup was over a
    third of the normalisation time of ``mt prepare``. Same rules, same order, same result
    (``tests/test_data_text.py`` compares the two on real and generated text).
    """

    def __init__(self, lang: str) -> None:
        from sacremoses import MosesPunctNormalizer

        moses = MosesPunctNormalizer(lang=lang)
        # the defaults; the optional pre/post steps would need sacremoses' own normalize
        assert not moses.pre_replace_unicode_punct and not moses.post_remove_control_chars
        self.rules = [(re.compile(pattern), repl) for pattern, repl in moses.substitutions]

    def normalize(self, text: str) -> str:
        for pattern, repl in self.rules:
            text = pattern.sub(repl, text)
        return text.strip()


@functools.lru_cache(maxsize=None)
def _punct_normalizer(lang: str) -> _MosesPunct:
    return _MosesPunct(lang)


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


Side = Literal["src", "tgt"]


@dataclass(frozen=True)
class Vocabulary:
    """An explicit piece ↔ model-id mapping, for models whose ids are not SentencePiece's own
    (imported MarianMT models): ``src`` and ``tgt`` hold the piece of every model id, in id
    order (equal tuples for a shared vocabulary). A piece not in it encodes as ``unk_id``;
    ``pad_id``, ``unk_id``, ``eos_id`` and target-language tokens (``>>fra<<``) decode to
    nothing. The special ids are those of both sides."""

    src: tuple[str, ...]
    tgt: tuple[str, ...]
    pad_id: int
    unk_id: int
    eos_id: int

    @property
    def shared(self) -> bool:
        """Whether an id means the same piece on both sides (the embeddings can be shared)."""
        return self.src is self.tgt or self.src == self.tgt

    @functools.cached_property
    def src_index(self) -> dict[str, int]:
        return {piece: i for i, piece in enumerate(self.src)}

    @functools.cached_property
    def tgt_index(self) -> dict[str, int]:
        return self.src_index if self.src is self.tgt else {piece: i for i, piece in enumerate(self.tgt)}

    def silent_ids(self, side: Side) -> frozenset[int]:
        """Ids of ``side`` that decode to nothing: the special ids and target-language tokens."""
        pieces = self.src if side == "src" else self.tgt
        tags = (i for i, piece in enumerate(pieces) if LANG_TOKEN_RE.fullmatch(piece))
        return frozenset((self.pad_id, self.unk_id, self.eos_id, *tags))

    def swapped(self) -> "Vocabulary":
        """The same vocabulary for the reverse direction."""
        return Vocabulary(self.tgt, self.src, self.pad_id, self.unk_id, self.eos_id)

    def check(self, where: str) -> None:
        """Raise :class:`DataError` (``where.pad_id: ...``) unless every special id is an id of both sides."""
        size = min(len(self.src), len(self.tgt))
        for name in ("pad_id", "unk_id", "eos_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
                raise DataError(f"{where}.{name}: expected an id in [0, {size}) (the vocabulary's entries), got {value!r}")


def read_vocab(path: str | Path) -> tuple[str, ...]:
    """The pieces of a ``vocab.json`` (``{piece: id}``, MarianMT's format and mt's) in id
    order. The ids must be 0..N-1, each once; errors name the file and the piece."""
    raw = read_json_object(path)
    if not raw:
        raise DataError(f"{path}: empty vocabulary, expected {{piece: id}} entries")
    pieces: list[Optional[str]] = [None] * len(raw)
    for piece, i in raw.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(raw):
            raise DataError(f"{path}: {piece!r}: expected an id in [0, {len(raw)}) (the number of entries), got {i!r}")
        if pieces[i] is not None:
            raise DataError(f"{path}: {pieces[i]!r} and {piece!r} have the same id {i}")
        pieces[i] = piece
    return tuple(pieces)  # type: ignore[arg-type]  # N distinct ids in [0, N): every slot is filled


def _vocab_json(pieces: Sequence[str]) -> bytes:
    return (json.dumps({piece: i for i, piece in enumerate(pieces)}, indent=2, ensure_ascii=False) + "\n").encode()


class TextPipeline:
    """Normalisation + SentencePiece for one language pair.

    ``src_spm_path``/``tgt_spm_path`` are the same file for a joint vocabulary.
    ``normalize_punct``: bool, or per language ``{"de": True, "en": False}``.
    ``target_lang_tag``: prepend the ``<2{tgt_lang}>`` piece to every encoded source.
    ``vocab``: model ids come from this explicit vocabulary instead of SentencePiece's ids
    (imported models); a source text may then start with a target-language token such as
    ``>>fra<<``, which becomes its own id (as MarianTokenizer reads it).
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
        vocab: Optional[Vocabulary] = None,
    ) -> None:
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.punct = _punct_map(normalize_punct, (src_lang, tgt_lang))
        self.unicode_form: UnicodeForm = unicode_form
        self.target_lang_tag = target_lang_tag
        self.num_threads = num_threads or os.cpu_count() or 1
        tgt_spm_path = tgt_spm_path if tgt_spm_path is not None else src_spm_path
        self.spm_paths = (Path(src_spm_path), Path(tgt_spm_path))
        self.same_spm = Path(src_spm_path).resolve() == Path(tgt_spm_path).resolve()
        self.vocab = vocab
        # joint: one id space for both sides (what model.share_embeddings needs)
        self.joint = self.same_spm if vocab is None else vocab.shared
        self._src_proto = Path(src_spm_path).read_bytes()
        self._tgt_proto = self._src_proto if self.same_spm else Path(tgt_spm_path).read_bytes()
        self.src_sp = _processor(self._src_proto, src_spm_path)
        self.tgt_sp = self.src_sp if self.same_spm else _processor(self._tgt_proto, tgt_spm_path)
        if vocab is None:
            for path, sp in ((src_spm_path, self.src_sp), (tgt_spm_path, self.tgt_sp)):
                ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
                if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
                    raise DataError(f"{path}: SentencePiece model has pad/unk/bos/eos ids {ids}, expected (0, 1, 2, 3)")
        else:
            vocab.check("vocab")
            self._silent = {"src": vocab.silent_ids("src"), "tgt": vocab.silent_ids("tgt")}
        self.tag_id: Optional[int] = None
        if target_lang_tag:
            tag = f"<2{tgt_lang}>"
            self.tag_id = self.src_sp.piece_to_id(tag) if vocab is None else vocab.src_index.get(tag, vocab.unk_id)
            if self.tag_id == self.unk_id:
                where = "a user symbol of the source model" if vocab is None else "in the source vocabulary"
                raise DataError(f"target_lang_tag: piece {tag!r} is not {where}")

    # ---- sizes and pieces

    @property
    def unk_id(self) -> int:
        return UNK_ID if self.vocab is None else self.vocab.unk_id

    @property
    def src_vocab_size(self) -> int:
        return self.src_sp.get_piece_size() if self.vocab is None else len(self.vocab.src)

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt_sp.get_piece_size() if self.vocab is None else len(self.vocab.tgt)

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: the larger vocabulary when source and target are separate."""
        return max(self.src_vocab_size, self.tgt_vocab_size)

    def piece_to_id(self, piece: str) -> int:
        """Target-model id of ``piece`` (special and user symbols have the same id in both);
        the unknown id for a piece the vocabulary lacks."""
        if self.vocab is not None:
            return self.vocab.tgt_index.get(piece, self.vocab.unk_id)
        return self.tgt_sp.piece_to_id(piece)

    def id_to_piece(self, i: int) -> str:
        return self.tgt_sp.id_to_piece(i) if self.vocab is None else self.vocab.tgt[i]

    def source_vocabulary(self) -> list[str]:
        """The source piece of every model id, in id order (what exporters write as a vocabulary)."""
        if self.vocab is not None:
            return list(self.vocab.src)
        return [self.src_sp.id_to_piece(i) for i in range(self.src_vocab_size)]

    def target_vocabulary(self) -> list[str]:
        """The target piece of every model id, in id order."""
        if self.vocab is not None:
            return list(self.vocab.tgt)
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
        if self.vocab is not None:
            ids = self._encode_vocab(self.src_sp, self.vocab.src_index, texts, lang_tokens=True)
        else:
            ids = self._encode(self.src_sp, texts)
        if self.tag_id is not None:
            ids = [[self.tag_id] + seq for seq in ids]
        return ids

    def encode_target(self, texts: list[str], normalized: bool = False) -> list[list[int]]:
        if not normalized:
            texts = [self.normalize_target(t) for t in texts]
        if self.vocab is not None:
            return self._encode_vocab(self.tgt_sp, self.vocab.tgt_index, texts, lang_tokens=False)
        return self._encode(self.tgt_sp, texts)

    def _encode(self, sp: spm.SentencePieceProcessor, texts: list[str], out_type: type = int) -> list[list]:
        if len(texts) < SMALL_LIST:
            return [sp.encode(t, out_type=out_type) for t in texts]
        return sp.encode(texts, out_type=out_type, num_threads=self.num_threads)

    def _encode_vocab(
        self, sp: spm.SentencePieceProcessor, index: dict[str, int], texts: list[str], lang_tokens: bool
    ) -> list[list[int]]:
        """Ids through the explicit vocabulary: SentencePiece's pieces looked up by name
        (unknown → unk). With ``lang_tokens``, a leading ``>>xx<<`` is one token of its own:
        its vocabulary id (unk if absent), never split into pieces."""
        unk = self.unk_id
        heads: list[list[int]] = [[] for _ in texts]
        if lang_tokens:
            texts = list(texts)
            for k, text in enumerate(texts):
                if m := LANG_TOKEN_RE.match(text):
                    heads[k] = [index.get(m.group(), unk)]
                    texts[k] = text[m.end() :]
        pieces = self._encode(sp, texts, str)
        return [head + [index.get(p, unk) for p in seq] for head, seq in zip(heads, pieces)]

    def _decode_vocab(self, sp: spm.SentencePieceProcessor, side: Side, ids: Sequence[Sequence[int]]) -> list[str]:
        """Ids → pieces (special ids, language tokens and ids outside the vocabulary dropped)
        → SentencePiece's detokenisation."""
        assert self.vocab is not None
        pieces, silent = (self.vocab.src if side == "src" else self.vocab.tgt), self._silent[side]
        n = len(pieces)
        seqs = [[pieces[i] for i in map(int, seq) if 0 <= i < n and i not in silent] for seq in ids]
        texts = [sp.decode(seq) for seq in seqs] if len(seqs) < SMALL_LIST else sp.decode(seqs, num_threads=self.num_threads)
        # SentencePiece copies a piece it does not know (in a shared vocabulary, one of the
        # other side's) verbatim, U+2581 included; MarianTokenizer makes those spaces too
        return [text.replace(_SPM_SPACE, " ").strip() for text in texts]

    def _decode(self, sp: spm.SentencePieceProcessor, ids: Sequence[Sequence[int]]) -> list[str]:
        n = sp.get_piece_size()
        # ids from a larger shared embedding (separate vocabularies) are not this model's
        clean = [[int(i) if 0 <= int(i) < n else UNK_ID for i in seq] for seq in ids]
        if len(clean) < SMALL_LIST:
            return [sp.decode(seq) for seq in clean]
        return sp.decode(clean, num_threads=self.num_threads)

    def decode_target(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenised text; pad/bos/eos are control pieces and decode to nothing (with a
        vocabulary: pad/unk/eos and target-language tokens)."""
        if self.vocab is not None:
            return self._decode_vocab(self.tgt_sp, "tgt", ids)
        return self._decode(self.tgt_sp, ids)

    def decode_source(self, ids: Sequence[Sequence[int]]) -> list[str]:
        if self.tag_id is not None:
            ids = [seq[1:] if len(seq) and int(seq[0]) == self.tag_id else seq for seq in ids]
        if self.vocab is not None:
            return self._decode_vocab(self.src_sp, "src", ids)
        return self._decode(self.src_sp, ids)

    # ---- persistence

    def config(self) -> dict:
        """The ``text.json`` contents: format 1, or format 2 with a ``vocab`` entry (the
        vocabulary file(s) and the special ids) for a pipeline with a :class:`Vocabulary`."""
        files = {"src": "spm.model", "tgt": "spm.model"} if self.same_spm else {"src": "spm.src.model", "tgt": "spm.tgt.model"}
        cfg = {
            "format": FORMAT if self.vocab is None else VOCAB_FORMAT,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "normalize_punct": self.punct,
            "unicode_form": self.unicode_form,
            "target_lang_tag": self.target_lang_tag,
            "spm": files,
        }
        if self.vocab is not None:
            v = self.vocab
            names = {"src": "vocab.json", "tgt": "vocab.json"} if v.shared else {"src": "vocab.src.json", "tgt": "vocab.tgt.json"}
            cfg["vocab"] = {**names, "pad_id": v.pad_id, "unk_id": v.unk_id, "eos_id": v.eos_id}
        return cfg

    def save(self, directory: str | Path) -> None:
        """Write ``text.json``, the SentencePiece model file(s) and the vocabulary file(s), if
        any, into ``directory`` (atomic per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config()
        files = {cfg["spm"]["src"]: self._src_proto, cfg["spm"]["tgt"]: self._tgt_proto}
        if self.vocab is not None:
            files[cfg["vocab"]["src"]] = _vocab_json(self.vocab.src)
            files[cfg["vocab"]["tgt"]] = _vocab_json(self.vocab.tgt)
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
        vocab = _load_vocab(path, cfg["vocab"]) if "vocab" in cfg else None
        return cls(
            cfg["src_lang"],
            cfg["tgt_lang"],
            files["src"],
            files["tgt"],
            cfg["normalize_punct"],
            unicode_form=cfg.get("unicode_form", "NFKC"),
            target_lang_tag=cfg.get("target_lang_tag", False),
            num_threads=num_threads,
            vocab=vocab,
        )


def _load_vocab(path: Path, entry: dict) -> Vocabulary:
    """The :class:`Vocabulary` of a format-2 ``text.json`` (``path``; ``entry``: its checked ``vocab``)."""
    files = {side: path.parent / entry[side] for side in ("src", "tgt")}
    for side, file in files.items():
        if not file.is_file():
            raise DataError(f"{path}: vocab.{side}: {file} is missing (or not a file)")
    src = read_vocab(files["src"])
    tgt = src if entry["src"] == entry["tgt"] else read_vocab(files["tgt"])
    vocab = Vocabulary(src, tgt, entry["pad_id"], entry["unk_id"], entry["eos_id"])
    vocab.check(f"{path}: vocab")
    return vocab


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


def is_language_code(value: object) -> bool:
    """A language code as mt accepts one: a letter, then letters, digits, ``-`` or ``_``."""
    return (isinstance(value, str) and value[:1].isalpha()
            and all(c.isalnum() or c in "-_" for c in value))  # fmt: skip


def _check_text_config(path: Path, cfg: dict) -> None:
    """Validate the fields of a ``text.json`` (``path``, for the messages)."""
    fmt = cfg.get("format", FORMAT)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt > VOCAB_FORMAT:
        raise DataError(f"{path}: format: expected 1 or 2, got {fmt!r} (written by a newer mt?)")
    for name in ("src_lang", "tgt_lang"):
        if name not in cfg:
            raise DataError(f"{path}: {name}: missing")
        if not is_language_code(cfg[name]):
            raise DataError(f"{path}: {name}: expected a language code like 'de', got {cfg[name]!r}")
    spm_files = cfg.get("spm")
    if not isinstance(spm_files, dict):
        raise DataError(f"{path}: spm: expected a mapping of src and tgt to file names, got {spm_files!r}")
    for side in ("src", "tgt"):
        _check_file_name(path, f"spm.{side}", spm_files.get(side))
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
    _check_vocab_entry(path, fmt, cfg.get("vocab"))


def _check_file_name(path: Path, name_field: str, name: object) -> None:
    """A file named in ``text.json`` is a plain file name inside its directory: no
    separators, no "..", nothing absolute (a ``text.json`` cannot make mt read other files)."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name):
        raise DataError(f"{path}: {name_field}: expected a file name inside {path.parent}, got {name!r}")


def _check_vocab_entry(path: Path, fmt: int, entry: object) -> None:
    """``vocab`` (format 2 only, where it is required): the vocabulary file(s) and the
    special ids (their range is checked once the files are read)."""
    if entry is None:
        if fmt == VOCAB_FORMAT:
            raise DataError(f"{path}: vocab: missing (format 2 has an explicit vocabulary)")
        return
    if fmt != VOCAB_FORMAT:
        raise DataError(f"{path}: vocab: needs format 2, the file says format {fmt}")
    if not isinstance(entry, dict):
        raise DataError(f"{path}: vocab: expected a mapping of src, tgt, pad_id, unk_id, eos_id, got {entry!r}")
    for side in ("src", "tgt"):
        _check_file_name(path, f"vocab.{side}", entry.get(side))
    for name in ("pad_id", "unk_id", "eos_id"):
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{path}: vocab.{name}: expected an id (an integer >= 0), got {value!r}")
