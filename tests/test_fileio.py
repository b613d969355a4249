"""mt.fileio: atomic file and directory writes, and the line reader."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import pytest

from mt.errors import UserError
from mt.fileio import (
    FileFormatError,
    atomic_dir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    read_lines,
)


class Boom(Exception):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- atomic_write


def test_atomic_write_replaces_on_success(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with atomic_write(path) as f:
        f.write("new\nlines\n")
        assert path.read_text() == "old\n"  # nothing visible before the end
    assert path.read_text() == "new\nlines\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # as open(path, "w") would


def test_atomic_write_keeps_old_file_when_body_raises(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(Boom):
        with atomic_write(path, "wb") as f:
            f.write(b"partial")
            raise Boom
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(Boom):  # no old file: none appears
        with atomic_write(tmp_path / "new.txt") as f:
            raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_modes_and_conveniences(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.bin", "wb", fsync=True) as f:
        f.write(b"\x00\xff\r\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff\r\n"
    atomic_write_text(tmp_path / "t.txt", "é\nx\r\n")  # UTF-8, newlines written as given
    assert (tmp_path / "t.txt").read_bytes() == "é\nx\r\n".encode()
    atomic_write_bytes(tmp_path / "t.txt", b"bytes")
    assert (tmp_path / "t.txt").read_bytes() == b"bytes"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(FileNotFoundError):  # the parent must exist, as with open()
        with atomic_write(tmp_path / "missing" / "x"):
            pass


def test_nested_atomic_writes_replace_both_or_neither(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(Boom):
        with atomic_write(a) as fa, atomic_write(b) as fb:
            fa.write("1")
            fb.write("2")
            raise Boom
    assert list(tmp_path.iterdir()) == []
    with atomic_write(a) as fa, atomic_write(b) as fb:
        fa.write("1")
        fb.write("2")
    assert (a.read_text(), b.read_text()) == ("1", "2")


# --------------------------------------------------------------------------- atomic_dir


def test_atomic_dir_replaces_on_success(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "model"
    with atomic_dir(out) as tmp:  # parents are created
        assert tmp.parent == out.parent and tmp.name.startswith(".model.tmp")
        (tmp / "a.json").write_text("1")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["a.json"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()  # as mkdir would, not mkdtemp's 0700
    with atomic_dir(out) as tmp:
        (tmp / "b.json").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b.json"]  # replaced, not merged
    assert [p.name for p in out.parent.iterdir()] == ["model"]


def test_atomic_dir_keeps_old_directory_when_body_raises(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "a.json").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(out) as tmp:
            (tmp / "a.json").write_text("new")
            raise Boom
    assert (out / "a.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_creates_its_temporary_before_the_with(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    with pytest.raises(OSError):
        atomic_dir(tmp_path / "blocker" / "out")
    build = atomic_dir(tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    with build as tmp:
        (tmp / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "out"]


def test_atomic_dir_merge_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "data"
    with atomic_dir(out, merge=True) as tmp:  # new: one rename
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a").write_text("a1")
    assert (out / "sub" / "a").read_text() == "a1"
    (out / "mine").write_text("kept")
    with atomic_dir(out, merge=True) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a").write_text("a2")
        (tmp / "b").write_text("b")
    assert {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()} == {
        "sub/a": "a2", "b": "b", "mine": "kept"
    }
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


# --------------------------------------------------------------------------- read_lines


def test_read_lines_strips_line_endings_only(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes("a\nb c \r\n\ncr\rinside\u2028x\nlast".encode())
    assert list(read_lines(path)) == ["a", "b c ", "", "cr\rinside\u2028x", "last"]
    path.write_bytes(b"")
    assert list(read_lines(str(path))) == []
    path.write_bytes(b"one\n")
    assert list(read_lines(path)) == ["one"]
    with pytest.raises(FileNotFoundError):
        list(read_lines(tmp_path / "missing.txt"))


def test_read_lines_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.de"
    path.write_bytes(b"fine\nalso fine\nbro\xffken\n")
    lines = read_lines(path)
    assert next(lines) == "fine"
    with pytest.raises(FileFormatError, match=r"bad\.de:3: invalid UTF-8 at byte 3") as e:
        list(lines)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_read_lines_dash_is_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x\r\ny\n")))
    assert list(read_lines("-")) == ["x", "y"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\n\xc3(\n")))
    with pytest.raises(FileFormatError, match=r"<stdin>:2: invalid UTF-8"):
        list(read_lines("-"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("p\nq\r\n"))  # a text stream without .buffer
    assert list(read_lines("-")) == ["p", "q"]


def test_count_lines_counts_what_read_lines_yields(tmp_path):
    from mt.fileio import count_lines, read_lines

    for content in (b"", b"a\n", b"a\nb", b"a\nb\n", b"\n\n", b"x" * (1 << 20) + b"\ny"):
        path = tmp_path / "f.txt"
        path.write_bytes(content)
        assert count_lines(path) == len(list(read_lines(path))), content[:10]


_HOLD = """
import sys, time
from mt.fileio import exclusive_dir
with exclusive_dir(sys.argv[1], "training"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_exclusive_dir_refuses_a_second_process_and_frees_on_kill(tmp_path: Path) -> None:
    """A second holder (another process, or another descriptor in this one) gets one clear
    error naming the directory, what the holder does and its pid; killing the holder (no
    clean exit) frees the directory at once."""
    import signal
    import subprocess

    from mt.fileio import DirectoryBusyError, dir_in_use, exclusive_dir

    run = tmp_path / "run"
    assert not dir_in_use(run)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert dir_in_use(run) and not dir_in_use(run, lock=".recipe.lock")
        with pytest.raises(DirectoryBusyError, match=rf"{run}: another process \(pid {holder.pid}\) is already training here"):
            with exclusive_dir(run, "training"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not dir_in_use(run)
    with exclusive_dir(run, "training"):
        with pytest.raises(DirectoryBusyError, match=rf"pid {os.getpid()}"):
            with exclusive_dir(run, "training"):
                pass
    with exclusive_dir(run, "training"):  # released on leaving the block
        pass


def test_exclusive_dir_leaves_no_trace_when_the_block_wrote_nothing(tmp_path: Path) -> None:
    """A job that stops before writing (a config error) leaves no empty run directory behind;
    one that wrote keeps its directory; an existing directory is never removed."""
    from mt.fileio import exclusive_dir

    with pytest.raises(RuntimeError):
        with exclusive_dir(tmp_path / "a" / "run", "training"):
            raise RuntimeError("config error")
    assert not (tmp_path / "a" / "run").exists()
    with exclusive_dir(tmp_path / "b", "training"):
        (tmp_path / "b" / "x").write_text("1")
    assert (tmp_path / "b" / "x").is_file()
    (tmp_path / "c").mkdir()
    with exclusive_dir(tmp_path / "c", "training"):
        pass
    assert (tmp_path / "c").is_dir()
