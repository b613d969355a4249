"""Chaos run for the translation server (loopback only; not run in CI).

Sends N ``/v1/translate`` requests (one sentence each) from C well-behaved clients twice to one
``python -m serve``: a quiet run, then a chaos run during which, at the same time,

* one decoding process is killed (SIGKILL) every ``--kill-every`` requests;
* ``--slow-clients`` connections send a request header one byte per second (and reconnect
  whenever the server closes them);
* ``--costly`` requests at the cost budget (7 texts at beam 16, max_length 512: 57,456 decoder
  row-steps of the default 65,536) are spread over the run, plus one over it (expected: 413);

then it sends SIGTERM while a costly request decodes and checks that no decoding process
outlives the server. It reports the well-behaved clients' errors (should be 0) and
p50/p95/p99 in both runs, what happened to the costly and slow clients, the shutdown time
and the orphans.

    python bench/serve_chaos.py                          # random-init tiny model, 10,000 requests
    python bench/serve_chaos.py --requests 1000          # a smoke check (~1-2 minutes)
    python bench/serve_chaos.py --model runs/x/model_avg --input test2016.de --beam 5

Like ``bench/serve_load.py`` (whose client it uses) it starts the server on a free
127.0.0.1 port in a subprocess; without ``--model`` it serves a random-init model
(``bench/devmodel.py``; the translations are gibberish and, as a random model rarely ends a
sentence, every request decodes to its maximum length).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_load import Connection, free_port, run_load, wait_ready  # noqa: E402
from mt.runtime import cpu_name  # noqa: E402

# ---------------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of ``pid`` from /proc, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def decoding_children(server: int) -> set[int]:
    """The server's decoding processes (multiprocessing spawn children, not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None or st[1] != server:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


# ---------------------------------------------------------------------------- clients


async def slow_client(host: str, port: int, stop: asyncio.Event, stats: dict) -> None:
    """Send a request header one byte per second; reconnect when the server closes."""
    while not stop.is_set():
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats["refused"] += 1
            await asyncio.sleep(1)
            continue
        stats["opened"] += 1
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(1024), 1.0)
                except asyncio.TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
                    continue
                stats["closed_by_server"] += 1  # an answer (408, 431 ...) or EOF: the server gave up on us
                stats["lifetimes"].append(time.monotonic() - opened)
                if data:
                    stats["answers"].add(data.split(b"\r\n", 1)[0].decode("latin-1"))
                break
        except OSError:
            stats["closed_by_server"] += 1
            stats["lifetimes"].append(time.monotonic() - opened)
        finally:
            writer.close()


async def one_request(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, float]:
    """``(status, seconds)`` of one request on its own connection (status 0: no answer)."""
    parts = urlsplit(url)
    conn = Connection(parts.hostname, parts.port)
    t0 = time.perf_counter()
    try:
        status, _ = await asyncio.wait_for(conn.post("/v1/translate", body, headers), timeout)
    except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        status = 0
    finally:
        await conn.close()
    return status, time.perf_counter() - t0


async def killer(server: int, done: list[int], every: int, stop: asyncio.Event, kills: list[int]) -> None:
    """SIGKILL one decoding process (chosen at random) each time ``every`` more requests are answered."""
    rng = random.Random(0)
    target = every
    while not stop.is_set():
        await asyncio.sleep(0.02)
        if done[0] >= target:
            target += every
            pids = sorted(decoding_children(server))
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)


async def costly_requests(url: str, bodies: list[bytes], done: list[int], total: int, headers: dict[str, str],
                          timeout: float) -> list[tuple[int, float]]:
    """Send ``bodies`` one by one, spread evenly over ``total`` answered requests, concurrently."""
    tasks = []
    for k, body in enumerate(bodies):
        while done[0] < (k + 1) * total // (len(bodies) + 1):
            await asyncio.sleep(0.05)
        tasks.append(asyncio.create_task(one_request(url, body, headers, timeout)))
    return list(await asyncio.gather(*tasks))


