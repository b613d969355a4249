"""Download public datasets into the data directory, verified and written atomically.

``mt data fetch multi30k`` downloads the raw gzipped files of github.com/multi30k/dataset at
a pinned commit and builds this layout under ``<data_dir>/multi30k/``::

    {train,val,test2016}.{de,en,fr,cs}      Task 1, gunzipped, byte-identical to the originals
    mono/mono.{en,de}                       Task 2 train.1..5 descriptions: concatenated, stripped,
                                            lines equal (lowercased, whitespace-collapsed) to a
                                            Task 1 val/test sentence removed (no eval leakage)

Every final file's sha256 is pinned below; a mismatch raises and installs nothing. The
build happens in a temporary directory that is renamed into place, so an interrupted or
corrupt fetch never leaves a directory that looks complete. If the files are already
there (e.g. ``MT_DATA_DIR`` points at a shared copy) nothing is downloaded.

Data directory: explicit argument > ``data.data_dir`` > ``$MT_DATA_DIR`` > ``~/.cache/mt/data``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Optional

from mt.config import resolve_path
from mt.data import DataError
from mt.fileio import atomic_dir, atomic_write, sha256_file

MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
MULTI30K_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{MULTI30K_COMMIT}"

_LANGS = ("de", "en", "fr", "cs")
_TASK1_SPLITS = {"train": "train", "val": "val", "test2016": "test_2016_flickr"}
# Task 1 test sets not installed (report on test2016 only) but needed to keep them out of mono
_HELD_OUT_ONLY = ("test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")
_MONO_LANGS = ("en", "de")

# sha256 of the installed files (computed from the reference copy described in SOURCE.md)
MULTI30K_SHA256: dict[str, str] = {
    "test2016.cs": "45adb85f688de8407fddcbe1b36dca15d12aab868149b337e2576f2d6d2ff8d8",
    "test2016.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test2016.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "test2016.fr": "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
    "train.cs": "2be68b38c8d586ff4f54eb13cc6e1baaaa053695b3f070d3038303a47f2268da",
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "train.fr": "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    "val.cs": "d53827e469b0a1ca8d57e9e26b2b64c4bc4b33f5479c7b03ae87ae5c882c3e33",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "val.fr": "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
    "mono/mono.de": "cea0f27014ce8f8ba2a001f5ee1deeec5f8de1a8721e021c04ee3afb391efaf4",
    "mono/mono.en": "b0561aadaee6232389050c81f8129d6086d3216b6c534e50143f409c58ff11a7",
}

DATASETS = ("multi30k",)


# --------------------------------------------------------------------------- locations


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "mt" / "data"


def resolve_data_dir(explicit: Optional[str | Path] = None, configured: Optional[str] = None) -> Path:
    """explicit (``--data-dir``) > configured (``data.data_dir``) > ``$MT_DATA_DIR`` > the cache."""
    for candidate in (explicit, configured, os.environ.get("MT_DATA_DIR") or None):
        if candidate:
            return resolve_path(str(candidate))
    return default_data_dir()


# --------------------------------------------------------------------------- multi30k layout


def multi30k_sources() -> dict[str, list[str]]:
    """Installed file → repository paths of the gzipped files it is built from (in order)."""
    out: dict[str, list[str]] = {}
    for name, split in _TASK1_SPLITS.items():
        for lang in _LANGS:
            out[f"{name}.{lang}"] = [f"data/task1/raw/{split}.{lang}.gz"]
    for lang in _MONO_LANGS:
        out[f"mono/mono.{lang}"] = [f"data/task2/raw/train.{k}.{lang}.gz" for k in range(1, 6)]
    return out


def _held_out_paths(lang: str) -> list[str]:
    """Task 1 evaluation files whose sentences must not appear in mono.<lang>."""
    splits = ["val", "test_2016_flickr", *_HELD_OUT_ONLY]
    return [f"data/task1/raw/{s}.{lang}.gz" for s in splits]


def all_downloads() -> list[str]:
    paths = [p for srcs in multi30k_sources().values() for p in srcs]
    paths += [p for lang in _MONO_LANGS for p in _held_out_paths(lang)]
    return sorted(set(paths))


def is_complete(dataset_dir: Path, checksums: Optional[dict[str, str]] = None) -> bool:
    """All installed files present (names only: hashing on every run would cost time)."""
    names = (checksums or MULTI30K_SHA256).keys()
    return all((dataset_dir / name).is_file() for name in names)


def mono_key(line: str) -> str:
    """The form in which mono lines are compared with evaluation sentences."""
    return " ".join(line.lower().split())


# --------------------------------------------------------------------------- download


def download(url: str, dest: Path, retries: int = 3, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``dest`` (temp file + rename); HTTP errors name the URL."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_write(dest, "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
            return dest
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == retries:  # 404 etc. will not get better
                raise DataError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            if attempt == retries:
                raise DataError(f"download failed: {url}: {getattr(e, 'reason', e)}") from None
        time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def _gunzip_lines(path: Path) -> Iterable[bytes]:
    try:
        with gzip.open(path, "rb") as f:
            yield from f
    except (OSError, EOFError, zlib.error) as e:
        path.unlink(missing_ok=True)  # a corrupt download must be fetched again
        raise DataError(f"{path}: not a valid gzip file ({e}); removed, run the fetch again") from None


def _gunzip_to(sources: list[Path], dest: Path) -> None:
    with open(dest, "wb") as out:
        for src in sources:
            for line in _gunzip_lines(src):
                out.write(line)


def _build_mono(train_parts: list[Path], held_out: list[Path], dest: Path) -> tuple[int, int]:
    """Concatenate, strip, and drop lines matching a held-out sentence; returns (read, written)."""
    banned = {mono_key(line.decode("utf-8")) for path in held_out for line in _gunzip_lines(path)}
    read = written = 0
    with open(dest, "wb") as out:
        for part in train_parts:
            for raw in _gunzip_lines(part):
                read += 1
                line = raw.decode("utf-8").strip()
                if mono_key(line) in banned:
                    continue
                out.write(line.encode("utf-8") + b"\n")
                written += 1
    return read, written


def fetch_dataset(
    name: str,
    data_dir: Optional[str | Path] = None,
    base_url: Optional[str] = None,
    checksums: Optional[dict[str, str]] = None,
    progress: bool = True,
) -> Path:
    """Make ``<data_dir>/<name>`` hold the dataset; returns that directory.

    Nothing is downloaded when the files are already there. ``base_url`` replaces the
    pinned GitHub URL (a mirror, or a local server in tests); ``checksums`` replaces the
    pinned sha256 table (same keys: installed paths).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    root = resolve_data_dir(data_dir)
    target = root / name
    expected = MULTI30K_SHA256 if checksums is None else checksums
    if is_complete(target, expected):
        return target
    base = (base_url or MULTI30K_URL).rstrip("/")
    try:
        root.mkdir(parents=True, exist_ok=True)
        cache = root / ".downloads" / name
        cache.mkdir(parents=True, exist_ok=True)
        # merge: an existing ``target`` keeps files of its own (it may be a shared directory
        # with more in it); only the verified files are moved in, one rename each
        build = atomic_dir(target, merge=True)
    except OSError as e:
        raise DataError(f"cannot write to data directory {root}: {e.strerror or e}") from None

    with build as tmp:
        from tqdm import tqdm

        local: dict[str, Path] = {}
        for rel in tqdm(all_downloads(), desc=f"fetch {name}", unit="file", disable=not progress):
            dest = cache / rel
            if not dest.is_file():
                download(f"{base}/{rel}", dest)
            local[rel] = dest
        (tmp / "mono").mkdir()
        for out_name, srcs in multi30k_sources().items():
            if out_name.startswith("mono/"):
                lang = out_name.rsplit(".", 1)[1]
                _build_mono([local[s] for s in srcs], [local[s] for s in _held_out_paths(lang)], tmp / out_name)
            else:
                _gunzip_to([local[s] for s in srcs], tmp / out_name)
        bad = []
        for out_name, want in expected.items():
            got = sha256_file(tmp / out_name) if (tmp / out_name).is_file() else "missing"
            if got != want:
                bad.append(f"{out_name}: expected sha256 {want}, got {got}")
                for s in multi30k_sources().get(out_name, []):  # re-download next time
                    local.get(s, cache / s).unlink(missing_ok=True)
        if bad:
            raise DataError(f"checksum mismatch for {name} from {base} (nothing installed):\n  " + "\n  ".join(bad))
    return target


