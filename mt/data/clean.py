"""Training-bitext filters with a per-rule report.

Each pair is normalised (:func:`mt.data.text.normalize`, with the per-language defaults of
:mod:`mt.data.languages` for settings left at ``auto``) and then checked by the rules in
order; a dropped pair is counted under the FIRST rule that fires, so the counts add up:
``read = kept + sum(dropped)``. Rules (lengths: see below):

  invalid_utf8   a side was not UTF-8 (counted by the reader, ``clean.invalid_utf8: drop``)
  control_chars  a side held C0/C1 control characters (``clean.control_chars: drop``;
                 with ``strip`` they are removed and the pair counted as ``control_stripped``)
  empty          a side is empty after normalisation
  too_short      a side has fewer than ``min_tokens`` tokens
  too_long       a side has more than ``max_tokens`` tokens
  ratio          longer / shorter side > ``max_ratio``
  identical      source == target (untranslated copies)
  duplicate      the same (source, target) pair was already kept

Lengths (:class:`Lengths`). A side is counted in whitespace tokens, or in characters for a
language written without spaces between words (``length_unit`` in :mod:`mt.data.languages`:
Chinese, Japanese, Thai, ...), where a whole sentence is one token. ``min_tokens`` applies to
these raw counts. A character count is not a word count, so when a side is counted in
characters, ``max_tokens`` and ``max_ratio`` compare lengths rescaled by the pair's typical
ratio, the median over the corpus's first :data:`CALIBRATION_PAIRS` pairs (e.g. Chinese
characters per English word): ``max_tokens`` stays in words of the spaced side and a typical
pair has ratio 1, as between two spaced languages. Two spaced languages are never rescaled.

Valid/test sets are never filtered, only normalised (a filtered test set is a different test).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

from mt.config import CleanConfig
from mt.data.languages import LengthUnit, length_unit
from mt.data.text import has_control_chars, normalize

Pair = tuple[str, str]

CALIBRATION_PAIRS = 10_000  # pairs read to find the typical length ratio (median: robust to misaligned pairs)

def side_length(text: str, unit: LengthUnit) -> int:
    """Length of a normalised side (single spaces, no edges): whitespace tokens or non-space characters."""
    if unit == "word":
        return text.count(" ") + 1 if text else 0
    return len(text) - text.count(" ")


@dataclass(frozen=True)
class Lengths:
    """How the length rules count a (src, tgt) pair; see the module docstring.

    ``scale``: the typical ``src / tgt`` length in these units (1.0 when both are words), so
    ``src / scale`` is in the target's units and ``tgt * scale`` in the source's.
    """

    src_unit: LengthUnit = "word"
    tgt_unit: LengthUnit = "word"
    scale: float = 1.0

    @classmethod
    def for_pair(cls, src_lang: str, tgt_lang: str) -> "Lengths":
        """The units of the pair's languages, before calibration."""
        return cls(length_unit(src_lang), length_unit(tgt_lang))

    @property
    def rescaled(self) -> bool:
        return "char" in (self.src_unit, self.tgt_unit)

    def raw(self, src: str, tgt: str) -> tuple[int, int]:
        return side_length(src, self.src_unit), side_length(tgt, self.tgt_unit)

    def comparable(self, ns: int, nt: int) -> tuple[float, float]:
        """Raw lengths in one unit: the word side's (the target's when both are characters)."""
        if self.src_unit == "word" and self.tgt_unit == "char":
            return ns, nt * self.scale
        return (ns / self.scale, nt) if self.rescaled else (ns, nt)

    def raw_limits(self, max_tokens: float) -> tuple[float, float]:
        """The raw (src, tgt) lengths that are ``max_tokens`` in :meth:`comparable` units."""
        if self.src_unit == "word" and self.tgt_unit == "char":
            return max_tokens, max_tokens / self.scale
        return (max_tokens * self.scale, max_tokens) if self.rescaled else (max_tokens, max_tokens)

    def swapped(self) -> "Lengths":
        """The same pair read as (tgt, src)."""
        return Lengths(self.tgt_unit, self.src_unit, 1.0 / self.scale)

    def calibrated(self, pairs: Iterable[tuple[str, str]]) -> "Lengths":
        """A copy whose ``scale`` is the median ``src / tgt`` raw length ratio of ``pairs``
        (normalised text; empty sides skipped); unchanged for two spaced languages or no pairs."""
        if not self.rescaled:
            return self
        ratios = [ns / nt for ns, nt in (self.raw(s, t) for s, t in pairs) if ns and nt]
        return Lengths(self.src_unit, self.tgt_unit, statistics.median(ratios)) if ratios else self

    def as_dict(self) -> dict[str, object]:
        return {"src_unit": self.src_unit, "tgt_unit": self.tgt_unit, "scale": round(self.scale, 4)}


