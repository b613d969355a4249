"""Load test for the translation server (loopback only).

Sends N ``/v1/translate`` requests (one sentence each) from C concurrent clients and reports
throughput, p50/p95/p99 latency and errors; then compares with sending requests one at a
time (a bounded prefix of the same requests, half of it before and half after the concurrent
run, so a drift of the machine's speed meanwhile affects both) and prints the throughput ratio.

    python bench/serve_load.py --model runs/x/model            # a trained model
    python bench/serve_load.py --random-model small            # random-init 'small' (dry run)
    python bench/serve_load.py --url http://127.0.0.1:8000     # a running server

Without ``--url`` it starts ``python -m serve`` on a free 127.0.0.1 port in a subprocess
(so client and server do not share a GIL) and stops it afterwards. Counts and time are
bounded (``--requests``, ``--max-seconds``); only loopback addresses are accepted.

The client is a minimal keep-alive HTTP/1.1 client on asyncio streams, so the measurement
is not dominated by client-library overhead (client and server share this machine's CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt.runtime import cpu_name  # noqa: E402
from serve.cli import is_loopback  # noqa: E402


class Connection:
    """One keep-alive HTTP/1.1 connection; ``post`` returns ``(status, body)``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def mt_reply(body: bytes, data: bytes) -> int:
    """Check a ``/v1/translate`` reply against its request; returns the batch it was decoded in
    (texts). ``ValueError`` for a wrong reply."""
    reply = json.loads(data)
    if len(reply["translations"]) != len(json.loads(body)["texts"]):
        raise ValueError("wrong number of translations")
    return reply["timings"]["batch_texts"]