async def chaos_run(url: str, server: int, payloads: list[bytes], costly: list[bytes], args: argparse.Namespace,
                    headers: dict[str, str]) -> tuple[dict, dict]:
    """The chaos phase: clients + killer + slow clients + costly requests, all at once."""
    parts = urlsplit(url)
    done, kills, stop = [0], [], asyncio.Event()
    slow = {"opened": 0, "refused": 0, "closed_by_server": 0, "lifetimes": [], "answers": set()}
    seen: set[int] = set()

    async def watch_children() -> None:  # every decoding process that ever ran, for the orphan check
        while not stop.is_set():
            seen.update(decoding_children(server))
            await asyncio.sleep(0.25)

    background = [asyncio.create_task(killer(server, done, args.kill_every, stop, kills)),
                  asyncio.create_task(watch_children())]
    background += [asyncio.create_task(slow_client(parts.hostname, parts.port, stop, slow))
                   for _ in range(args.slow_clients)]
    costly_task = asyncio.create_task(costly_requests(url, costly, done, len(payloads), headers, args.timeout))
    result = await run_load(url, payloads, args.concurrency, time.monotonic() + args.max_seconds, headers,
                            on_answer=lambda: done.__setitem__(0, done[0] + 1))
    costly_results = await costly_task
    stop.set()
    await asyncio.gather(*background, return_exceptions=True)
    extra = {"kills": kills, "slow": slow, "costly": costly_results, "seen": seen}
    return result, extra


# ---------------------------------------------------------------------------- shutdown


def sigterm_check(proc: subprocess.Popen, url: str, body: bytes, headers: dict[str, str],
                  seen: set[int]) -> dict:
    """SIGTERM the server while a costly request decodes; then: how long it took to exit and
    which decoding processes (any seen during the run) are still alive. Orphans are killed
    afterwards so the machine is left clean."""
    async def fire() -> None:
        task = asyncio.create_task(one_request(url, body, headers, 120))
        await asyncio.sleep(1.0)  # a decoding process is busy with it now
        seen.update(decoding_children(proc.pid))
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(task, return_exceptions=True)

    t0 = time.monotonic()
    asyncio.run(fire())
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    exited = time.monotonic() - t0
    time.sleep(1.0)  # let the children notice
    orphans = sorted(p for p in seen if alive(p))
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return {"exit_s": exited, "exit_code": code, "orphans": orphans, "processes_seen": len(seen)}


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model directory to serve (default: a random-init tiny model)")
    p.add_argument("--requests", type=int, default=10_000, help="well-behaved requests per run (default 10000)")
    p.add_argument("--concurrency", "-c", type=int, default=32)
    p.add_argument("--kill-every", type=int, default=500, help="kill a decoding process every N requests")
    p.add_argument("--slow-clients", type=int, default=50)
    p.add_argument("--costly", type=int, default=4, help="requests at the cost budget during the chaos run")
    p.add_argument("--beam", type=int, default=None, help="beam_size of the well-behaved requests (default: the server's)")
    p.add_argument("--input", help="sentences, one per line (default: synthetic sentences)")
    p.add_argument("--server-args", default="", help="extra flags for python -m serve")
    p.add_argument("--timeout", type=float, default=120, help="client-side timeout of a costly request (s)")
    p.add_argument("--max-seconds", type=float, default=1800, help="stop issuing requests after this long (per run)")
    p.add_argument("--json", dest="json_out", help="also write the results here")
    args = p.parse_args(argv)
    if not (1 <= args.requests <= 1_000_000 and 1 <= args.concurrency <= 1024 and args.kill_every >= 1
            and 0 <= args.slow_clients <= 1000 and 0 <= args.costly <= 100):
        p.error("--requests, --concurrency, --kill-every, --slow-clients or --costly out of range")
    return args


def payloads_for(args: argparse.Namespace) -> tuple[list[bytes], list[bytes], bytes]:
    """Well-behaved bodies (one sentence each), the costly bodies and the over-budget body."""
    if args.input:
        sentences = [s for s in Path(args.input).read_text(encoding="utf-8").splitlines() if s.strip()]
    else:
        from bench.devmodel import synthetic_sentences

        sentences = synthetic_sentences(2000, seed=7)
    options = {} if args.beam is None else {"beam_size": args.beam}
    normal = [json.dumps({"texts": [sentences[i % len(sentences)]], **options}).encode() for i in range(args.requests)]
    big = {"beam_size": 16, "max_length": 512}
    costly = [json.dumps({"texts": sentences[7 * k:7 * k + 7], **big}).encode() for k in range(args.costly)]
    over = json.dumps({"texts": sentences[:64], **big}).encode()
    return normal, costly, over


