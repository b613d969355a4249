"""File helpers every layer shares: content hashes, atomic writes and a line reader.

Every file or directory that mt writes for later stages goes through a temporary sibling
and a rename, so a crash or an exception leaves either the old version or the new one,
never a half-written one that looks complete:

* :func:`atomic_write` (and :func:`atomic_write_text` / :func:`atomic_write_bytes`): one file;
* :func:`atomic_dir`: a directory built in a temporary sibling, then :func:`replace_dir`;
* :func:`read_json_object`: a JSON object file, every failure named by file;
* :func:`atomic_write_json`: a JSON manifest or report;
* :func:`count_lines`: the lines of a file, without decoding it;
* :func:`read_lines`: text files line by line (``"-"`` = stdin), invalid UTF-8 named by file
  and line (:class:`FileFormatError`);
* :func:`exclusive_dir`: one process at a time works in a directory (a second one stops with
  :class:`DirectoryBusyError` instead of interleaving its writes); :func:`dir_in_use` asks.

This module imports nothing from mt but :mod:`mt.errors`, so any layer can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from mt.errors import MissingFileError, UserError


class DirectoryBusyError(UserError):
    """Another process holds the directory's lock (:func:`exclusive_dir`); the message names
    the directory and that process."""


class FileFormatError(UserError, ValueError):
    """A file mt reads is not in the expected format (e.g. not UTF-8); the message names the
    file and line. A ``ValueError`` too, as the ``UnicodeDecodeError`` it replaces was."""


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


# --------------------------------------------------------------------------- atomic files


def _open_temp(path: Path) -> tuple[Path, int]:
    """Create ``.<name>.tmp<pid>.<random>`` next to ``path`` (exclusively, so two writers never
    share one) with mode 0666 & ~umask, the permissions ``open(path, "w")`` would give."""
    while True:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{secrets.token_hex(3)}")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


@contextmanager
def atomic_write(
    path: str | Path, mode: str = "w", *, encoding: str = "utf-8", newline: str = "\n", fsync: bool = False
) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary sibling file and ``os.replace``::

        with atomic_write(out) as f:          # text ("w", UTF-8, "\n" newlines)
            f.write(...)
        with atomic_write(out, "wb") as f:    # binary

    On a normal exit the temporary file replaces ``path`` (readers see the old file or all of
    the new one); if the body raises, it is removed and ``path`` is left as it was. The parent
    directory must exist. ``fsync=True`` flushes the data to disk before the rename (for files
    that must survive a power cut, not just a killed process).
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    binary = "b" in mode
    tmp, fd = _open_temp(path)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else newline) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8, newlines untranslated) to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, fsync=fsync) as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented UTF-8 JSON, atomically and synced (a manifest or report others read)."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", fsync=True)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure to ``path`` atomically (its format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def recall_json_entry(path: Optional[Path], key: str) -> Any:
    """``key`` of the JSON object in ``path``; None where the file, the key or a readable
    object is missing (a probe then measures again)."""
    if path is None:
        return None
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entries.get(key) if isinstance(entries, dict) else None


def remember_json_entry(path: Optional[Path], key: str, entry: Any) -> None:
    """Set ``key`` of the JSON object in ``path`` (created if absent, replaced if unreadable),
    atomically; best effort: a probe's memory must never fail the run (a read-only home:
    the probe just runs again next time). ``path`` None: nothing is remembered."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        entries[key] = entry
        atomic_write_text(path, json.dumps(entries, indent=1) + "\n")
    except OSError:
        pass


def _merge_dir(tmp: Path, out: Path) -> None:
    """Move the files of ``tmp`` into ``out`` one by one (each by a rename), keeping the files
    of ``out`` that ``tmp`` lacks; one rename of the whole directory if ``out`` is new."""
    if not out.exists():
        chmod_like_mkdir(tmp)
        os.replace(tmp, out)  # a directory rename: fails rather than replace a non-empty ``out``
        return
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            dest = out / path.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)


