"""mt's server against two peer servers on the same weights, in one run, and against mt's own
offline throughput. The peers (``--peers``):

* ``onmt``: OpenNMT-py 3.0.4's REST server (``onmt_server``), PyTorch like mt;
* ``libretranslate``: LibreTranslate 1.9.6 (Argos Translate on CTranslate2), the server that
  mt's LibreTranslate routes stand in for, serving ``mt export --to argos`` of the model.

The mt model is converted exactly as ``bench/peer_onmt.py`` does (that script checks the
conversion: equal logits and greedy outputs); the peer server gets mt's normalisation and
SentencePiece pieces through ``bench/onmt_server_hooks.py``, so both decode the same input.
Install the peer as ``bench/peer_onmt.py``'s docstring says, plus its server's packages::

    .venv/bin/pip install --no-deps --target .bench-deps/onmt flask==3.1.3 waitress==3.0.2 \\
        werkzeug==3.1.9 itsdangerous==2.2.0 click blinker

LibreTranslate goes into a venv of its own (it brings Flask, Argos Translate and CTranslate2;
spaCy gives Argos an offline sentence splitter: its default, MiniSBD, downloads a model on
first use)::

    python3 -m venv .bench-deps/ltvenv
    PIP_CONSTRAINT=/tmp/torch-constraint.txt .bench-deps/ltvenv/bin/pip install libretranslate==1.9.6 spacy==3.8.18

It runs as its users run it offline (``--load-only SRC,TGT``, Argos' search with
``ARGOS_BEAM_SIZE=--beam``, the CTranslate2 compute type Argos picks, ``auto``), with the
``ARGOS_INTER_THREADS`` x ``ARGOS_INTRA_THREADS`` layout of mt's decoding workers x threads.

Run (about 10 minutes on 2 cores; run nothing else meanwhile)::

    .venv/bin/python bench/peer_server.py --model runs/x/final_model \\
        --input $MT_DATA_DIR/multi30k/test2016.de --beam 5 --threads 2

Both servers run at once on 127.0.0.1, each in its own process with ``--threads`` torch
threads; the phases alternate between them, and the load client (``bench/serve_load.py``'s,
one asyncio process) shares the cores. Two loads:

* ``sentence``: one sentence per request, as today's other serving benches;
* ``paragraphs``: 1-3 paragraphs of 2-5 consecutive sentences per request. mt and
  LibreTranslate get the text and split it themselves (``mt.documents``; Argos: paragraphs,
  then spaCy's rule-based sentencizer); ``onmt_server`` has no splitter, so it gets the
  request's sentences as one list, as its users would send them (its batch is then the request's).

Per load, clients (``--clients``) and server: requests, errors, sentences/s, p50/p95/p99
latency, and where the CPU went per translated sentence: the server's own process (HTTP,
queue, splitting, tokenising), its decoding processes (mt's children; the peer decodes in its
own process) and the load client (this process). The client shares the cores, so this says how
much of the 2 cores was left for decoding. Then the ratios the serving issue asks for: mt/peer throughput and p95 at the most
clients, how many of 64 sentences each mt server translates exactly as the peer does (fp32
should agree on nearly all: same weights, same beam rules but for ties), and mt's server against offline ``Translator.translate`` of the same sentences with
the same beam, dtype and threads (in this process, while both servers idle).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

from bench.serve_load import free_port, mt_reply, run_load  # noqa: E402
from mt.config import ENGINES  # noqa: E402
from mt.runtime import cpu_name  # noqa: E402

PEER_ID = 100  # the model id in the peer's conf.json
PEERS = ("onmt", "libretranslate")
LT_VERSION = "1.9.6"


def paragraphs(sentences: list[str], n: int, seed: int) -> list[list[list[str]]]:
    """``n`` requests, each 1-3 paragraphs of 2-5 consecutive sentences (request -> paragraph -> sentence)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        request = []
        for _ in range(rng.randint(1, 3)):
            k, start = rng.randint(2, 5), rng.randrange(len(sentences))
            request.append([sentences[(start + i) % len(sentences)] for i in range(k)])
        out.append(request)
    return out


