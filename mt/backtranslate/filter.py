"""Filtering synthetic pairs, and the training corpus of a back-translation stage.

A synthetic pair is (generated source, real target). Rules, in order; a dropped pair is
counted under the first rule that fires, so ``read = kept + sum(dropped)``:

  empty      the generated side is empty (the real side never is: mono lines were cleaned)
  too_long   a side is longer than ``max_tokens``
  ratio      longer side / shorter side > ``max_ratio`` (a hallucination or a truncated output)
  duplicate  the same pair was already kept (``dedup``)

Lengths are whitespace tokens, or characters for languages written without spaces, rescaled by
the bitext's typical ratio (:class:`mt.data.clean.Lengths`, as the bitext cleaning counts them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from mt.config import BTFilterConfig
from mt.data.clean import Lengths
from mt.fileio import atomic_write, read_lines

RULES = ("empty", "too_long", "ratio", "duplicate")


@dataclass
class FilterReport:
    read: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    ratio: int = 0
    duplicate: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def filter_pairs(
    pairs: Iterable[tuple[str, str]], cfg: BTFilterConfig, report: FilterReport, lengths: Lengths = Lengths()
) -> Iterator[tuple[str, str]]:
    """Yield the (synthetic, real) pairs that pass the rules; ``report`` counts as they flow.
    ``lengths``: how to count the (synthetic, real) sides."""
    seen: set[int] = set()  # 64-bit hashes, not strings: memory stays small for millions of pairs
    for syn, real in pairs:
        report.read += 1
        ns, nr = lengths.raw(" ".join(syn.split()), " ".join(real.split()))  # counted on single-spaced text
        cs, cr = lengths.comparable(ns, max(nr, 1))
        rule = None
        if ns == 0:
            rule = "empty"
        elif max(cs, cr) > cfg.max_tokens:
            rule = "too_long"
        elif max(cs, cr) > cfg.max_ratio * min(cs, cr):
            rule = "ratio"
        elif cfg.dedup:
            key = hash((syn, real))
            if key in seen:
                rule = "duplicate"
            else:
                seen.add(key)
        if rule is not None:
            setattr(report, rule, getattr(report, rule) + 1)
            continue
        report.kept += 1
        yield syn, real


def filter_files(
    synthetic: Path, real: Path, out_syn: Path, out_real: Path, cfg: BTFilterConfig, lengths: Lengths = Lengths()
) -> FilterReport:
    """Filter line-aligned ``synthetic``/``real`` into ``out_syn``/``out_real`` (each atomic)."""
    report = FilterReport()
    n_syn, n_real = sum(1 for _ in read_lines(synthetic)), sum(1 for _ in read_lines(real))
    if n_syn != n_real:
        raise ValueError(f"{synthetic} has {n_syn} lines but {real} has {n_real}; they must be aligned")
    # two aligned files: renamed into place (out_syn first) only when both are written
    with atomic_write(out_real) as fr, atomic_write(out_syn) as fs:
        for s, r in filter_pairs(zip(read_lines(synthetic), read_lines(real)), cfg, report, lengths):
            fs.write(s + "\n")
            fr.write(r + "\n")
    return report


def write_training_corpus(
    bitext: Iterable[tuple[str, str]],
    synthetic: list[tuple[Path, Path]],
    out_src: Path,
    out_tgt: Path,
    upsample: int = 1,
    tag: str | None = None,
) -> dict[str, int]:
    """One round's training text: the (cleaned) bitext ``upsample`` times, then each
    synthetic (source file, target file) pair with ``tag + " "`` prepended to the source.

    The prepare stage that reads this must not deduplicate, or the upsampling is undone.
    Returns line counts.
    """
    bitext = list(bitext)
    counts = {"bitext": len(bitext), "bitext_upsampled": len(bitext) * upsample, "synthetic": 0}
    # two aligned files: renamed into place (out_src first) only when both are written
    with atomic_write(out_tgt) as ft, atomic_write(out_src) as fs:
        for _ in range(upsample):
            for s, t in bitext:
                fs.write(s + "\n")
                ft.write(t + "\n")
        prefix = f"{tag} " if tag else ""
        for src_path, tgt_path in synthetic:
            for s, t in zip(read_lines(src_path), read_lines(tgt_path)):
                fs.write(prefix + s + "\n")
                ft.write(t + "\n")
                counts["synthetic"] += 1
    counts["total"] = counts["bitext_upsampled"] + counts["synthetic"]
    return counts
