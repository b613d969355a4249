"""Sharded, resumable generation of synthetic text over large monolingual files.

A monolingual file is first cleaned into ``mono.txt`` (:func:`clean_monolingual`: empty,
overlong and undecodable lines dropped and counted). Its lines are cut into shards of
``shard_size`` lines; shard ``k`` is translated on its own and written to
``shards/shard_<k>.txt`` (one output line per input line) through a temporary file and a
rename, so a shard file exists only when complete. A killed run therefore resumes at the
first missing shard, and no line is lost or written twice. Each shard is decoded with its own
seed (:func:`shard_seed`), and its batches depend only on its own lines, so the output does
not depend on where a run was interrupted or on how shards were spread over processes
(bit-identical for the same device type and thread count: floating-point sums differ across
those, and a sampled token can flip with them).

Spreading the work: shard ``k`` belongs to worker ``i`` of ``n`` when ``k % n == i``. Run::

    python -m mt.backtranslate.generate --model DIR --input mono.txt --out-dir OUT --shard 0/4
    torchrun --nproc_per_node 4 -m mt.backtranslate.generate --model DIR --input mono.txt --out-dir OUT

(under torchrun the shard is ``RANK/WORLD_SIZE`` and each process uses GPU ``LOCAL_RANK``).
Whichever worker finds every shard present concatenates them into ``synthetic.txt``. The
first worker records the generation settings in ``OUT/generation.json``; a worker with
different settings (or a different input) refuses to add shards to that directory. A killed
worker may leave a ``.shard_*.tmp<pid>`` file behind; it is never read (and not removed,
since on a shared directory it may belong to a live worker elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mt.config import DecodeOptions, bt_generation_default
from mt.fileio import atomic_write, atomic_write_json, atomic_write_text, count_lines, read_lines
from mt.fileio import sha256_file as _sha256
from mt.data.clean import side_length
from mt.data.languages import LengthUnit
from mt.data.sources import ReadStats, read_monolingual
from mt.decode.options import add_arguments, from_args

SHARDS_DIR = "shards"
SYNTHETIC = "synthetic.txt"
SETTINGS = "generation.json"


# --------------------------------------------------------------------------- small helpers


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected i/n like 0/4, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard: need 0 <= i < n, got {spec!r}")
    return i, n


def shard_seed(seed: int, shard: int) -> int:
    """A seed per shard: independent streams that do not depend on which process runs it."""
    return (seed * 1_000_003 + shard) % (2**63 - 1)


# --------------------------------------------------------------------------- monolingual input


@dataclass
class MonoStats:
    """Monolingual lines read and why some were dropped (counts add up to ``read``)."""

    read: int = 0
    kept: int = 0
    invalid_utf8: int = 0
    empty: int = 0
    too_long: int = 0
    over_max_lines: int = 0  # usable lines past backtranslate.max_mono_lines

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def clean_monolingual(src: Path, out: Path, max_tokens: float, max_lines: int = 0, unit: LengthUnit = "word") -> MonoStats:
    """Copy the usable lines of ``src`` to ``out`` (atomically), whitespace-stripped.

    Dropped: undecodable lines (invalid UTF-8), empty ones, ones longer than ``max_tokens``
    (whitespace tokens, or characters with ``unit="char"``: :func:`mt.data.clean.side_length`),
    and usable lines after the first ``max_lines`` (0 = no limit). The language is NOT
    checked: text in the wrong language is translated like any other.
    """
    stats = MonoStats()
    read_stats = ReadStats()
    with atomic_write(out, fsync=True) as f:
        for line in read_monolingual(src, invalid_utf8="drop", stats=read_stats):
            stats.read += 1
            # a stray CR or U+2028 would split the line in two when read back
            text = " ".join(line.split())
            if not text:
                stats.empty += 1
            elif side_length(text, unit) > max_tokens:
                stats.too_long += 1
            elif max_lines and stats.kept >= max_lines:
                stats.over_max_lines += 1
            else:
                stats.kept += 1
                f.write(text + "\n")
    stats.invalid_utf8 = read_stats.invalid_utf8
    stats.read += read_stats.invalid_utf8
    return stats


# --------------------------------------------------------------------------- shards


def shard_path(out_dir: Path, k: int) -> Path:
    return out_dir / SHARDS_DIR / f"shard_{k:06d}.txt"


def n_shards(n_lines: int, shard_size: int) -> int:
    return (n_lines + shard_size - 1) // shard_size


def missing_shards(out_dir: Path, n_lines: int, shard_size: int) -> list[int]:
    return [k for k in range(n_shards(n_lines, shard_size)) if not shard_path(out_dir, k).is_file()]


def _settings(model_dir: Path, input_path: Path, opts: Any, shard_size: int, n_lines: int) -> dict[str, Any]:
    """What determines the shards' content; stored once per output directory. Contents, not
    paths: workers on other machines may see the same files under other names."""
    return {
        "model_sha256": _sha256(model_dir / "model.safetensors"),
        "input_sha256": _sha256(input_path),
        "input_lines": n_lines,
        "shard_size": shard_size,
        # where it runs is per worker (cuda:0, cuda:1 ...); everything else must agree
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "device"},
    }


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in a new output directory, or refuse to mix in different ones."""
    path = out_dir / SETTINGS
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{out_dir}: holds shards generated with different settings ({', '.join(diff)}); "
                "use a new output directory or delete this one"
            )
    else:
        (out_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)


