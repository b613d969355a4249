"""LibreTranslate compatibility helpers: language names, pair lookup, HTML segments.

``POST /translate`` / ``GET /languages`` (in :mod:`serve.app`) follow LibreTranslate's API so
its clients work unchanged. ``format: "html"`` translates the text between tags and keeps the
markup byte-for-byte; like any segment-wise approach, an inline tag (``<b>``) splits a
sentence into separately translated pieces.
"""

from __future__ import annotations

import html
import re
from typing import Optional, Sequence

LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def find_pair(pairs: dict[str, tuple[Optional[str], Optional[str]]], source: str, target: str) -> Optional[str]:
    """Model name for ``source``→``target`` (``source="auto"``: the only model into ``target``)."""
    if source == "auto":
        names = [n for n, (_, t) in pairs.items() if t == target]
        return names[0] if len(names) == 1 else None
    for name, (s, t) in pairs.items():
        if s == source and t == target:
            return name
    return None


# a tag, a comment, a doctype/processing instruction; script/style bodies are kept whole
_MARKUP = re.compile(r"(<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->|<[^>]*>)", re.S | re.I)


def split_html(doc: str) -> tuple[list[str], list[int]]:
    """``(parts, text_indices)``: ``"".join(parts) == doc``; ``parts[i]`` for ``i`` in
    ``text_indices`` are text runs worth translating (not markup, not only whitespace)."""
    parts = _MARKUP.split(doc)
    return parts, [i for i in range(0, len(parts), 2) if parts[i].strip()]


def merge_html(docs: Sequence[str], translations: Sequence[str]) -> list[str]:
    """Put translated runs (in :func:`html_runs` order) back into the markup of ``docs``.

    Runs were entity-decoded for translation, so the output is escaped again; each run keeps
    its leading/trailing whitespace so the layout survives.
    """
    out = iter(translations)
    result = []
    for parts, idx in map(split_html, docs):
        parts = list(parts)
        for i in idx:
            raw = parts[i]
            lead = raw[: len(raw) - len(raw.lstrip())]
            trail = raw[len(raw.rstrip()):]
            parts[i] = lead + html.escape(next(out), quote=False) + trail
        result.append("".join(parts))
    return result


def html_runs(docs: Sequence[str]) -> list[str]:
    """The text runs :func:`translate_html` would translate (for counting and limits)."""
    return [html.unescape(parts[i].strip()) for parts, idx in map(split_html, docs) for i in idx]
