"""The round report: ``bt_report.json`` (everything), ``bt_report.md`` (a table) and
``bt_report.png`` (test BLEU per round for both directions; round 0 = bitext-only baselines).

One row per round::

    {"round": 1,
     "forward": {"direction": "de-en", "model": DIR, "source": "trained" | "reused" | "given",
                 "scores": {"valid": {"bleu", "chrf", "sentences", ...}, "test2016": {...}}},
     "reverse": {... same ...},
     "control": {... same, plus "seconds" ...} (backtranslate.control: forward on the bitext
                alone, same start, same updates; absent otherwise),
     "synthetic": {"forward": {"mono": {...}, "generation": {...}, "filter": {...}}, "reverse": {...}},
     "seconds": {stage: wall seconds},
     "peak_rss_mib": the highest peak RSS of the round's stages (absent in older reports)}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mt.fileio import atomic_write_json, atomic_write_text, save_figure
from mt.extras import pyplot


def _score(row: dict[str, Any], side: str, split: str, metric: str) -> Optional[float]:
    return ((row.get(side) or {}).get("scores") or {}).get(split, {}).get(metric)


def _fmt(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.2f}"


def headline_split(rows: list[dict[str, Any]]) -> str:
    """The split the plot and the headline use: the first test set, else ``valid``."""
    for row in rows:
        for side in ("forward", "reverse"):
            splits = list(((row.get(side) or {}).get("scores") or {}))
            tests = [s for s in splits if s != "valid"]
            if tests:
                return tests[0]
    return "valid"


def _counts(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def splits(rows: list[dict[str, Any]]) -> list[str]:
    """Every scored split of the report, ``valid`` first, then the test sets in config order."""
    seen: dict[str, None] = {}
    for row in rows:
        for side in ("forward", "reverse"):
            seen.update(dict.fromkeys(((row.get(side) or {}).get("scores") or {})))
    return sorted(seen, key=lambda s: s != "valid")  # stable: test sets keep their order


def _pair(row: dict[str, Any], side: str, split: str) -> str:
    return f"{_fmt(_score(row, side, split, 'bleu'))} / {_fmt(_score(row, side, split, 'chrf'))}"


def markdown(report: dict[str, Any]) -> str:
    rows = report["rounds"]
    fwd, rev = report["directions"]["forward"], report["directions"]["reverse"]
    names = splits(rows)
    score_cols = [(side, split) for side in ("forward", "reverse") for split in names]
    header = " | ".join(f"{report['directions'][side]} {split}" for side, split in score_cols)
    lines = [
        f"# Back-translation report: {fwd} (forward) and {rev} (reverse)",
        "",
        "Round 0 = bitext-only baselines. Each score cell is sacreBLEU / chrF"
        + (f" (first {report['eval_sentences']} sentences only)" if report.get("eval_sentences") else "")
        + f", beam {report.get('eval_beam')}.",
        "",
        f"| round | {header} | synthetic pairs {fwd} / {rev} | generation sent/s | wall min | peak RSS GiB |",
        "|---:|" + "---:|" * (len(score_cols) + 4),
    ]
    for row in rows:
        syn = row.get("synthetic") or {}
        pairs = [str((syn.get(side) or {}).get("filter", {}).get("kept", "–")) for side in ("forward", "reverse")]
        speeds = [(syn.get(side) or {}).get("generation", {}).get("sentences_per_s") for side in ("forward", "reverse")]
        speed = " / ".join(_fmt(s) for s in speeds if s) or "–"
        minutes = sum((row.get("seconds") or {}).values()) / 60.0
        cells = " | ".join(_pair(row, side, split) for side, split in score_cols)
        peak = row.get("peak_rss_mib")
        peak_cell = "–" if peak is None else f"{peak / 1024:.2f}"
        lines.append(f"| {row['round']} | {cells} | {' / '.join(pairs)} | {speed} | {minutes:.1f} | {peak_cell} |")
    lines += control_table(report)
    lines += ["", "Models per round (trained / reused from the previous round / given in the config):", ""]
    for row in rows:
        for side in ("forward", "reverse"):
            m = row.get(side) or {}
            if m:
                lines.append(f"- round {row['round']} {m.get('direction')}: `{m.get('model')}` ({m.get('source')})")
    filt = [(row["round"], side, s) for row in rows for side, s in (row.get("synthetic") or {}).items()]
    if filt:
        lines += ["", "Monolingual input and synthetic-pair filtering (counts):", ""]
        for r, side, s in filt:
            mono = {k: v for k, v in (s.get("mono") or {}).items() if isinstance(v, int)}
            g = s.get("generation") or {}
            lines.append(
                f"- round {r}, for the {report['directions'][side]} model: monolingual {_counts(mono)}; "
                f"generated {g.get('sentences', 0)} sentences ({g.get('sampling')}, {g.get('sentences_per_s', 0)} sentences/s"
                f"{', resumed after ' + str(g['shards_done_before']) + ' shards' if g.get('shards_done_before') else ''}); "
                f"filter {_counts(s.get('filter') or {})}"
            )
    sig = report.get("signatures") or {}
    by_direction = sig.get("bleu_by_direction") or {}
    if len(set(by_direction.values())) > 1:  # the output languages take different BLEU tokenizers
        lines += [""] + [f"BLEU signature ({d}): `{v}`  " for d, v in by_direction.items()]
        lines += [f"chrF signature: `{sig.get('chrf')}`"]
    elif sig:
        lines += ["", f"BLEU signature: `{sig.get('bleu')}`  ", f"chrF signature: `{sig.get('chrf')}`"]
    if report.get("final_model"):
        lines += ["", f"Final {fwd} model (best valid BLEU over rounds): `{report['final_model']}`"]
    lines += [
        "",
        "Note: the monolingual text's language is not checked; text in the wrong language would be",
        "back-translated like any other and silently hurt the forward model.",
    ]
    return "\n".join(lines) + "\n"


def control_table(report: dict[str, Any]) -> list[str]:
    """Markdown lines comparing each round's forward model with its bitext-only control (same
    start, same updates): the gain back-translation itself brought. Empty without controls."""
    rows = [row for row in report["rounds"] if row.get("control")]
    if not rows:
        return []
    fwd = report["directions"]["forward"]
    lines = ["", f"Back-translation vs the bitext-only control ({fwd}; the control continues from the same",
             "model for the same number of updates on the bitext alone):", "",
             "| round | split | updates | with back-translation | bitext-only control | gain BLEU / chrF |",
             "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        for split in splits([row]):
            gain = [_diff(_score(row, "forward", split, m), _score(row, "control", split, m)) for m in ("bleu", "chrf")]
            lines.append(f"| {row['round']} | {split} | {row['control'].get('steps', '–')} | {_pair(row, 'forward', split)} "
                         f"| {_pair(row, 'control', split)} | {' / '.join(gain)} |")  # fmt: skip
    return lines


def _diff(a: Optional[float], b: Optional[float]) -> str:
    return "–" if a is None or b is None else f"{a - b:+.2f}"


def plot(report: dict[str, Any], png: Path) -> Optional[Path]:
    """Test BLEU per round, one line per direction, round 0 drawn as a dotted baseline; None
    without matplotlib (the `train` extra; the numbers are in the json and md either way)."""
    plt = pyplot()
    if plt is None:
        return None
    rows = report["rounds"]
    test = headline_split(rows)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for side, marker in (("forward", "o"), ("reverse", "s")):
        pts = [(row["round"], _score(row, side, test, "bleu")) for row in rows]
        pts = [(r, b) for r, b in pts if b is not None]
        if not pts:
            continue
        label = report["directions"][side]
        line = ax.plot([r for r, _ in pts], [b for _, b in pts], marker=marker, label=label)[0]
        if pts[0][0] == 0:
            ax.axhline(pts[0][1], color=line.get_color(), linestyle=":", linewidth=1, label=f"{label} bitext baseline")
        if side == "forward":
            _plot_controls(ax, rows, test, line.get_color(), label)
    ax.set_xlabel("back-translation round (0 = bitext only)")
    ax.set_ylabel(f"BLEU on {test}")
    ax.set_xticks([row["round"] for row in rows])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)


def _plot_controls(ax: Any, rows: list[dict[str, Any]], test: str, color: str, label: str) -> None:
    """Each round's bitext-only control as a dashed branch from the model it started from (the
    previous round's forward model) to its own score."""
    labelled = False
    for prev, row in zip(rows, rows[1:]):
        start, end = _score(prev, "forward", test, "bleu"), _score(row, "control", test, "bleu")
        if start is None or end is None:
            continue
        ax.plot([prev["round"], row["round"]], [start, end], marker="x", linestyle="--", color=color,
                label=None if labelled else f"{label} bitext-only control (same updates)")  # fmt: skip
        labelled = True


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write bt_report.json, bt_report.md and bt_report.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bt_report.json", "md": out_dir / "bt_report.md", "png": out_dir / "bt_report.png"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], markdown(report))
    if plot(report, paths["png"]) is None:
        del paths["png"]
    return paths


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