@dataclass
class GenerationResult:
    """What this call did: shards and sentences decoded now, and how fast."""

    shards_total: int = 0
    shards_done_before: int = 0
    shards_generated: int = 0
    sentences: int = 0
    seconds: float = 0.0

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sentences_per_s": round(self.sentences_per_s, 2)}


def generate_shards(
    translator: Any,
    input_path: Path,
    out_dir: Path,
    opts: Any,
    shard_size: int,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    on_shard: Optional[Callable[[int], None]] = None,
) -> GenerationResult:
    """Translate this worker's missing shards of ``input_path`` into ``out_dir/shards``.

    ``translator``: a :class:`mt.decode.translator.Translator`; ``opts``: its DecodeOptions
    (``opts.seed`` is the base seed, see :func:`shard_seed`). ``shard = (i, n)``: this worker
    does the shards ``k`` with ``k % n == i``. ``on_shard(k)`` is called after each write.
    """
    from tqdm import tqdm

    n_lines = count_lines(input_path)
    total = n_shards(n_lines, shard_size)
    mine = [k for k in range(total) if k % shard[1] == shard[0]]
    todo = set(k for k in mine if not shard_path(out_dir, k).is_file())
    result = GenerationResult(shards_total=total, shards_done_before=len(mine) - len(todo))
    todo_lines = sum(min(shard_size, n_lines - k * shard_size) for k in todo)
    bar = tqdm(total=todo_lines, unit=" sent", desc=f"generate {out_dir.name}", disable=not progress,
               mininterval=1.0, file=sys.stderr)  # fmt: skip
    t0 = time.perf_counter()
    lines = read_lines(input_path)
    for k in range(total):
        chunk = list(itertools.islice(lines, shard_size))  # one pass over the file
        if k not in todo:
            continue
        hyps = translator.translate_batch(chunk, opts.replace(seed=shard_seed(opts.seed, k)), progress=bar.update)
        # a generated line must stay one line, or every later pair would be misaligned
        out = ["".join(" " if c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" else c for c in h[0].text) for h in hyps]
        atomic_write_text(shard_path(out_dir, k), "".join(x + "\n" for x in out), fsync=True)
        result.shards_generated += 1
        result.sentences += len(chunk)
        if on_shard is not None:
            on_shard(k)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


def merge_shards(out_dir: Path, n_lines: int, shard_size: int) -> Optional[Path]:
    """Concatenate all shards into ``out_dir/synthetic.txt`` (atomically) once every shard
    exists; returns its path, or None while shards are missing. Checks each shard's line
    count, so a damaged shard cannot shift the alignment."""
    if missing_shards(out_dir, n_lines, shard_size):
        return None
    final = out_dir / SYNTHETIC
    with atomic_write(final, fsync=True) as f:
        for k in range(n_shards(n_lines, shard_size)):
            text = shard_path(out_dir, k).read_text(encoding="utf-8")
            want = min(shard_size, n_lines - k * shard_size)
            if text.count("\n") != want:
                raise ValueError(f"{shard_path(out_dir, k)}: {text.count(chr(10))} lines, expected {want}; delete it and resume")
            f.write(text)
    return final


def run_generation(
    model_dir: Path,
    input_path: Path,
    out_dir: Path,
    opts: DecodeOptions,
    shard_size: int,
    shard: tuple[int, int] = (0, 1),
    threads: Optional[int] = None,
    progress: bool = True,
) -> tuple[GenerationResult, Optional[Path]]:
    """Load ``model_dir`` (as ``opts``'s model group says), generate this worker's shards,
    merge when complete."""
    from mt.decode.translator import Translator, announce_precision

    out_dir.mkdir(parents=True, exist_ok=True)
    n_lines = count_lines(input_path)
    check_settings(out_dir, _settings(model_dir, input_path, opts, shard_size, n_lines))
    translator = Translator.load(model_dir, opts, threads=threads)
    announce_precision("generation", translator)
    result = generate_shards(translator, input_path, out_dir, opts, shard_size, shard, progress)
    return result, merge_shards(out_dir, n_lines, shard_size)


def _child_init(parent_pid: int, unbound: list[str]) -> None:
    from mt.runtime import die_with_parent, unbound_kernel_caches

    die_with_parent(parent_pid)
    unbound_kernel_caches(unbound)


def _generate_in_child(*args: Any, **kwargs: Any) -> tuple[GenerationResult, Optional[Path], Optional[float]]:
    from mt.runtime import peak_rss_mib

    result, merged = run_generation(*args, **kwargs)
    return result, merged, peak_rss_mib()


def run_generation_in_child(
    model_dir: Path,
    input_path: Path,
    out_dir: Path,
    opts: DecodeOptions,
    shard_size: int,
    threads: Optional[int] = None,
    progress: bool = True,
) -> tuple[GenerationResult, Optional[Path], Optional[float]]:
    """:func:`run_generation` in a fresh child process, for a process that also trains: the
    child decodes with the libraries' kernel caches on (the trainer turned them off for this
    process; :func:`mt.runtime.caches_bounded_here`), and its memory goes back to the system
    when it exits. Returns the result, the merged file and the child's peak RSS (MiB, None
    off Linux). The child dies with this process, so a killed job leaves no writer behind."""
    import multiprocessing

    from mt.runtime import caches_bounded_here

    ctx = multiprocessing.get_context("spawn")  # a fork would inherit this process's kernels and heap
    with ctx.Pool(1, initializer=_child_init, initargs=(os.getpid(), caches_bounded_here())) as pool:
        return pool.apply(_generate_in_child, (model_dir, input_path, out_dir, opts, shard_size),
                          {"threads": threads, "progress": progress})  # fmt: skip


# --------------------------------------------------------------------------- CLI


def _worker_from_env(spec: Optional[str], device: str) -> tuple[tuple[int, int], str]:
    """``--shard`` if given, else torchrun's RANK/WORLD_SIZE (one GPU per local rank)."""
    if spec:
        return parse_shard(spec), device
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and device == "auto":
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return (rank, world), device


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mt.backtranslate.generate",
        description="Translate a (cleaned) monolingual file in resumable shards; see the module docstring.",
    )
    p.add_argument("--model", required=True, help="model directory (the reverse model for back-translation)")
    p.add_argument("--input", required=True, help="one sentence per line (e.g. the pipeline's mono.txt)")
    p.add_argument("--out-dir", required=True, help="shards/, generation.json and synthetic.txt go here")
    p.add_argument("--shard", default=None, metavar="I/N", help="do shards k with k %% N == I (default: torchrun rank/world size, else 0/1)")
    p.add_argument("--shard-size", type=int, default=5000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    add_arguments(p, defaults=bt_generation_default())
    args = p.parse_args(argv)
    if args.shard_size < 1:
        p.error(f"argument --shard-size: must be >= 1, got {args.shard_size}")
    opts = from_args(args, bt_generation_default(), n_best=1)  # one output line per input line
    shard, device = _worker_from_env(args.shard, opts.device)
    result, merged = run_generation(
        Path(args.model), Path(args.input), Path(args.out_dir), opts.replace(device=device), args.shard_size,
        shard, args.threads, progress=not args.no_progress,
    )  # fmt: skip
    print(json.dumps({"shard": f"{shard[0]}/{shard[1]}", **result.as_dict(), "merged": str(merged) if merged else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
