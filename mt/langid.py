"""Language identification: which of a caller's candidate languages is a text written in.

:func:`detect` ranks the candidates with probabilities (0..1, summing to 1 over them). The
model is py3langid's (langid.py's naive Bayes over byte n-grams, 140 languages), which ships
inside its wheel: nothing is downloaded at run time. It scored best of the detectors compared
on short texts restricted to the served languages (docs/langid.md has the numbers).

Restricting to the candidates is the point: a server choosing among its models only has to
tell its own languages apart, which is far more reliable on short texts than naming one of
140. Languages the model does not know are recognised by their writing system
(:data:`SCRIPTS`), so a served Cherokee model can still be chosen.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any, Sequence

# Languages told apart by their script alone, for those py3langid does not know: code ->
# inclusive code point ranges of the script. Cherokee is the only language written in the
# Cherokee syllabary (main block and the lower-case supplement).
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "chr": ((0x13A0, 0x13FF), (0xAB70, 0xABBF)),
}

_LOCK = threading.Lock()
_BASE: list[Any] = []  # the loaded identifier (loading takes ~0.7 s: once per process, on first use)


class EmptyTextError(ValueError):
    """The text has no characters to identify (empty or only whitespace)."""


def _identifier() -> Any:
    """py3langid's identifier over all its languages, with probabilities (``norm_probs``)."""
    with _LOCK:
        if not _BASE:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _BASE.append(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))
        return _BASE[0]


@functools.lru_cache(maxsize=1)
def model_languages() -> frozenset[str]:
    """The language codes the statistical model knows (ISO 639-1 where there is one)."""
    return frozenset(_identifier().labels)


@functools.lru_cache(maxsize=64)
def _restricted(langs: tuple[str, ...]) -> Any:
    """An identifier restricted to ``langs``: its softmax runs over them only. A copy, since
    ``set_languages`` rebinds the model's attributes (the loaded one is shared by threads)."""
    ident = copy.copy(_identifier())
    ident.set_languages(langs)
    return ident


def script_shares(text: str, langs: Sequence[str]) -> dict[str, float]:
    """For each of ``langs`` that has a :data:`SCRIPTS` rule, the share of ``text``'s letters
    written in its script (0 when the text has no letters)."""
    letters = [ord(ch) for ch in text if ch.isalpha()]
    shares = {}
    for lang in langs:
        ranges = SCRIPTS.get(lang)
        if ranges is not None:
            inside = sum(any(lo <= c <= hi for lo, hi in ranges) for c in letters)
            shares[lang] = inside / len(letters) if letters else 0.0
    return shares


def detect(text: str, candidates: Sequence[str]) -> list[tuple[str, float]]:
    """Every candidate language with the probability (0..1) that ``text`` is in it, best first.

    Script-rule languages (:data:`SCRIPTS`) get the share of the letters in their script; the
    rest of the probability is split among the candidates the model knows, by the model
    restricted to them. Candidates known to neither get 0. Ties keep ``candidates``' order.
    Raises :class:`EmptyTextError` for empty or whitespace-only text, ``ValueError`` for no
    candidates.
    """
    if not text.strip():
        raise EmptyTextError("text is empty or only whitespace: there is no language to detect")
    langs = list(dict.fromkeys(candidates))
    if not langs:
        raise ValueError("candidates: at least one language is needed")
    probs = script_shares(text, langs)
    rest = max(0.0, 1.0 - sum(probs.values()))
    known = tuple(sorted(lang for lang in langs if lang not in probs and lang in model_languages()))
    if known and rest > 0:
        for lang, p in _restricted(known).rank(text):
            probs[lang] = rest * float(p)
    order = {lang: i for i, lang in enumerate(langs)}
    return sorted(((lang, probs.get(lang, 0.0)) for lang in langs), key=lambda lp: (-lp[1], order[lp[0]]))
