"""Corpora as memory-mapped integer arrays plus offsets.

A corpus ``prefix`` is two files:

* ``prefix.bin`` — all token ids back to back (``uint16`` when the vocabulary fits, else ``int32``);
* ``prefix.idx`` — a ``.npy`` int64 array of ``n + 1`` offsets into ``.bin``, followed by the dtype tag.

Reading memory-maps ``.bin``, so a 10M-pair corpus costs no Python lists and opens instantly.
Both files are written to temporaries and renamed, so an interrupted write never leaves a
corpus that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mt.fileio import atomic_write

_DTYPES = {"uint16": np.uint16, "int32": np.int32}


def write_indexed(prefix: str | Path, seqs: Iterable[Sequence[int]], vocab_size: int | None = None) -> int:
    """Write ``seqs`` (each a sequence of token ids) under ``prefix``; returns the count.

    ``vocab_size`` picks the dtype (``uint16`` if all ids fit); without it ``int32`` is used.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if vocab_size is not None and vocab_size <= 65536 else "int32"
    np_dtype = _DTYPES[dtype]
    bin_path, idx_path = prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")
    offsets = [0]
    # two files, renamed into place only when both are written (.bin first, then .idx); a
    # crash between the two renames over an older corpus would pair new and old, so stages
    # that must be crash-safe (mt prepare) write their corpora inside an atomic_dir
    with atomic_write(idx_path, "wb") as fi, atomic_write(bin_path, "wb") as f:
        chunk: list[np.ndarray] = []
        pending = 0
        for seq in seqs:
            arr = np.asarray(seq, dtype=np.int64)
            if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np_dtype).max):
                raise ValueError(f"{prefix}: token id out of range for {dtype}")
            chunk.append(arr.astype(np_dtype))
            offsets.append(offsets[-1] + arr.size)
            pending += arr.size
            if pending > 1 << 20:
                f.write(np.concatenate(chunk).tobytes())
                chunk, pending = [], 0
        if chunk:
            f.write(np.concatenate(chunk).tobytes())
        np.save(fi, np.asarray(offsets, dtype=np.int64))
        fi.write(json.dumps({"dtype": dtype}).encode())
    return len(offsets) - 1


class IndexedDataset:
    """Read-only view of a corpus written by :func:`write_indexed`.

    ``ds[i]`` is an ``int64`` array of token ids; ``ds.sizes`` the ``(n,)`` ``int32`` lengths
    (int32: a training process keeps every corpus's lengths in memory; tokens are memory-mapped).
    """

    def __init__(self, prefix: str | Path) -> None:
        prefix = Path(prefix)
        bin_path = prefix.with_name(prefix.name + ".bin")
        idx_path = prefix.with_name(prefix.name + ".idx")
        for p in (bin_path, idx_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: binarised corpus file missing (run `mt prepare`)")
        with open(idx_path, "rb") as f:
            self.offsets = np.load(f)
            dtype = json.loads(f.read().decode() or '{"dtype": "int32"}')["dtype"]
        self.dtype = _DTYPES[dtype]
        n_tokens = int(self.offsets[-1])
        expected = n_tokens * np.dtype(self.dtype).itemsize
        if bin_path.stat().st_size != expected:
            raise ValueError(
                f"{bin_path}: size {bin_path.stat().st_size} bytes, index expects {expected}; corpus is corrupt"
            )
        self.tokens = (
            np.memmap(bin_path, dtype=self.dtype, mode="r", shape=(n_tokens,))
            if n_tokens
            else np.zeros(0, dtype=self.dtype)
        )
        self.sizes = np.diff(self.offsets).astype(np.int32)
        self.prefix = prefix

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])