def mt_body(request: list[list[str]]) -> bytes:
    return json.dumps({"texts": ["\n\n".join(" ".join(p) for p in request)]}).encode()


def peer_body(request: list[list[str]]) -> bytes:
    return json.dumps([{"id": PEER_ID, "src": s} for p in request for s in p]).encode()


def peer_reply(body: bytes, data: bytes) -> int:
    """Check an ``onmt_server`` reply (``[[{"tgt": ...}, ...]]``, n_best lists); its batch size."""
    sent, reply = json.loads(body), json.loads(data)
    if not isinstance(reply, list) or len(reply[0]) != len(sent):
        raise ValueError(f"wrong reply: {str(reply)[:120]}")
    return len(sent)


def lt_body(request: list[list[str]], src: str, tgt: str) -> bytes:
    """LibreTranslate's ``/translate``: the same text as mt's, paragraphs split by a blank line."""
    return json.dumps({"q": "\n\n".join(" ".join(p) for p in request), "source": src, "target": tgt,
                       "format": "text"}).encode()  # fmt: skip


def lt_reply(body: bytes, data: bytes) -> int:
    """Check a LibreTranslate reply (``{"translatedText": str}``); 0: its batches are not reported."""
    reply = json.loads(data)
    if not isinstance(reply, dict) or not isinstance(reply.get("translatedText"), str):
        raise ValueError(f"wrong reply: {str(reply)[:120]}")
    return 0


@dataclass(frozen=True)
class Protocol:
    """How a server is spoken to: its translate and readiness paths, a request's body, the
    check of a reply (returns the batch it was decoded in, 0 when not reported) and the first
    translation in a reply."""

    path: str
    ready: str
    body: Callable[[list[list[str]]], bytes]
    check: Callable[[bytes, bytes], int]
    first: Callable[[Any], str]


MT = Protocol("/v1/translate", "/ready", mt_body, mt_reply, lambda r: r["translations"][0]["text"])
ONMT = Protocol("/translator/translate", "/translator/health", peer_body, peer_reply, lambda r: r[0][0]["tgt"])


def libretranslate_protocol(src: str, tgt: str) -> Protocol:
    return Protocol("/translate", "/languages", lambda r: lt_body(r, src, tgt), lt_reply, lambda r: r["translatedText"])


def start_peer(ckpt: Path, model_dir: str, beam: int, threads: int, onmt_path: Path, eps: float, name: str) -> Server:
    conf = ckpt.parent / "conf.json"
    opt = {"gpu": -1, "beam_size": beam, "batch_size": 32, "n_best": 1}
    conf.write_text(json.dumps({"models_root": str(ckpt.parent), "models": [
        {"id": PEER_ID, "model": ckpt.name, "timeout": -1, "on_timeout": "to_cpu", "load": True, "opt": opt,
         "preprocess": ["onmt_server_hooks.encode"], "postprocess": ["onmt_server_hooks.decode"]}]}))  # fmt: skip
    port = free_port()
    code = ("import sys, torch, peer_onmt; peer_onmt.allow_namespace_unpickling(); "
            f"torch.set_num_threads({threads}); from onmt.bin.server import main; sys.argv = sys.argv[:1] + "
            f"['--ip', '127.0.0.1', '--port', '{port}', '--config', {str(conf)!r}]; main()")  # fmt: skip
    env = dict(os.environ, MT_PEER_MODEL=model_dir, MT_PEER_EPS=repr(eps), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(onmt_path.resolve()), str(BENCH), str(ROOT)]))  # fmt: skip
    log = ckpt.parent / "peer.log"
    return Server(name, f"http://127.0.0.1:{port}", _spawn([sys.executable, "-c", code], env, log), log, ONMT)


