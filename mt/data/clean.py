"""Training-bitext filters with a per-rule report.

Each pair is normalised (:func:`mt.data.text.normalize`, with the per-language defaults of
:mod:`mt.data.languages` for settings left at ``auto``) and then checked by the rules in
order; a dropped pair is counted under the FIRST rule that fires, so the counts add up:
``read = kept + sum(dropped)``. Rules (lengths in whitespace tokens):

  invalid_utf8   a side was not UTF-8 (counted by the reader, ``clean.invalid_utf8: drop``)
  control_chars  a side held C0/C1 control characters (``clean.control_chars: drop``;
                 with ``strip`` they are removed and the pair counted as ``control_stripped``)
  empty          a side is empty after normalisation
  too_short      a side has fewer than ``min_tokens`` tokens
  too_long       a side has more than ``max_tokens`` tokens
  ratio          longer / shorter side > ``max_ratio``
  identical      source == target (untranslated copies)
  duplicate      the same (source, target) pair was already kept

Valid/test sets are never filtered, only normalised (a filtered test set is a different test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

from mt.config import CleanConfig
from mt.data.text import has_control_chars, normalize

Pair = tuple[str, str]

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
        self.report = CleanReport()
        self._seen: set[int] = set()

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
        ns, nt = s.count(" ") + 1, t.count(" ") + 1  # normalised: single spaces, no edges
        if min(ns, nt) < cfg.min_tokens:
            return "too_short", (s, t)
        if max(ns, nt) > cfg.max_tokens:
            return "too_long", (s, t)
        if max(ns, nt) > cfg.max_ratio * min(ns, nt):
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
