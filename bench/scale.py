"""How `mt prepare` and the first training steps scale with the corpus size.

Builds synthetic German–English corpora of the requested sizes from the shared data
(Tatoeba + Multi30k training pairs, repeated; copy ``k`` of a pair gets `` <k>`` appended on
both sides, a number the model copies, so copies survive deduplication like distinct
sentences), then for each size runs, as child processes:

* ``mt prepare`` on it: wall time and peak RSS (``wait4``'s ``ru_maxrss`` of the child);
* ``mt train`` for a few steps on the prepared data (same model and batch size for every
  corpus): peak RSS, which must not grow with the corpus (the data is memory-mapped).

It prints one row per size and the ratios the targets are about: prepare seconds per
million pairs (flat = linear), peak RSS of prepare, and training RSS against the smallest
corpus's. Usage::

    python bench/scale.py --sizes 185000,1000000,5000000 --out runs/scale

Nothing here is timed against a peer: there is no peer with the same cleaning and
SentencePiece settings, so the yardstick is the smallest size measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt.runtime import cpu_name  # noqa: E402

SOURCES = [("tatoeba/train.de", "tatoeba/train.en"), ("multi30k/train.de", "multi30k/train.en")]


def base_pairs(data_dir: Path) -> list[tuple[str, str]]:
    """The real pairs every synthetic corpus is built from (~185k)."""
    pairs: list[tuple[str, str]] = []
    for src, tgt in SOURCES:
        s = (data_dir / src).read_text(encoding="utf-8").splitlines()
        t = (data_dir / tgt).read_text(encoding="utf-8").splitlines()
        pairs += list(zip(s, t))
    return pairs


def synthetic(pairs: list[tuple[str, str]], n: int) -> Iterator[tuple[str, str]]:
    """``n`` pairs: the base pairs in order, then copies with `` <k>`` appended."""
    for i in range(n):
        k, j = divmod(i, len(pairs))
        s, t = pairs[j]
        yield (s, t) if k == 0 else (f"{s} {k}", f"{t} {k}")


def write_corpus(pairs: list[tuple[str, str]], n: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "done").is_file():
        return
    with open(out / "train.de", "w", encoding="utf-8") as fs, open(out / "train.en", "w", encoding="utf-8") as ft:
        for s, t in synthetic(pairs, n):
            fs.write(s + "\n")
            ft.write(t + "\n")
    (out / "done").write_text("")


def config(run_dir: Path, corpus: Path, data_dir: Path, steps: int) -> dict:
    return {
        "run_dir": str(run_dir),
        "data": {
            "src_lang": "de", "tgt_lang": "en",
            "train": {"src": str(corpus / "train.de"), "tgt": str(corpus / "train.en")},
            "valid": {"src": str(data_dir / "tatoeba/dev.de"), "tgt": str(data_dir / "tatoeba/dev.en")},
            "spm": {"vocab_size": 8000, "joint": True},
        },
        "model": {"preset": "small"},
        "train": {"max_steps": steps, "max_tokens": 4096, "threads": 2, "valid_every": 10_000,
                  "save_every": 10_000, "log_every": 10, "valid_bleu": False, "progress": "off"},
    }  # fmt: skip


def run_child(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """``(seconds, peak RSS bytes, exit status)`` of ``cmd``, its output into ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss * 1024, proc.returncode


def measure(size: int, pairs: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    import yaml

    corpus = args.out / f"corpus_{size}"
    t0 = time.perf_counter()
    write_corpus(pairs, size, corpus)
    build_s = time.perf_counter() - t0
    run_dir = args.out / f"run_{size}"
    cfg_path = args.out / f"scale_{size}.yaml"
    cfg_path.write_text(yaml.safe_dump(config(run_dir, corpus, args.data_dir, args.steps)))
    mt = [sys.executable, "-m", "mt.cli"]
    previous = args.previous.get(size, {})
    if args.train_only and previous:  # the prepared data of the earlier run, and its figures
        prep_s, prep_rss = previous["prepare_s"], previous["prepare_peak_rss_gib"] * 2**30
    else:
        prep_s, prep_rss, rc = run_child(mt + ["prepare", str(cfg_path), "--force"], args.out / f"prepare_{size}.log")
        if rc != 0:
            raise SystemExit(f"mt prepare failed for {size} pairs: see {args.out / f'prepare_{size}.log'}")
    for old in ("checkpoints", "model_best", "model_last", "metrics.jsonl"):  # a fresh training each time
        path = run_dir / old
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    train_s, train_rss, rc = run_child(mt + ["train", str(cfg_path)], args.out / f"train_{size}.log")
    if rc != 0:
        raise SystemExit(f"mt train failed for {size} pairs: see {args.out / f'train_{size}.log'}")
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    return {"pairs": size, "build_s": round(build_s, 1), "prepare_s": round(prep_s, 1),
            "prepare_peak_rss_gib": round(prep_rss / 2**30, 3), "train_s": round(train_s, 1),
            "train_peak_rss_gib": round(train_rss / 2**30, 3), "kept": manifest.get("counts", {}).get("train", {}).get("pairs")}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="185000,1000000,5000000", help="corpus sizes in pairs, comma-separated")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "scale")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MT_DATA_DIR", ROOT.parent / "shared" / "data")))
    ap.add_argument("--steps", type=int, default=30, help="training steps measured per corpus")
    ap.add_argument("--train-only", action="store_true",
                    help="measure training again on the data an earlier run in --out prepared (its prepare figures are kept)")
    args = ap.parse_args()
    previous = args.out / "scale.json"
    args.previous = {r["pairs"]: r for r in json.loads(previous.read_text())["rows"]} if previous.is_file() else {}
    sizes = sorted(int(s) for s in args.sizes.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = base_pairs(args.data_dir)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; base pairs: {len(pairs)}")
    rows = []
    for size in sizes:
        rows.append(measure(size, pairs, args))
        print(json.dumps(rows[-1]), flush=True)
    first = rows[0]
    print("\n| pairs | prepare s | s per 1M pairs | prepare peak RSS GiB | train peak RSS GiB | train RSS / smallest |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        per_m = r["prepare_s"] / (r["pairs"] / 1e6)
        print(f"| {r['pairs']:,} | {r['prepare_s']} | {per_m:.1f} | {r['prepare_peak_rss_gib']} | "
              f"{r['train_peak_rss_gib']} | {r['train_peak_rss_gib'] / first['train_peak_rss_gib']:.2f} |")
    (args.out / "scale.json").write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