def argos_package(model_dir: str, packages: Path, lt_venv: Path) -> tuple[dict[str, Any], str]:
    """``mt export --to argos`` of ``model_dir`` into the directory ``packages`` with a blank
    spaCy pipeline as its offline sentence splitter (built by the LibreTranslate venv's spaCy):
    the package's metadata and the CTranslate2 compute type Argos' ``auto`` picks on this CPU."""
    from mt.export import export_model

    pkg = export_model(model_dir, packages / "mt_model", "argos")
    meta = json.loads((pkg / "metadata.json").read_text())
    code = ("import sys, spacy, ctranslate2; spacy.blank(sys.argv[1]).to_disk(sys.argv[2]); "
            "print(ctranslate2.Translator(sys.argv[3], compute_type='auto').compute_type)")  # fmt: skip
    out = subprocess.run([str(lt_venv / "bin" / "python"), "-c", code, meta["from_code"], str(pkg / "spacy"),
                          str(pkg / "model")], capture_output=True, text=True, check=True)  # fmt: skip
    return meta, out.stdout.strip().splitlines()[-1]


def start_libretranslate(model_dir: str, beam: int, threads: int, lt_venv: Path, root: Path) -> Server:
    """LibreTranslate serving ``model_dir``'s Argos export offline: packages and data under
    ``root``, an empty package index (else its start-up retries the online one), beam ``beam``,
    mt's layout of decoding workers x threads as CTranslate2's inter x intra threads."""
    import torch

    from mt.decode.translator import default_workers

    meta, compute = argos_package(model_dir, root / "packages", lt_venv)
    (root / "xdg" / "argos-translate").mkdir(parents=True, exist_ok=True)
    (root / "xdg" / "argos-translate" / "index.json").write_text("[]")
    inter = default_workers(torch.device("cpu"), threads)
    env = dict(os.environ, ARGOS_PACKAGES_DIR=str(root / "packages"), ARGOS_CHUNK_TYPE="SPACY", ARGOS_BEAM_SIZE=str(beam),
               ARGOS_INTER_THREADS=str(inter), ARGOS_INTRA_THREADS=str(max(1, threads // inter)),
               XDG_DATA_HOME=str(root / "xdg"), XDG_CACHE_HOME=str(root / "cache"), XDG_CONFIG_HOME=str(root / "config"))  # fmt: skip
    port = free_port()
    cmd = [str(lt_venv / "bin" / "libretranslate"), "--host", "127.0.0.1", "--port", str(port), "--load-only",
           f"{meta['from_code']},{meta['to_code']}", "--disable-web-ui", "--disable-files-translation"]  # fmt: skip
    log = root / "libretranslate.log"
    name = f"LibreTranslate {LT_VERSION} (CTranslate2 {compute})"
    return Server(name, f"http://127.0.0.1:{port}", _spawn(cmd, env, log), log,
                  libretranslate_protocol(meta["from_code"], meta["to_code"]))  # fmt: skip


def start_mt(model_dir: str, beam: int, threads: int, dtype: str, workers: Optional[int], log: Path,
             engine: str = "torch") -> Server:  # fmt: skip
    """``mt serve`` with ``--dtype dtype``, ``--engine engine`` and ``--workers`` (None: the
    server's default)."""
    port = free_port()
    cmd = [sys.executable, "-m", "serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--beam", str(beam), "--threads", str(threads), "--dtype", dtype, "--engine", engine]  # fmt: skip
    name = f"mt --dtype {dtype}" + (f" --engine {engine}" if engine != "torch" else "")
    if workers is not None:
        cmd += ["--workers", str(workers)]
        name += f" --workers {workers}"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return Server(name, f"http://127.0.0.1:{port}", _spawn(cmd, env, log), log, MT, dtype=dtype, engine=engine)


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server process whose output goes to ``log``: a pipe nobody reads fills up (the peer
    logs every request) and then blocks the server mid-request."""
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of ``pid`` and of each of its descendants, by pid (Linux
    ``/proc``; processes that end meanwhile are skipped)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except (OSError, IndexError):
            continue
        p = int(stat.parent.name)
        parent[p], used[p] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    tree, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p in used:
            tree[p] = used[p]
            todo += [c for c, pp in parent.items() if pp == p]
    return tree


def cpu_split(before: dict[int, float], after: dict[int, float], root: int) -> tuple[float, float]:
    """CPU seconds spent between two :func:`cpu_seconds` readings: ``(root, its descendants)``."""
    main = after.get(root, 0.0) - before.get(root, 0.0)
    return main, sum(t - before.get(p, 0.0) for p, t in after.items() if p != root)


class Server:
    """One server under load: its process and log, where it listens and how it is spoken to
    (``protocol``); ``dtype`` / ``engine``: an mt server's ``--dtype`` and ``--engine`` (its
    offline ceiling is measured with them), None for a peer."""

    def __init__(self, name: str, url: str, proc: subprocess.Popen, log: Path, protocol: Protocol,
                 dtype: Optional[str] = None, engine: Optional[str] = None) -> None:  # fmt: skip
        self.name, self.url, self.proc, self.log, self.protocol = name, url, proc, log, protocol
        self.dtype, self.engine = dtype, engine

    @property
    def peer(self) -> bool:
        return self.protocol is not MT

    def wait_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server {self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + self.protocol.ready, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"server {self.name} at {self.url} not up after {timeout:.0f} s")

    def load(self, requests: list[list[list[str]]], clients: int, max_seconds: float) -> dict[str, Any]:
        payloads = [self.protocol.body(r) for r in requests]
        before, client = cpu_seconds(self.proc.pid), time.process_time()
        r = asyncio.run(run_load(self.url, payloads, clients, time.monotonic() + max_seconds, {},
                                 path=self.protocol.path, check=self.protocol.check))  # fmt: skip
        client = time.process_time() - client
        main, children = cpu_split(before, cpu_seconds(self.proc.pid), self.proc.pid)
        sentences = sum(sum(len(p) for p in requests[i]) for i in r["answered"])
        per = 1000 / max(sentences, 1)
        return {k: v for k, v in r.items() if k not in ("_raw", "answered")} | {
            "server": self.name, "sentences": sentences, "sent_per_s": sentences / r["seconds"],
            "cpu_ms_per_sentence": {"server": main * per, "decoders": children * per, "client": client * per},
            "cores_busy": (main + children + client) / r["seconds"]}

    def translate(self, sentences: list[str]) -> list[str]:
        """One request per sentence, one at a time: the outputs (for the agreement check)."""
        out = []
        for s in sentences:
            req = urllib.request.Request(self.url + self.protocol.path, self.protocol.body([[s]]),
                                         {"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=120) as r:
                out.append(self.protocol.first(json.loads(r.read())))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def offline(model_dir: str, sentences: list[str], beam: int, threads: int, dtype: str, engine: str = "torch") -> float:
    """Sentences/s of in-process ``Translator.translate`` (what ``mt translate`` runs), loading untimed."""
    from mt.decode.translator import Translator

    translator = Translator.load(model_dir, threads=threads, beam=beam, dtype=dtype, engine=engine)
    translator.translate(sentences[:32])  # warm-up
    t0 = time.perf_counter()
    translator.translate(sentences)
    return len(sentences) / (time.perf_counter() - t0)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| load | clients | server | requests | errors | sentences/s | p50 ms | p95 ms | p99 ms | mean batch "
             "| CPU ms/sentence: server / decoders / client | cores busy |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for r in rows:
        cpu = " / ".join(f"{r['cpu_ms_per_sentence'][k]:.1f}" for k in ("server", "decoders", "client"))
        lines.append(f"| {r['load']} | {r['concurrency']} | {r['server']} | {r['requests']} | {r['errors']} | "
                     f"{r['sent_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{_batch(r['mean_batch_texts'])} | {cpu} | {r['cores_busy']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _batch(mean: float) -> str:
    return f"{mean:.1f}" if mean else "–"  # 0: the server does not report its batches


def ratios(rows: list[dict[str, Any]], ceilings: dict[str, float], peers: list[str]) -> list[str]:
    """mt/peer throughput and p95 at the most clients per load, for each peer; server/offline
    for the sentence load."""
    out = []
    for load in dict.fromkeys(r["load"] for r in rows):
        most = max(r["concurrency"] for r in rows if r["load"] == load)
        at = {r["server"]: r for r in rows if r["load"] == load and r["concurrency"] == most}
        for name, r in at.items():
            if name in peers:
                continue
            for peer in peers:
                p = at[peer]
                out.append(f"- {load}, {most} clients: {name} {r['sent_per_s'] / p['sent_per_s']:.1f}x {peer}'s "
                           f"sentences/s; p95 {r['p95_ms']:.0f} ms vs {p['p95_ms']:.0f} ms")  # fmt: skip
            if load == "sentence" and name in ceilings:
                out.append(f"  - {name} at {most} clients: {100 * r['sent_per_s'] / ceilings[name]:.0f}% of offline "
                           f"({ceilings[name]:.1f} sentences/s in-process)")  # fmt: skip
    return out


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="mt model directory")
    p.add_argument("--input", required=True, help="sentences, one per line (e.g. test2016.de)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    p.add_argument("--mt-dtypes", default="auto,fp32", help="one mt server per --dtype")
    p.add_argument("--mt-engines", default="torch", help="and per --engine (torch, ctranslate2)")
    p.add_argument("--mt-workers", default="", help="and per --workers value, comma-separated (default: the server's own)")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--loads", default="sentence,paragraphs", help="which loads to run (comma-separated)")
    p.add_argument("--requests", type=int, default=2000, help="sentence requests per phase (a quarter at 1 client)")
    p.add_argument("--paragraph-requests", type=int, default=300, help="paragraph requests per phase")
    p.add_argument("--max-seconds", type=float, default=60, help="stop issuing a phase's requests after this long")
    p.add_argument("--peers", default=",".join(PEERS), help=f"peer servers to run (comma-separated: {', '.join(PEERS)})")
    p.add_argument("--onmt-path", default=str(ROOT / ".bench-deps" / "onmt"))
    p.add_argument("--lt-venv", default=str(ROOT / ".bench-deps" / "ltvenv"), help="LibreTranslate's venv (see above)")
    p.add_argument("--json", dest="json_out", help="also write the rows here")
    args = p.parse_args(argv)
    if not Path(args.model, "config.json").is_file():
        p.error(f"--model {args.model}: not an mt model directory (no config.json)")
    if not Path(args.input).is_file():
        p.error(f"--input {args.input}: no such file")
    try:
        clients = [int(c) for c in args.clients.split(",")]
    except ValueError:
        clients = []
    try:
        workers = [int(w) for w in args.mt_workers.split(",") if w]
    except ValueError:
        workers = [0]
    if not clients or min(clients) < 1 or min(args.beam, args.threads, args.requests, args.paragraph_requests) < 1:
        p.error("--clients (comma-separated), --beam, --threads, --requests and --paragraph-requests must be positive")
    if not set(args.loads.split(",")) <= {"sentence", "paragraphs"} or not args.loads:
        p.error(f"--loads {args.loads}: sentence and/or paragraphs")
    if workers and min(workers) < 1:
        p.error(f"--mt-workers {args.mt_workers}: comma-separated positive integers")
    peers = [x for x in args.peers.split(",") if x]
    if not peers or not set(peers) <= set(PEERS):
        p.error(f"--peers {args.peers}: one or more of {', '.join(PEERS)}")

    # the lists main uses, parsed once
    args.clients, args.mt_workers, args.loads = clients, workers or [None], args.loads.split(",")
    args.mt_dtypes = [d for d in args.mt_dtypes.split(",") if d]
    args.mt_engines = [e for e in args.mt_engines.split(",") if e]
    if not args.mt_engines or not set(args.mt_engines) <= set(ENGINES):
        p.error(f"--mt-engines {','.join(args.mt_engines)}: one or more of {', '.join(ENGINES)}")
    args.peers = peers
    return args


def missing_peer(args: argparse.Namespace) -> Optional[str]:
    """A one-line message naming the flag of a peer that is not installed, or None."""
    onmt = Path(args.onmt_path)
    if "onmt" in args.peers and not ((onmt / "onmt" / "bin" / "server.py").is_file() and (onmt / "flask").is_dir()):
        return f"--onmt-path {onmt}: OpenNMT-py and its server's packages are not installed there (see the docstring)"
    if "libretranslate" in args.peers and not (Path(args.lt_venv) / "bin" / "libretranslate").is_file():
        return f"--lt-venv {args.lt_venv}: no LibreTranslate installed there (see the docstring)"
    return None


def start_servers(args: argparse.Namespace, tmp: Path, servers: list[Server]) -> None:
    """Start the mt servers (one per engine, dtype and workers value), then the peers, each
    appended to ``servers`` as it starts (so the caller stops those started before a failure)."""
    for e in args.mt_engines:
        for d in args.mt_dtypes:
            for w in args.mt_workers:
                servers.append(start_mt(args.model, args.beam, args.threads, d, w, tmp / f"mt-{e}-{d}-{w}.log", e))
    if "onmt" in args.peers:
        sys.path.insert(0, str(Path(args.onmt_path).resolve()))
        from bench.peer_onmt import PEER, allow_namespace_unpickling, convert, layer_norm_eps
        from mt.modelio import load_model

        allow_namespace_unpickling()
        loaded = load_model(args.model)
        eps = layer_norm_eps(loaded.model)
        convert(loaded.model, loaded.text, tmp / "model.pt")
        del loaded
        servers.append(start_peer(tmp / "model.pt", args.model, args.beam, args.threads, Path(args.onmt_path), eps, PEER))
    if "libretranslate" in args.peers:
        servers.append(start_libretranslate(args.model, args.beam, args.threads, Path(args.lt_venv), tmp / "lt"))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    missing = missing_peer(args)
    if missing:
        raise SystemExit(missing)
    sentences = [s for s in Path(args.input).read_text(encoding="utf-8").splitlines() if s.strip()]
    if not sentences:
        raise SystemExit(f"--input {args.input}: no sentences")
    loads = {"sentence": [[[sentences[i % len(sentences)]]] for i in range(args.requests)],
             "paragraphs": paragraphs(sentences, args.paragraph_requests, seed=1)}  # fmt: skip
    loads = {k: v for k, v in loads.items() if k in args.loads}
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="peer_server.") as tmp:
        try:
            start_servers(args, Path(tmp), servers)
            for s in servers:
                s.wait_up()
            peers = [s.name for s in servers if s.peer]
            outputs = {s.name: s.translate(sentences[:64]) for s in servers}  # also the warm-up
            ref = peers[0]  # agreement with the first peer (OpenNMT-py when it runs: PyTorch, the same search)
            agree = {name: sum(a == b for a, b in zip(out, outputs[ref])) for name, out in outputs.items() if name != ref}
            rows = []
            for load, requests in loads.items():
                for c in args.clients:
                    part = requests[: max(len(requests) // 4, 1)] if c == 1 else requests
                    for s in servers:
                        rows.append({"load": load, **s.load(part, c, args.max_seconds)})
                        print(f"{load} C={c} {s.name}: {rows[-1]['sent_per_s']:.1f} sent/s, {rows[-1]['errors']} errors", file=sys.stderr)
        finally:
            for s in servers:
                s.stop()
    measured = {(e, d): offline(args.model, sentences, args.beam, args.threads, d, e)
                for e in args.mt_engines for d in args.mt_dtypes}  # fmt: skip
    ceilings = {s.name: measured[s.engine, s.dtype] for s in servers if not s.peer}
    print(f"\n{cpu_name()}, {os.cpu_count()} CPUs; model {args.model}; beam {args.beam}; {args.threads} threads per server; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")  # fmt: skip
    print(table(rows))
    print("\n".join(ratios(rows, ceilings, peers)))
    print("\n".join(f"- {name}: {n} of 64 sentences translated exactly as {ref} did" for name, n in agree.items()))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "offline_sent_per_s": ceilings, "agreement_of_64": agree,
                                                   "agreement_with": ref}, indent=1) + "\n")  # fmt: skip
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
