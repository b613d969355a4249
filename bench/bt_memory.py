"""Memory and speed of one `mt backtranslate` process, stage by stage, under memory settings.

Runs the same back-translation config once per variant, each in a fresh child process, and
reads what the run recorded itself: every stage's peak RSS and its RSS after the stage
(``rss_peak_mib`` / ``rss_end_mib`` in ``bt_manifest.json``), the training throughput of
every training stage (median target tokens/s of its ``metrics.jsonl``, first record dropped),
generation sentences/s, wall seconds, and the child's whole-run peak (``wait4``).

Variants (what differs, everything else equal):

* ``bounded``: mt's defaults: malloc tuning (``mt.runtime.tune_malloc``) and the oneDNN /
  ideep kernel caches off in a training process (``mt.runtime.bound_kernel_caches``);
* ``cached``: the kernel caches at the libraries' own capacity (1,024 kernels each), i.e. mt
  before the bound (the user's environment wins over ``bound_kernel_caches``);
* ``untuned``: ``cached`` with glibc's malloc defaults too (``MT_NO_MALLOC_TUNING=1``).

The variants are ``bench/train_memory.py``'s (its ``fixed`` one only makes sense there).

The whole default recipe takes ~1 h 40 min per variant on 2 cores; ``--quick`` shortens
every training and generation (same model, batch and data) so a comparison takes minutes::

    python bench/bt_memory.py --quick                                   # ~25 min on 2 cores
    python bench/bt_memory.py --variants bounded,cached                 # the whole default recipe
    python bench/bt_memory.py --config recipes/configs/chren_chr_en.yaml --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mt.runtime import cpu_name  # noqa: E402
from train_memory import variant_env  # noqa: E402

VARIANTS = ("bounded", "cached", "untuned")
QUICK = [  # same model, batch and data; fewer updates and sentences
    "train.max_steps=300", "backtranslate.reverse_train.max_steps=300", "backtranslate.continue_train.max_steps=150",
    "backtranslate.max_mono_lines=4000", "backtranslate.eval_sentences=300", "train.valid_every=100",
    "train.save_every=100",
]  # fmt: skip


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """One `mt backtranslate` child with the variant's environment; ``(seconds, peak)``."""
    run_dir = args.out / name
    env = variant_env(name)
    sets = [f"run_dir={run_dir}"] + (QUICK if args.quick else []) + args.set
    cmd = [sys.executable, "-m", "mt.cli", "backtranslate", str(args.config), "--resume"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    with open(args.out / f"{name}.log", "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"variant {name}: mt backtranslate failed; see {args.out / f'{name}.log'}")
    return {"seconds": time.perf_counter() - t0, "peak_mib": usage.ru_maxrss / 1024, "run_dir": run_dir}


def train_speed(metrics: Path) -> float | None:
    """Median target tokens/s of a training's records (the first, with start-up, dropped)."""
    if not metrics.is_file():
        return None
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    speeds = [r["tgt_tokens_per_s"] for r in recs if r.get("kind") == "train"][1:]
    return statistics.median(speeds) if speeds else None


def stage_rows(run_dir: Path) -> dict[str, dict]:
    """Per stage: seconds, peak and end RSS, and its throughput where it has one."""
    stages = json.loads((run_dir / "bt_manifest.json").read_text())["stages"]
    rows = {}
    for name, st in stages.items():
        row = {k: st.get(k) for k in ("seconds", "rss_peak_mib", "rss_end_mib")}
        r, direction, kind = (name.split(".") + ["", ""])[:3]
        if kind == "train":
            row["tgt_tok_s"] = train_speed(run_dir / r.replace("r", "round", 1) / direction / "metrics.jsonl")
        elif kind == "generate":
            row["sent_s"] = (st.get("result") or {}).get("sentences_per_s")
        rows[name] = row
    return rows


def run_peak(wait_peak_mib: float, stages: dict[str, dict]) -> float:
    """The whole run's peak RSS. The pipeline resets the kernel's high-water mark at the start
    of every stage (so each stage's own peak can be read), which leaves ``wait4``'s figure at
    the last stage's peak; the run's is the largest of them all."""
    return max([wait_peak_mib] + [row["rss_peak_mib"] for row in stages.values() if row.get("rss_peak_mib")])


def fmt(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def report(results: dict[str, dict]) -> str:
    names = list(results)
    stages = list(next(iter(results.values()))["stages"])
    lines = [f"| stage | {' | '.join(f'{n} peak / end MiB' for n in names)} | {' | '.join(f'{n} speed' for n in names)} |",
             "|---|" + "---|" * (2 * len(names))]  # fmt: skip
    for s in stages:
        cells = [f"{fmt(results[n]['stages'].get(s, {}).get('rss_peak_mib'))} / {fmt(results[n]['stages'].get(s, {}).get('rss_end_mib'))}" for n in names]
        speeds = []
        for n in names:
            row = results[n]["stages"].get(s, {})
            speeds.append(f"{fmt(row['tgt_tok_s'])} tgt tok/s" if row.get("tgt_tok_s") else
                          f"{fmt(row['sent_s'], 1)} sent/s" if row.get("sent_s") else "")  # fmt: skip
        lines.append(f"| {s} | {' | '.join(cells)} | {' | '.join(speeds)} |")
    lines.append("")
    for n in names:
        r = results[n]
        train = [v["tgt_tok_s"] for v in r["stages"].values() if v.get("tgt_tok_s")]
        r["train_tok_s"] = statistics.mean(train) if train else None
        lines.append(f"- **{n}**: whole-run peak RSS {r['peak_mib'] / 1024:.2f} GiB, {r['seconds'] / 60:.1f} min, "
                     f"mean training speed {fmt(r['train_tok_s'])} tgt tok/s")  # fmt: skip
    base = results[names[0]]
    for n in names[1:]:
        r = results[n]
        ratio = base["train_tok_s"] / r["train_tok_s"] if base["train_tok_s"] and r["train_tok_s"] else None
        lines.append(f"- {names[0]} vs {n}: peak RSS {base['peak_mib'] / r['peak_mib']:.2f}x, "
                     f"training speed {fmt(ratio, 2)}x, wall time {base['seconds'] / r['seconds']:.2f}x")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "recipes/configs/bt_multi30k_de_en.yaml")
    ap.add_argument("--variants", default="bounded,cached", help=f"comma-separated, from {', '.join(VARIANTS)}; the first is the yardstick")
    ap.add_argument("--quick", action="store_true", help="shortened trainings and generations (same model and batch)")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for every variant")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bt_memory")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(VARIANTS)})")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; config {args.config}{' (--quick)' if args.quick else ''}", flush=True)
    results = {}
    for n in names:  # one after the other: the variants must not share the cores
        results[n] = run_variant(n, args)
        results[n]["stages"] = stage_rows(results[n]["run_dir"])
        results[n]["peak_mib"] = run_peak(results[n]["peak_mib"], results[n]["stages"])
        print(f"{n}: {results[n]['seconds'] / 60:.1f} min, peak {results[n]['peak_mib']:.0f} MiB", flush=True)
    print(report(results))


if __name__ == "__main__":
    main()
