"""Dataset download against a local HTTP server (never the internet): layout, checksums, atomicity."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

from mt.data import DataError
from mt.data.fetch import (
    MULTI30K_SHA256,
    all_downloads,
    fetch_dataset,
    is_complete,
    multi30k_sources,
    resolve_data_dir,
    sha256_file,
)

REPO = Path(__file__).resolve().parents[1]


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(base_url, root)``: a 127.0.0.1 HTTP server serving files from ``root``."""
    root = tmp_path / "mirror"
    root.mkdir()
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def fake_mirror(root: Path) -> dict[str, bytes]:
    """Write small gzipped files for every download; returns the expected installed bytes."""
    content: dict[str, bytes] = {}
    for rel in all_downloads():
        name = rel.rsplit("/", 1)[1][: -len(".gz")]
        lines = [f"{name} line {i}" for i in range(3)]
        if "task2" in rel:
            lines = [f"  mono {name} {i}  " for i in range(3)]
            if name.endswith(".1.en"):
                lines.append("A HELD-OUT   sentence")  # equals a test_2018 line after lowercasing
        if rel.endswith("test_2018_flickr.en.gz"):
            lines.append("a held-out sentence")
        data = "".join(line + "\n" for line in lines).encode()
        content[rel] = data
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(gzip.compress(data))
    expected: dict[str, bytes] = {}
    for out, srcs in multi30k_sources().items():
        if out.startswith("mono/"):
            lines = [line.strip() for s in srcs for line in content[s].decode().splitlines()]
            expected[out] = "".join(line + "\n" for line in lines if "held-out" not in line.lower()).encode()
        else:
            expected[out] = content[srcs[0]]
    return expected


def checksums(expected: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in expected.items()}


def test_fetch_builds_layout_and_skips_when_present(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = server
    expected = fake_mirror(root)
    data_dir = tmp_path / "data"
    out = fetch_dataset("multi30k", data_dir=data_dir, base_url=base_url, checksums=checksums(expected), progress=False)
    assert out == data_dir / "multi30k"
    for name, data in expected.items():
        assert (out / name).read_bytes() == data, name
    assert b"held-out" not in (out / "mono/mono.en").read_bytes().lower()
    assert (out / "mono/mono.en").read_bytes().startswith(b"mono train.1.en 0\n")  # stripped
    assert len(_Handler.requests) == len(all_downloads())
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".multi30k.tmp")]
    # second call: already complete, no request at all
    fetch_dataset("multi30k", data_dir=data_dir, base_url=base_url, checksums=checksums(expected), progress=False)
    assert len(_Handler.requests) == len(all_downloads())


def test_corrupt_download_raises_and_installs_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = server
    expected = fake_mirror(root)
    good = checksums(expected)
    (root / "data/task1/raw/val.de.gz").write_bytes(gzip.compress(b"tampered\n"))
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=r"checksum mismatch.*\n.*val\.de: expected sha256"):
        fetch_dataset("multi30k", data_dir=data_dir, base_url=base_url, checksums=good, progress=False)
    assert not (data_dir / "multi30k").exists()
    assert not is_complete(data_dir / "multi30k", good)
    assert sorted(p.name for p in data_dir.iterdir()) == [".downloads"]  # no temp build left
    assert not (data_dir / ".downloads/multi30k/data/task1/raw/val.de.gz").exists()  # refetched next time
    # once the mirror is fixed, only the bad file is downloaded again
    fake_mirror(root)
    n = len(_Handler.requests)
    fetch_dataset("multi30k", data_dir=data_dir, base_url=base_url, checksums=good, progress=False)
    assert len(_Handler.requests) == n + 1 and is_complete(data_dir / "multi30k", good)


def test_not_gzip_and_http_errors(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = server
    expected = fake_mirror(root)
    (root / "data/task1/raw/train.cs.gz").write_bytes(b"<html>not gzip</html>")
    with pytest.raises(DataError, match=r"train\.cs\.gz: not a valid gzip file"):
        fetch_dataset("multi30k", data_dir=tmp_path / "a", base_url=base_url, checksums=checksums(expected), progress=False)
    (root / "data/task1/raw/train.cs.gz").unlink()
    with pytest.raises(DataError, match=r"download failed: .*/data/task1/raw/train\.cs\.gz: HTTP 404"):
        fetch_dataset("multi30k", data_dir=tmp_path / "b", base_url=base_url, checksums=checksums(expected), progress=False)
    assert not (tmp_path / "b" / "multi30k").exists()


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MT_DATA_DIR", raising=False)
    assert resolve_data_dir() == tmp_path / "home/.cache/mt/data"
    monkeypatch.setenv("MT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(configured=str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert resolve_data_dir(tmp_path / "arg", configured=str(tmp_path / "cfg")) == tmp_path / "arg"


def test_present_files_skip_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MT_DATA_DIR holding the files, nothing is fetched (the URL would not even resolve)."""
    for name in MULTI30K_SHA256:
        (tmp_path / "multi30k" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "multi30k" / name).write_text("x\n")
    monkeypatch.setenv("MT_DATA_DIR", str(tmp_path))
    assert fetch_dataset("multi30k", base_url="http://127.0.0.1:9/nothing-here", progress=False) == tmp_path / "multi30k"


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset"):
        fetch_dataset("wmt99")


def test_pinned_checksums_match_reference_copy() -> None:
    root = Path(os.environ.get("MT_DATA_DIR") or REPO.parent / "shared" / "data") / "multi30k"
    if not (root / "train.de").is_file():
        pytest.skip(f"Multi30k not found at {root} (set MT_DATA_DIR to the folder holding multi30k/)")
    assert is_complete(root)
    for name, want in MULTI30K_SHA256.items():
        assert sha256_file(root / name) == want, name
