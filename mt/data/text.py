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
        self.src_sp = spm.SentencePieceProcessor(model_proto=self._src_proto)
        self.tgt_sp = self.src_sp if self.joint else spm.SentencePieceProcessor(model_proto=self._tgt_proto)
        for name, sp in (("source", self.src_sp), ("target", self.tgt_sp)):
            ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
            if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
                raise DataError(f"{name} SentencePiece model has pad/unk/bos/eos ids {ids}, expected (0, 1, 2, 3)")
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
            tmp = directory / f".{name}.tmp{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, directory / name)

    @classmethod
    def load(cls, directory: str | Path, num_threads: int = 0) -> "TextPipeline":
        directory = Path(directory)
        path = directory / "text.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: text pipeline settings not found (run `mt prepare`)")
        cfg = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            cfg["src_lang"],
            cfg["tgt_lang"],
            directory / cfg["spm"]["src"],
            directory / cfg["spm"]["tgt"],
            cfg["normalize_punct"],
            unicode_form=cfg.get("unicode_form", "NFKC"),
            target_lang_tag=cfg.get("target_lang_tag", False),
            num_threads=num_threads,
        )