DROP_RULES = ("invalid_utf8", "control_chars", "empty", "too_short", "too_long", "ratio", "identical", "duplicate")


@dataclass
class CleanReport:
    """Pair counts per rule. ``read`` counts every pair seen, undecodable ones included."""

    read: int = 0
    kept: int = 0
    invalid_utf8: int = 0
    control_chars: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    ratio: int = 0
    identical: int = 0
    duplicate: int = 0
    control_stripped: int = 0  # kept pairs whose control characters were removed (not a drop)

    @classmethod
    def total(cls, reports: Iterable["CleanReport"]) -> "CleanReport":
        """The counts of several corpora added up."""
        out = cls()
        for r in reports:
            for name, n in r.as_dict().items():
                setattr(out, name, getattr(out, name) + n)
        return out

    @property
    def dropped(self) -> int:
        return sum(getattr(self, r) for r in DROP_RULES)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def format(self) -> str:
        """A small table for the console."""
        width = max(len(r) for r in DROP_RULES) + 2
        pct = lambda n: f"{100.0 * n / max(self.read, 1):6.2f}%"  # noqa: E731
        lines = [f"  {'read':<{width}}{self.read:>10}"]
        for rule in DROP_RULES:
            n = getattr(self, rule)
            lines.append(f"  {'- ' + rule:<{width}}{n:>10} {pct(n)}")
        lines.append(f"  {'kept':<{width}}{self.kept:>10} {pct(self.kept)}")
        if self.control_stripped:
            lines.append(f"  ({self.control_stripped} kept pairs had control characters stripped)")
        return "\n".join(lines)


class Cleaner:
    """Streaming filter: ``for src, tgt in Cleaner(cfg, "de", "en")(pairs)`` yields normalised kept pairs.

    ``report`` is updated as pairs flow through. Deduplication keeps a 64-bit hash per kept
    pair (8 bytes each, not the strings), so 100M pairs cost about a gigabyte, not the corpus.
    """

    def __init__(self, cfg: CleanConfig, src_lang: str, tgt_lang: str) -> None:
        self.cfg = cfg.resolved(src_lang, tgt_lang)  # "auto" settings decided once, by language
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.lengths = Lengths.for_pair(src_lang, tgt_lang)  # scale 1 until calibrate()
        self.report = CleanReport()
        self._seen: set[int] = set()

    def calibrate(self, pairs: Iterable[Pair]) -> Lengths:
        """Set (and return) the length scale from the first :data:`CALIBRATION_PAIRS` of
        ``pairs``, normalised as the rules see them; a no-op for two spaced languages."""
        if self.lengths.rescaled:
            head = itertools.islice(pairs, CALIBRATION_PAIRS)
            self.lengths = self.lengths.calibrated((self._norm(s, self.src_lang), self._norm(t, self.tgt_lang)) for s, t in head)
        return self.lengths

    def add_invalid_utf8(self, n: int) -> None:
        """Record pairs the reader dropped as undecodable (they never reach ``__call__``)."""
        self.report.invalid_utf8 += n
        self.report.read += n

    def _norm(self, text: str, lang: str) -> str:
        return normalize(text, lang, self.cfg.punct_for(lang), self.cfg.unicode_form)

    def check(self, src: str, tgt: str) -> tuple[str | None, Pair]:
        """``(rule that drops the pair or None, normalised pair)``; updates nothing."""
        cfg = self.cfg
        s, t = self._norm(src, self.src_lang), self._norm(tgt, self.tgt_lang)
        if cfg.control_chars == "drop" and (has_control_chars(src) or has_control_chars(tgt)):
            return "control_chars", (s, t)
        if not s or not t:
            return "empty", (s, t)
        ns, nt = self.lengths.raw(s, t)
        if min(ns, nt) < cfg.min_tokens:
            return "too_short", (s, t)
        cs, ct = self.lengths.comparable(ns, nt)
        if max(cs, ct) > cfg.max_tokens:
            return "too_long", (s, t)
        if max(cs, ct) > cfg.max_ratio * min(cs, ct):
            return "ratio", (s, t)
        if cfg.drop_identical and s == t:
            return "identical", (s, t)
        return None, (s, t)

    def __call__(self, pairs: Iterable[Pair]) -> Iterator[Pair]:
        report = self.report
        for src, tgt in pairs:
            report.read += 1
            rule, (s, t) = self.check(src, tgt)
            if rule is None and self.cfg.dedup:
                key = hash((s, t))
                if key in self._seen:
                    rule = "duplicate"
                else:
                    self._seen.add(key)
            if rule is not None:
                setattr(report, rule, getattr(report, rule) + 1)
                continue
            if has_control_chars(src) or has_control_chars(tgt):
                report.control_stripped += 1
            report.kept += 1
            yield s, t
