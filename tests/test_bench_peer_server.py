"""bench/peer_server.py's pieces that decide its figures: the paragraph load, the peer's reply
check, and the ratios (the servers themselves need OpenNMT-py, which CI does not install)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _bench_support import bench_script


@pytest.fixture(scope="module")
def bench():
    return bench_script("peer_server")


def test_paragraph_requests_are_runs_of_consecutive_sentences(bench) -> None:
    sentences = [f"s{i}." for i in range(10)]
    requests = bench.paragraphs(sentences, 50, seed=3)
    assert requests == bench.paragraphs(sentences, 50, seed=3) and len(requests) == 50
    for request in requests:
        assert 1 <= len(request) <= 3
        for p in request:
            assert 2 <= len(p) <= 5
            first = sentences.index(p[0])
            assert p == [sentences[(first + i) % 10] for i in range(len(p))]
    # mt gets one text with its paragraphs; the peer the same sentences as a list
    request = requests[0]
    text = json.loads(bench.mt_body(request))["texts"]
    assert text == ["\n\n".join(" ".join(p) for p in request)]
    assert [x["src"] for x in json.loads(bench.peer_body(request))] == [s for p in request for s in p]


def test_libretranslate_gets_mt_s_text_and_its_reply_is_checked(bench) -> None:
    request = [["a.", "b."], ["c."]]
    body = json.loads(bench.lt_body(request, "de", "en"))
    assert body == {"q": json.loads(bench.mt_body(request))["texts"][0], "source": "de", "target": "en", "format": "text"}
    protocol = bench.libretranslate_protocol("de", "en")
    assert json.loads(protocol.body(request)) == body and protocol.first({"translatedText": "x"}) == "x"
    assert protocol.check(b"", json.dumps({"translatedText": "A. B.\n\nC."}).encode()) == 0  # batches not reported
    for bad in ({"error": "Invalid request"}, {"translatedText": ["x"]}, ["x"]):
        with pytest.raises(ValueError, match="wrong reply"):
            protocol.check(b"", json.dumps(bad).encode())
    assert bench._batch(0) == "–" and bench._batch(16.06) == "16.1"


def test_a_peer_that_is_not_installed_is_named_by_its_flag(bench, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "in.txt").write_text("ein Satz.\n")
    base = ["--model", str(tmp_path), "--input", str(tmp_path / "in.txt"), "--onmt-path", str(tmp_path / "no"),
            "--lt-venv", str(tmp_path / "nolt")]  # fmt: skip
    assert bench.missing_peer(bench.parse_args(base + ["--peers", "onmt"])).startswith("--onmt-path ")
    assert bench.missing_peer(bench.parse_args(base + ["--peers", "libretranslate"])).startswith("--lt-venv ")
    (tmp_path / "nolt" / "bin").mkdir(parents=True)
    (tmp_path / "nolt" / "bin" / "libretranslate").write_text("")
    assert bench.missing_peer(bench.parse_args(base + ["--peers", "libretranslate"])) is None


def test_a_peer_reply_with_too_few_translations_is_an_error(bench) -> None:
    body = bench.peer_body([["a.", "b."]])
    assert bench.peer_reply(body, json.dumps([[{"tgt": "x"}, {"tgt": "y"}]]).encode()) == 2
    with pytest.raises(ValueError, match="wrong reply"):
        bench.peer_reply(body, json.dumps([[{"tgt": "x"}]]).encode())
    with pytest.raises(ValueError):
        bench.peer_reply(body, json.dumps({"error": "boom", "status": "error"}).encode())


def test_ratios_compare_at_the_most_clients_and_against_offline(bench) -> None:
    def row(load: str, c: int, server: str, sps: float, p95: float) -> dict:
        return {"load": load, "concurrency": c, "server": server, "sent_per_s": sps, "p95_ms": p95}

    rows = [row("sentence", 1, "mt", 10, 50), row("sentence", 1, "peer", 5, 100),
            row("sentence", 32, "mt", 80, 400), row("sentence", 32, "peer", 10, 3000)]  # fmt: skip
    lines = bench.ratios(rows, {"mt": 100.0}, ["peer"])
    assert lines == ["- sentence, 32 clients: mt 8.0x peer's sentences/s; p95 400 ms vs 3000 ms",
                     "  - mt at 32 clients: 80% of offline (100.0 sentences/s in-process)"]  # fmt: skip
    rows += [row("sentence", 1, "lt", 6, 90), row("sentence", 32, "lt", 40, 800)]
    assert bench.ratios(rows, {}, ["peer", "lt"]) == [
        "- sentence, 32 clients: mt 8.0x peer's sentences/s; p95 400 ms vs 3000 ms",
        "- sentence, 32 clients: mt 2.0x lt's sentences/s; p95 400 ms vs 800 ms"]  # fmt: skip


def test_cpu_seconds_counts_a_process_and_its_children(bench) -> None:
    import os
    import subprocess
    import sys
    import time

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nimport sys; sys.stdin.read()"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\n"
                               f"c = subprocess.Popen([sys.executable, '-c', {burn!r}], stdin=subprocess.PIPE)\n"
                               "print(c.pid, flush=True); sys.stdin.read(); c.communicate()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        before = {parent.pid: 0.0}  # as if read before anything ran
        deadline = time.monotonic() + 30
        while True:  # the child burns 0.3 s of CPU, then waits
            after = bench.cpu_seconds(parent.pid)
            if after.get(child, 0) >= 0.25 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert set(after) >= {parent.pid, child} and os.getpid() not in after
        main, children = bench.cpu_split(before, after, parent.pid)
        assert main == after[parent.pid] and children >= 0.25
    finally:
        parent.stdin.close()
        parent.wait(30)


@pytest.mark.parametrize("flag", [["--mt-workers", "2,x"], ["--mt-workers", "0"], ["--loads", "words"], ["--clients", "0"],
                                  ["--peers", "marian"], ["--peers", ","], ["--mt-engines", "onnx"]])
def test_bad_flags_are_named(bench, tmp_path: Path, flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "in.txt").write_text("ein Satz.\n")
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", str(tmp_path), "--input", str(tmp_path / "in.txt"), *flag])
    assert flag[0] in capsys.readouterr().err


def test_list_flags_are_parsed_once_into_lists(bench, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "in.txt").write_text("ein Satz.\n")
    base = ["--model", str(tmp_path), "--input", str(tmp_path / "in.txt")]
    args = bench.parse_args(base + ["--clients", "1,32", "--mt-workers", "2,1", "--loads", "sentence", "--mt-dtypes", "fp32,"])
    assert (args.clients, args.mt_workers, args.loads, args.mt_dtypes) == ([1, 32], [2, 1], ["sentence"], ["fp32"])
    assert bench.parse_args(base).mt_workers == [None]  # one server per dtype, with the server's own default
    assert bench.parse_args(base).peers == ["onmt", "libretranslate"]
    assert bench.parse_args(base + ["--mt-engines", "torch,ctranslate2"]).mt_engines == ["torch", "ctranslate2"]


def test_servers_started_before_a_failing_peer_are_kept_for_stopping(bench, tmp_path: Path, monkeypatch) -> None:
    """main stops what ``start_servers`` appended even when a later start raises."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "in.txt").write_text("ein Satz.\n")
    args = bench.parse_args(["--model", str(tmp_path), "--input", str(tmp_path / "in.txt"), "--peers", "libretranslate",
                             "--mt-dtypes", "auto,fp32"])  # fmt: skip
    monkeypatch.setattr(bench, "start_mt", lambda *a: ("mt", a[3]))

    def fail(*a):
        raise RuntimeError("export failed")

    monkeypatch.setattr(bench, "start_libretranslate", fail)
    servers: list = []
    with pytest.raises(RuntimeError, match="export failed"):
        bench.start_servers(args, tmp_path, servers)
    assert servers == [("mt", "auto"), ("mt", "fp32")]