class atomic_dir:
    """Build a directory in a temporary sibling that replaces ``final`` on success::

        with atomic_dir(out) as tmp:
            (tmp / "a.json").write_text(...)

    On a normal exit ``tmp`` becomes ``final`` through :func:`replace_dir` (a crash at any
    point leaves the old or the new directory complete); if the body raises (or is
    interrupted) ``tmp`` is deleted and ``final`` is untouched. The temporary directory,
    ``.<name>.tmp-<random>`` next to ``final``, is created by the call itself, before the
    ``with`` statement, so that a caller can report an unwritable location on its own::

        try:
            build = atomic_dir(out)
        except OSError as e:
            raise MyError(f"cannot write {out}: {e.strerror}")
        with build as tmp:
            ...

    ``merge=True`` keeps the files of an existing ``final`` that the new tree lacks: the new
    files are moved in one by one (each replacement atomic, the set of them not), and
    ``final`` is created by one rename when it does not exist yet.
    """

    def __init__(self, final: str | Path, *, merge: bool = False) -> None:
        self.final = Path(final)
        self.merge = merge
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                if self.merge:
                    _merge_dir(self.tmp, self.final)
                else:
                    replace_dir(self.tmp, self.final)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)  # after a success: gone, or emptied by a merge


@contextmanager
def exclusive_dir(path: str | Path, what: str, lock: str = ".lock") -> Iterator[None]:
    """Hold ``path/lock`` for the block: a second process entering it for the same directory
    raises :class:`DirectoryBusyError` naming ``what`` and the holder's pid, instead of both
    writing checkpoints or manifests into one run. Nested jobs that share a directory (a
    recipe, its back-translation, a training in the same ``run_dir``) each use their own
    ``lock`` name. An advisory ``flock``: the kernel drops it when the
    holder exits or is killed, so no stale lock survives a crash. Where ``fcntl`` is missing
    (Windows) the block runs unguarded."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux / macOS
        yield
        return
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise DirectoryBusyError(f"{path}: another process (pid {holder}) is already {what} here; "
                                     "wait for it, or choose another directory") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
        if created and os.listdir(path) == [lock]:  # the block wrote nothing (e.g. a config error): leave no trace
            (path / lock).unlink(missing_ok=True)
            path.rmdir()


def dir_in_use(path: str | Path, lock: str = ".lock") -> bool:
    """Whether a process holds ``path/lock`` (:func:`exclusive_dir`) at this moment."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux / macOS
        return False
    try:
        fd = os.open(Path(path) / lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released by the close below
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading


def _strip_newline(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-2] if line.endswith("\r\n") else line[:-1]
    return line


def count_lines(path: str | Path) -> int:
    """The lines :func:`read_lines` yields for ``path`` (a last line without a newline
    counts), counted in 1 MiB blocks without decoding."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def read_lines(path: str | Path) -> Iterator[str]:
    """The lines of the UTF-8 text file ``path`` (``"-"``: standard input), one at a time,
    without their ``"\n"`` or ``"\r\n"`` ending.

    Lines end at ``"\n"`` only, as with :mod:`mt.data.sources`: a lone ``"\r"`` or a U+2028
    inside a line stays in it, so the line count is the number of newlines (plus a last
    unterminated line) and aligned files stay aligned. Invalid UTF-8 raises
    :class:`FileFormatError` naming the file and the line number; a missing file raises
    ``FileNotFoundError``.
    """
    if str(path) == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # sys.stdin replaced by a text stream (e.g. io.StringIO in tests)
            yield from (_strip_newline(line) for line in sys.stdin)
            return
        yield from _decode_lines(stream, "<stdin>")
        return
    with open(path, "rb") as f:
        yield from _decode_lines(f, str(path))


def _decode_lines(stream: IO[bytes], name: str) -> Iterator[str]:
    for lineno, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FileFormatError(f"{name}:{lineno}: invalid UTF-8 at byte {e.start} of the line") from None
        yield _strip_newline(line)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``. Missing: :class:`MissingFileError`; a directory, not UTF-8,
    not JSON or not an object: :class:`FileFormatError`; each message names the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: not found") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise FileFormatError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw
