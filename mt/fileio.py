"""File helpers every layer shares: content hashes and atomic directory replacement."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def chmod_like_mkdir(path: Path) -> None:
    """mkdtemp makes 0700 directories; give the result the permissions mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` at ``out``; the old directory (if any) is removed after, so a
    crash at any point leaves either the old or the new directory complete."""
    chmod_like_mkdir(tmp)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