def report(quiet: dict, chaos: dict, extra: dict, over_status: int, shutdown: dict, args: argparse.Namespace) -> bool:
    """Print the results; True when the well-behaved clients saw no error and nothing was orphaned."""
    print(f"\nmachine: {cpu_name()}, {os.cpu_count()} CPUs (shared by server and clients)")
    print("| run | requests | errors | req/s | p50 ms | p95 ms | p99 ms | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in (("quiet", quiet), ("chaos", chaos)):
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_batch_texts']:.1f} |")
    ratio = chaos["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("nan")
    print(f"p99 chaos/quiet: {ratio:.2f}x (p50 {chaos['p50_ms'] / max(quiet['p50_ms'], 1e-9):.2f}x)")
    print(f"decoding processes killed: {len(extra['kills'])} (every {args.kill_every} requests); "
          f"well-behaved errors: {chaos['errors']}" + (f" e.g. {chaos['error_examples']}" if chaos["errors"] else ""))
    statuses = [s for s, _ in extra["costly"]]
    slowest = max((t for _, t in extra["costly"]), default=0.0)
    print(f"costly requests (7 texts, beam 16, max_length 512): statuses {sorted(statuses)}, slowest {slowest:.1f} s; "
          f"over-budget request (64 texts): HTTP {over_status}")
    slow = extra["slow"]
    life = statistics.median(slow["lifetimes"]) if slow["lifetimes"] else float("nan")
    print(f"slow clients ({args.slow_clients}): {slow['opened']} connections, {slow['closed_by_server']} closed by the "
          f"server (median after {life:.1f} s), {slow['refused']} refused; answers {sorted(slow['answers'])}")
    print(f"SIGTERM during a costly request: server exited in {shutdown['exit_s']:.1f} s (code {shutdown['exit_code']}); "
          f"orphaned decoding processes: {len(shutdown['orphans'])} of {shutdown['processes_seen']} seen")
    return chaos["errors"] == 0 and quiet["errors"] == 0 and not shutdown["orphans"]


def start_server(args: argparse.Namespace, tmp: str) -> tuple[subprocess.Popen, str, str]:
    model_dir, desc = args.model, f"model {args.model}"
    if model_dir is None:
        from bench.devmodel import make_random_model_dir

        model_dir = str(make_random_model_dir(Path(tmp) / "model"))
        desc = "RANDOM-INIT tiny model (every request decodes to its maximum length)"
    port = free_port()
    cmd = [sys.executable, "-m", "serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port),
           *args.server_args.split()]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, env=env), f"http://127.0.0.1:{port}", desc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {"X-API-Key": os.environ["MT_API_KEY"]} if os.environ.get("MT_API_KEY") else {}
    normal, costly, over = payloads_for(args)
    with tempfile.TemporaryDirectory(prefix="mt-chaos-") as tmp:
        proc, url, desc = start_server(args, tmp)
        try:
            wait_ready(url, proc, 180, headers)
            print(f"serving {desc} at {url}")
            far = time.monotonic() + args.max_seconds
            asyncio.run(run_load(url, normal[:16], 1, far, headers))  # warm-up
            quiet = asyncio.run(run_load(url, normal, args.concurrency, far, headers))
            print(f"quiet run: {quiet['requests']} requests, {quiet['errors']} errors, p99 {quiet['p99_ms']:.0f} ms")
            over_status, _ = asyncio.run(one_request(url, over, headers, 30))
            chaos, extra = asyncio.run(chaos_run(url, proc.pid, normal, costly, args, headers))
            shutdown = sigterm_check(proc, url, costly[0] if costly else over, headers, extra["seen"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ok = report(quiet, chaos, extra, over_status, shutdown, args)
    if args.json_out:
        public = {k: v for k, v in extra.items() if k not in ("seen", "slow")}
        Path(args.json_out).write_text(json.dumps(
            {"model": desc, "quiet": {k: v for k, v in quiet.items() if k != "_raw"},
             "chaos": {k: v for k, v in chaos.items() if k != "_raw"}, "over_budget_status": over_status,
             "shutdown": shutdown, **public}, indent=2, default=list) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