async def run_load(url: str, payloads: list[bytes], concurrency: int, deadline: float,
                   headers: dict[str, str], on_answer: Optional[Callable[[], None]] = None,
                   path: str = "/v1/translate", check: Callable[[bytes, bytes], int] = mt_reply) -> dict:
    """Send ``payloads`` to ``path`` from ``concurrency`` workers; stop issuing at ``deadline``.
    ``check(body, reply)`` validates each answer and returns its batch size (``ValueError``: an
    error). ``on_answer()`` is called after every request, answered or failed
    (``bench/serve_chaos.py`` times its faults by it). The result's ``answered`` lists the
    payload indices answered correctly."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: list[str] = []
    batch_sizes: list[int] = []
    answered: list[int] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = Connection(parts.hostname, parts.port or 80)
        try:
            while next_index < len(payloads) and time.monotonic() < deadline:
                index, body = next_index, payloads[next_index]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    status, data = await conn.post(path, body, headers)
                except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    await conn.close()
                    continue
                finally:
                    if on_answer is not None:
                        on_answer()
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"HTTP {status}: {data[:200]!r}")
                    continue
                try:
                    batch_sizes.append(check(body, data))
                    answered.append(index)
                except (ValueError, KeyError, TypeError) as e:
                    errors.append(f"bad reply: {e}")
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {**summarize(concurrency, latencies, errors, batch_sizes, time.perf_counter() - start), "answered": answered}


def summarize(concurrency: int, latencies: list[float], errors: list[str], batch_sizes: list[int],
              seconds: float) -> dict:
    """The reported figures of one phase; the raw lists stay under ``_raw`` so phases can be
    merged (:func:`merge`)."""
    done = len(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else [0.0] * 99
    return {
        "concurrency": concurrency,
        "requests": done,
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": seconds,
        "throughput_rps": (done - sum(1 for e in errors if e.startswith("HTTP"))) / seconds if seconds else 0.0,
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
        "mean_batch_texts": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
        "_raw": (latencies, errors, batch_sizes),
    }


def merge(a: dict, b: dict) -> dict:
    """Two runs of the same phase as one (requests and seconds added, percentiles pooled)."""
    lat, err, batches = (x + y for x, y in zip(a["_raw"], b["_raw"]))
    return summarize(a["concurrency"], lat, err, batches, a["seconds"] + b["seconds"])


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/ready", headers=headers), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model directory to serve")
    src.add_argument("--random-model", choices=["tiny", "small", "base"], help="serve a random-init model (dry run)")
    src.add_argument("--url", help="an already running server (must be loopback)")
    p.add_argument("--requests", type=int, default=10_000, help="requests in the concurrent run (default 10000)")
    p.add_argument("--concurrency", "-c", type=int, default=32)
    p.add_argument("--baseline-requests", type=int, default=300,
                   help="requests sent one at a time for the comparison (a prefix of the same requests; "
                   "half before, half after the concurrent run; default 300)")
    p.add_argument("--max-seconds", type=float, default=600, help="stop issuing requests after this long (per phase)")
    p.add_argument("--beam", type=int, default=None,
                   help="beam_size of every request (default: none sent: the server's, i.e. its --beam or the model's stored one)")
    p.add_argument("--input", help="sentences, one per line (default: synthetic sentences)")
    p.add_argument("--server-args", default="", help="extra flags for python -m serve, e.g. '--max-wait-ms 3'")
    p.add_argument("--api-key", default=os.environ.get("MT_API_KEY"))
    p.add_argument("--json", dest="json_out", help="also write the results here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.requests > 1_000_000 or args.concurrency > 1024:
        p.error("--requests must be in [1, 1e6] and --concurrency in [1, 1024]")
    if args.baseline_requests < 2:
        p.error("--baseline-requests must be >= 2 (half run before, half after the concurrent phase)")
    if args.url and not is_loopback(urlsplit(args.url).hostname or ""):
        p.error("--url: only loopback servers (127.0.0.1, ::1, localhost) may be load-tested")

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    if args.input:
        sentences = [s for s in Path(args.input).read_text(encoding="utf-8").splitlines() if s.strip()]
    else:
        from bench.devmodel import synthetic_sentences

        sentences = synthetic_sentences(2000, seed=7)
    options = {} if args.beam is None else {"beam_size": args.beam}
    payloads = [json.dumps({"texts": [sentences[i % len(sentences)]], **options}).encode()
                for i in range(args.requests)]

    tmp = None
    proc = None
    url = args.url
    model_desc = f"server at {url}"
    try:
        if url is None:
            model_dir = args.model
            if args.random_model:
                from bench.devmodel import make_random_model_dir

                tmp = tempfile.TemporaryDirectory(prefix="mt-bench-")
                model_dir = str(make_random_model_dir(Path(tmp.name) / "model", preset=args.random_model,
                                                      vocab_size=8000 if args.random_model != "tiny" else 400))
                model_desc = f"RANDOM-INIT '{args.random_model}' model (synthetic SentencePiece, output is gibberish)"
            else:
                model_desc = f"model {model_dir}"
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port),
                   *args.server_args.split()]
            env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            proc = subprocess.Popen(cmd, env=env)
        wait_ready(url, proc, 120, headers)
        # warm-up (first calls pay for lazy initialisation)
        asyncio.run(run_load(url, payloads[:8], 1, time.monotonic() + 60, headers))
        # the one-at-a-time baseline runs half before and half after the concurrent phase: the
        # VM's speed drifts by ±15% within minutes, and the ratio should not hinge on one moment
        n_base = min(args.baseline_requests, len(payloads))
        half = n_base // 2
        before = asyncio.run(run_load(url, payloads[:half], 1, time.monotonic() + args.max_seconds / 2, headers))
        conc = asyncio.run(run_load(url, payloads, args.concurrency, time.monotonic() + args.max_seconds, headers))
        after = asyncio.run(run_load(url, payloads[half:n_base], 1, time.monotonic() + args.max_seconds / 2, headers))
        base = merge(before, after)
        print(f"one at a time: {before['throughput_rps']:.1f} req/s before the concurrent phase, "
              f"{after['throughput_rps']:.1f} after")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()

    ratio = conc["throughput_rps"] / base["throughput_rps"] if base["throughput_rps"] else float("nan")
    beam = "the server's default" if args.beam is None else args.beam
    print(f"\nmodel: {model_desc}; beam {beam}; one sentence per request")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs (shared with anything else running)\n")
    print("| clients | requests | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in (base, conc):
        print(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch_texts']:.1f} |")
    print(f"\nthroughput ratio (C={args.concurrency} vs one at a time): {ratio:.1f}x")
    for r in (base, conc):
        if r["error_examples"]:
            print(f"errors at C={r['concurrency']}: {r['error_examples']}")
    if args.json_out:
        public = [{k: v for k, v in r.items() if k not in ("_raw", "answered")} for r in (base, conc)]
        Path(args.json_out).write_text(json.dumps(
            {"model": model_desc, "beam": args.beam, "one_at_a_time": public[0], "concurrent": public[1],
             "ratio": ratio}, indent=2) + "\n")
    return 0 if conc["errors"] == 0 and base["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
