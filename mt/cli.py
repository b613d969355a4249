"""The ``mt`` command line: parses arguments and calls one function per subcommand.

Each subcommand's work lives in its own module; imports are lazy so ``mt --help`` is fast
and a server install does not import the trainer.
"""

from __future__ import annotations

import argparse
import sys


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (see recipes/configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.max_steps=100 (repeatable)",
    )


def _cmd_prepare(args: argparse.Namespace) -> int:
    from mt.config import load_config
    from mt.data import DataError
    from mt.data.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    try:
        prepare(cfg, data_dir=args.data_dir, force=args.force)
    except DataError as e:
        print(f"mt prepare: error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from mt.data import DataError
    from mt.data.fetch import fetch_dataset

    try:
        path = fetch_dataset(args.name, data_dir=args.data_dir, base_url=args.base_url)
    except DataError as e:
        print(f"mt data fetch: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mt.config import load_config
    from mt.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    train(cfg, resume=args.resume)
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from mt.train.checkpoint import average_checkpoints

    average_checkpoints(args.run_dir, args.out, last=args.last, inputs=args.inputs)
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from mt.decode.translator import translate_cli

    return translate_cli(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mt.evaluate import evaluate_cli

    return evaluate_cli(args)


def _cmd_shortlist(args: argparse.Namespace) -> int:
    from mt.decode.shortlist import shortlist_cli

    return shortlist_cli(args)


def _cmd_backtranslate(args: argparse.Namespace) -> int:
    from mt.backtranslate.pipeline import backtranslate_cli

    return backtranslate_cli(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from serve.app import serve_cli

    return serve_cli(args)


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy (default 5)")
    g.add_argument(
        "--length-norm",
        choices=["avg", "gnmt", "none"],
        default="avg",
        help="avg: score/len^alpha; gnmt: score/((5+len)/6)^alpha; none (default avg)",
    )
    g.add_argument("--alpha", type=float, default=1.0, help="length normalisation exponent (default 1.0)")
    g.add_argument("--max-len-a", type=float, default=1.2, help="max output length = a*src_len + b")
    g.add_argument("--max-len-b", type=int, default=10)
    g.add_argument("--min-len", type=int, default=1, help="EOS is blocked before this many tokens")
    g.add_argument("--no-repeat-ngram", type=int, default=0, help="block repeated n-grams of this size")
    g.add_argument("--unk-penalty", type=float, default=0.0, help="subtracted from the unknown token's log-prob")
    g.add_argument(
        "--sampling",
        choices=["none", "topk", "topp", "beam_noise"],
        default="none",
        help="sample instead of searching (for back-translation)",
    )
    g.add_argument("--topk", type=int, default=10)
    g.add_argument("--topp", type=float, default=0.9)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--max-tokens", type=int, default=4096, help="source tokens per decoding batch")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=_positive_int, default=None, help="torch threads on CPU, shared by the workers")
    g.add_argument(
        "--workers", type=_positive_int, default=None,
        help="batches decoded at once on CPU (default: 2 if there are >= 2 threads, else 1); output is identical",
    )
    g.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of linear layers (CPU)")
    g.add_argument(
        "--no-pack", action="store_true",
        help="CPU: multiply by the stored weights (F.linear) instead of oneDNN-packed copies (slower, same tokens)",
    )
    g.add_argument(
        "--shortlist", action="store_true",
        help="compute logits only for the batch's likely target tokens (MODEL/shortlist.safetensors, "
        "from `mt shortlist`): faster, approximate, not batch-invariant",
    )
    g.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="weights and activations for decoding (bf16/fp16: for GPUs; scores stay fp32)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mt",
        description="Neural machine translation: prepare data, train, decode, back-translate, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prepare", help="fetch, clean, train SentencePiece and binarise a corpus")
    _add_config(p)
    p.add_argument("--data-dir", default=None, help="raw data directory (default: $MT_DATA_DIR or the cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("data", help="data utilities (fetch)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a public dataset into the data directory")
    f.add_argument("name", choices=["multi30k"])
    f.add_argument("--data-dir", default=None, help="target directory (default: $MT_DATA_DIR or the cache)")
    f.add_argument("--base-url", default=None, help="mirror to download from (default: the dataset's GitHub)")
    f.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("train", help="train a model (single process, or under torchrun for DDP)")
    _add_config(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("average", help="average the last N checkpoints into a model directory")
    p.add_argument("run_dir", help="training run directory")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--last", type=int, default=5, help="how many of the newest checkpoints (default 5)")
    p.add_argument("--inputs", nargs="*", default=None, help="explicit checkpoint directories instead")
    p.set_defaults(func=_cmd_average)

    p = sub.add_parser("translate", help="translate text from stdin or files")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--input", "-i", default="-", help="input file (default: stdin)")
    p.add_argument("--output", "-o", default="-", help="output file (default: stdout)")
    p.add_argument("--n-best", type=int, default=1, help="write the n best as TSV: index, score, text")
    _add_decode_options(p)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("evaluate", help="translate a test set and score it with sacreBLEU and chrF")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--src", required=True, help="source file (raw text)")
    p.add_argument("--ref", required=True, help="reference file (raw text)")
    p.add_argument("--hyp-out", default=None, help="also write the hypotheses here")
    p.add_argument(
        "--beam-sweep", default=None, help="comma-separated beam sizes, e.g. 1,2,5,10,25,50"
    )
    _add_decode_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("shortlist", help="build a model's output shortlist from its training bitext (for --shortlist)")
    p.add_argument("--model", required=True, help="model directory; the shortlist is written into it")
    p.add_argument("--src", required=True, help="training source sentences (raw text, one per line)")
    p.add_argument("--tgt", required=True, help="their translations")
    p.add_argument("--frequent", type=_non_negative_int, default=256,
                   help="most frequent target tokens always allowed (256)")
    p.add_argument("--per-source", type=_positive_int, default=16, help="candidates per source token, by Dice (16)")
    p.add_argument("--max-lines", type=_non_negative_int, default=0, help="use only the first N pairs (0 = all)")
    p.add_argument("--check-src", help="held-out sources: report how much of --check-tgt their shortlists cover")
    p.add_argument("--check-tgt", help="held-out references for --check-src")
    p.set_defaults(func=_cmd_shortlist)

    p = sub.add_parser("backtranslate", help="iterative back-translation rounds")
    _add_config(p)
    p.add_argument("--resume", action="store_true", help="skip stages already finished")
    p.set_defaults(func=_cmd_backtranslate)

    p = sub.add_parser("serve", help="HTTP translation server (FastAPI + uvicorn)")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR", help="model dir (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require this key (or set MT_API_KEY)")
    # the CLI is the composition root, so it may name the server's knobs (serve/settings.py)
    from serve.settings import add_arguments as add_server_arguments

    add_server_arguments(p)
    p.set_defaults(func=_cmd_serve)
    return parser


def _domain_errors() -> tuple[type[Exception], ...]:
    """Errors that carry a user-facing message (bad data, damaged checkpoint): print, exit 2."""
    from mt.data import DataError
    from mt.train.checkpoint import CheckpointError

    return (DataError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from mt.config import ConfigError
    from mt.runtime import tune_malloc

    tune_malloc()
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, *_domain_errors()) as e:
        print(f"mt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
