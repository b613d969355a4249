"""The ChrEn paper's own NMT recipe, trained on this machine under a wall-clock budget.

Zhang et al. (EMNLP 2020) report 15.8 BLEU chr→en and 12.7 en→chr in domain. Their published
script (``code/scripts/NMT/rnn_nmt_{chren,enchr}.py`` in ZhangShiyue/ChrEn) trains
OpenNMT-py on a GPU for up to 20,000 steps. This script reruns that recipe on the 2022 release
in ``$MT_DATA_DIR/chren`` with OpenNMT-py 3.0.4 (installed outside the venv, as
``bench/peer_onmt.py`` says) on the CPU, stops it at ``--minutes``, and scores the last
checkpoint on ``chren/test`` the way the paper's script does. Run mt's recipe with the same
budget beside it to compare the two under one CPU budget (docs/results/2026-12-02-chren).

The recipe, as published:

* text: Moses ``tokenizer.perl -l en`` on both sides (sacremoses here), English truecased
  with a truecaser trained on the training English; words, no subwords; every training
  word in the vocabulary up to OpenNMT-py's default cap of 50,000 per side; pairs longer
  than 80 tokens left out of training;
* model: 2-layer bidirectional LSTM encoder, 2-layer LSTM decoder with input feeding and
  ``general`` attention, 1,024 units, 1,024-dim embeddings, decoder embeddings tied to the
  output layer;
* training: Adam, learning rate 5e-4 (no schedule), dropout 0.5, label smoothing 0.2,
  1,000-token batches, exponential moving average of the weights (decay 1e-4; the
  checkpoints hold the average), validation every 200 steps, seed 777;
* test: ``onmt_translate -replace_unk`` (beam 5), English detruecased, detokenised,
  sacreBLEU (13a) against the raw references; chrF beside it.

What differs: the paper's fork picks its checkpoint by early stopping over up to 20,000
steps; here the budget ends first, so the last checkpoint (saved every
``--save-every`` steps, at most that many steps before the deadline) is scored. The time
per step is logged so the full 20,000 steps can be costed.

Run (one direction per process; ``--threads`` sets torch's threads)::

    .venv/bin/python bench/peer_chren_onmt.py --src chr --tgt en --minutes 45 --threads 1 \\
        --out runs/peer_chren_onmt/chr_en
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mt.data.fetch import resolve_data_dir  # noqa: E402
from mt.evaluate import corpus_scores  # noqa: E402
from mt.fileio import atomic_write_json, atomic_write_text  # noqa: E402

SPLITS = ("train", "dev", "test")


def moses_prepare(data: Path, out: Path) -> None:
    """Tokenise every split as ``tokenizer.perl -l en`` does, for both languages, and truecase
    the English with a model trained on the training English; writes ``{split}.true.{lang}``."""
    from sacremoses import MosesTokenizer, MosesTruecaser

    tok = MosesTokenizer(lang="en")
    tokenised = {
        (split, lang): [tok.tokenize(line.strip(), return_str=True) for line in open(data / f"{split}.{lang}", encoding="utf-8")]
        for split in SPLITS for lang in ("chr", "en")
    }
    truecaser = MosesTruecaser()
    truecaser.train([line.split() for line in tokenised["train", "en"]], save_to=None)
    for (split, lang), lines in tokenised.items():
        if lang == "en":
            lines = [truecaser.truecase(line, return_str=True) for line in lines]
        atomic_write_text(out / f"{split}.true.{lang}", "\n".join(lines) + "\n")


def write_vocab(train: Path, path: Path, cap: int = 50_000) -> int:
    """Every training word by frequency, at most ``cap`` (OpenNMT-py 1.x's default size)."""
    counts = Counter(w for line in open(train, encoding="utf-8") for w in line.split())
    words = counts.most_common(cap)
    atomic_write_text(path, "".join(f"{w}\t{n}\n" for w, n in words))
    return len(words)


def train_config(out: Path, src: str, tgt: str, save_every: int) -> Path:
    """OpenNMT-py 3.0.4's YAML for the paper's settings (option names as 3.0.4 spells them)."""
    cfg = {
        "data": {
            "corpus_1": {"path_src": str(out / f"train.true.{src}"), "path_tgt": str(out / f"train.true.{tgt}"),
                         "transforms": ["filtertoolong"]},
            "valid": {"path_src": str(out / f"dev.true.{src}"), "path_tgt": str(out / f"dev.true.{tgt}")},
        },
        "src_seq_length": 80, "tgt_seq_length": 80,
        "src_vocab": str(out / f"vocab.{src}"), "tgt_vocab": str(out / f"vocab.{tgt}"),
        "src_vocab_size": 50_000, "tgt_vocab_size": 50_000,
        "save_model": str(out / "model"), "save_checkpoint_steps": save_every, "keep_checkpoint": 2,
        "encoder_type": "brnn", "decoder_type": "rnn", "rnn_type": "LSTM", "layers": 2,
        "hidden_size": 1024, "word_vec_size": 1024, "share_decoder_embeddings": True,
        "optim": "adam", "learning_rate": 0.0005, "dropout": [0.5], "label_smoothing": 0.2,
        "batch_size": 1000, "batch_type": "tokens", "valid_steps": 200, "train_steps": 20_000,
        "early_stopping": 10, "average_decay": 1e-4, "seed": 777, "report_every": 10,
        "world_size": 1, "num_workers": 0,
    }
    path = out / "onmt_train.yaml"
    atomic_write_json(path, cfg)  # JSON is YAML
    return path


def onmt_env(onmt_path: str, threads: int) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=onmt_path, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def run_onmt(entry: str, args: list[str], env: dict[str, str], log: Path, deadline: float | None = None) -> int:
    """Run ``onmt.bin.<entry>.main`` in a child, its output in ``log``; stopped at ``deadline``."""
    # 3.0.4 loads its checkpoints with torch.load's defaults, which torch >= 2.6 makes refuse
    # the argparse.Namespace in them: allow exactly that class (bench/peer_onmt.py does the same).
    code = ("import argparse, sys, torch; torch.serialization.add_safe_globals([argparse.Namespace]); "
            f"sys.argv = ['onmt_{entry}'] + sys.argv[1:]; from onmt.bin.{entry} import main; main()")
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None:
            if deadline is not None and time.time() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                return 0
            time.sleep(2)
    return proc.returncode


def last_checkpoint(out: Path) -> tuple[int, Path]:
    """The newest complete checkpoint: the deadline may cut a save short, and torch.save's zip
    archive only gets its closing directory at the end, so a cut file is not a zip file (this
    checks it without reading the gigabyte that ``onmt_translate`` loads next)."""
    found = sorted(((int(m.group(1)), p) for p in out.glob("model_step_*.pt")
                    if (m := re.fullmatch(r"model_step_(\d+)\.pt", p.name))), reverse=True)
    for step, path in found:
        if zipfile.is_zipfile(path):
            return step, path
    raise SystemExit(f"no complete checkpoint in {out}: did training reach --save-every steps?")


def step_times(log: Path) -> list[tuple[int, float]]:
    """(step, seconds since start) from OpenNMT-py's ``Step N/20000; ...; S sec`` report lines."""
    pat = re.compile(r"Step\s+(\d+)/\s*\d+;.*?;\s+(\d+)\s+sec")
    return [(int(m.group(1)), float(m.group(2))) for line in open(log, encoding="utf-8") if (m := pat.search(line))]


def detok(hyp_file: Path, tgt: str) -> list[str]:
    from sacremoses import MosesDetokenizer, MosesDetruecaser

    detok, detrue = MosesDetokenizer(lang="en"), MosesDetruecaser()
    lines = []
    for line in open(hyp_file, encoding="utf-8"):
        tokens = detrue.detruecase(line.strip()) if tgt == "en" else line.split()
        lines.append(detok.detokenize(tokens))
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", choices=["chr", "en"], required=True)
    p.add_argument("--tgt", choices=["chr", "en"], required=True)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the training")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=25, help="checkpoint every N steps")
    p.add_argument("--out", required=True)
    p.add_argument("--onmt-path", default=str(REPO / ".bench-deps/onmt"))
    args = p.parse_args(argv)
    if args.src == args.tgt:
        p.error("--src and --tgt must differ")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data, out = resolve_data_dir(None) / "chren", Path(args.out)
    missing = [f"{data / split}.{lang}" for split in SPLITS for lang in ("chr", "en") if not (data / f"{split}.{lang}").is_file()]
    if missing:
        raise SystemExit(f"ChrEn data not found: {missing[0]} (set MT_DATA_DIR to the directory holding chren/)")
    if not (Path(args.onmt_path) / "onmt").is_dir():
        raise SystemExit(f"--onmt-path {args.onmt_path}: no OpenNMT-py there; install it as bench/peer_onmt.py says")
    out.mkdir(parents=True, exist_ok=True)
    env = onmt_env(args.onmt_path, args.threads)
    if not (out / "test.true.en").exists():
        moses_prepare(data, out)
    vocab = {lang: write_vocab(out / f"train.true.{lang}", out / f"vocab.{lang}") for lang in ("chr", "en")}
    cfg = train_config(out, args.src, args.tgt, args.save_every)
    start = time.time()
    rc = run_onmt("train", ["-config", str(cfg)], env, out / "train.log", deadline=start + args.minutes * 60)
    train_minutes = (time.time() - start) / 60
    if rc:
        raise SystemExit(f"onmt_train failed (exit {rc}); see {out / 'train.log'}")
    step, ckpt = last_checkpoint(out)
    hyp = out / f"test.hyp.{args.tgt}"
    t0 = time.time()
    rc = run_onmt("translate", ["-model", str(ckpt), "-src", str(out / f"test.true.{args.src}"), "-output", str(hyp),
                                "-replace_unk", "-beam_size", "5", "-gpu", "-1"], env, out / "translate.log")
    if rc:
        raise SystemExit(f"onmt_translate failed (exit {rc}); see {out / 'translate.log'}")
    refs = [line.rstrip("\n") for line in open(data / f"test.{args.tgt}", encoding="utf-8")]
    scores = corpus_scores(detok(hyp, args.tgt), refs, lang=args.tgt)
    times = step_times(out / "train.log")
    result = {
        "direction": f"{args.src}-{args.tgt}", "budget_minutes": args.minutes, "train_minutes": round(train_minutes, 2),
        "threads": args.threads, "checkpoint_step": step, "last_logged_step": times[-1][0] if times else 0,
        # the slope after the first report, which also holds start-up (data, vocabulary, model)
        "seconds_per_step": round((times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0]), 2) if len(times) > 1 else None,
        "vocab": vocab, "translate_minutes": round((time.time() - t0) / 60, 2), "test": scores,
    }
    if result["seconds_per_step"]:
        result["hours_for_20000_steps"] = round(result["seconds_per_step"] * 20_000 / 3600, 1)
    atomic_write_json(out / "result.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
