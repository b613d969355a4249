"""The ``mt`` command line: parses arguments and calls one function per subcommand.

Each subcommand's work lives in its own module; imports are lazy so ``mt --help`` is fast
and a server install does not import the trainer.

User errors end in one line on stderr, ``mt <command>: error: <message>``, and exit code 2:
argparse's through :class:`ArgumentParser`, everything else through :func:`main`, which
catches :class:`mt.errors.UserError` (and a missing, unreadable or undecodable file that a
user named). Paths the user names are checked here, before any work starts
(:func:`_check_input`, :func:`_check_output`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Optional

from mt.argtypes import add_overrides, integer, non_negative_int, positive_int


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mt <command>: error: <message>``, exit 2, no usage
    block (``--help`` still shows it). Subparsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # unknown arguments are found by the top-level parser: name the subcommand anyway
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = command_name(ns) if getattr(ns, "command", None) else self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)}\n")
        return ns


def one_line(message: str) -> str:
    """``message`` on one line: its non-empty lines joined with ``; ``."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    out = lines[0] if lines else "unknown error"
    for line in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + line
    return out


# where the two-word commands (mt data fetch, mt import marian, mt recipe run) keep their second word
SUBCOMMAND_DESTS = ("data_command", "import_format", "recipe_command")


def command_name(args: argparse.Namespace) -> str:
    """``mt translate``, ``mt data fetch``: the prefix of the command's error lines."""
    parts = ["mt", args.command]
    for dest in SUBCOMMAND_DESTS:  # the second word of two-word commands
        if getattr(args, dest, None):
            parts.append(getattr(args, dest))
    return " ".join(parts)


# --------------------------------------------------------------------------- boundary checks

# the text files each command reads, as (dest, flag); "-" is stdin
INPUT_FLAGS = {
    "translate": (("input", "--input"),),
    "evaluate": (("src", "--src"), ("ref", "--ref")),
    "score": (("src", "--src"), ("tgt", "--tgt")),
    "shortlist": (("src", "--src"), ("tgt", "--tgt"), ("check_src", "--check-src"), ("check_tgt", "--check-tgt")),
}


def _named_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``[(flag, path)]`` of the input files given to this command."""
    pairs = [(flag, getattr(args, dest, None)) for dest, flag in INPUT_FLAGS.get(args.command, ())]
    return [(flag, str(path)) for flag, path in pairs if path is not None]


def _check_input(flag: str, path: Optional[str]) -> None:
    """A file to read: it exists, is not a directory, and can be opened."""
    from mt.errors import ConfigError, MissingFileError

    if path is None or path == "-":
        return
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{flag} {path}: file not found")
    if p.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory, expected a text file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{flag} {path}: not readable (permission denied)")


def _check_output(flag: str, path: Optional[str]) -> None:
    """A file to write: its directory exists and is writable, and it is not a directory."""
    from mt.errors import ConfigError, MissingFileError

    if path is None or path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory, expected a file name")
    parent = p.parent
    if not parent.is_dir():
        raise MissingFileError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{flag} {path}: not writable (permission denied)")


def _check_output_dir(flag: str, path: str) -> None:
    """A directory to create or replace (its missing parents are created)."""
    from mt.errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path}: exists and is not a directory")
    ancestor = next(a for a in (p.parent, *p.parent.parents) if a.exists())
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {ancestor} is not writable (permission denied)")


def _check_device(device: Optional[str]) -> None:
    """``--device``: a device this machine has (``auto``, ``cpu``, ``cuda[:N]``, ``mps``)."""
    from mt.errors import ConfigError

    if device is None or device == "auto":
        return
    import torch

    expected = "expected auto, cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: {expected}; got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ConfigError(f"--device: {expected}; got {device!r}")


def _check_model_dir(path: str) -> None:
    """``--model``: a directory with the files of a model and a valid ``config.json`` (the
    weights and the text pipeline are checked when it is loaded)."""
    from mt.modelio import check_model_dir, read_model_config

    read_model_config(check_model_dir(path))


def _check_decoding_command(args: argparse.Namespace) -> None:
    """What ``translate`` and ``evaluate`` share: inputs readable, model present, device real."""
    for flag, path in _named_inputs(args):
        _check_input(flag, path)
    _check_model_dir(args.model)
    _check_device(getattr(args, "device", None))


# --------------------------------------------------------------------------- commands


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (see recipes/configs/)")
    add_overrides(p)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from mt.config import ConfigError, load_config
    from mt.data.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    if cfg.data.train is None:
        raise ConfigError(f"{args.config}: data.train: a training corpus is required")
    prepare(cfg, data_dir=args.data_dir, force=args.force)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from mt.data.fetch import fetch_dataset

    print(fetch_dataset(args.name, data_dir=args.data_dir, base_url=args.base_url))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mt.config import load_config
    from mt.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    train(cfg, resume=args.resume)
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from mt.train.checkpoint import average_checkpoints

    _check_output_dir("--out", args.out)
    average_checkpoints(args.run_dir, args.out, last=args.last, inputs=args.inputs)
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from mt.decode.translator import translate_cli

    _check_decoding_command(args)
    _check_output("--output", args.output)
    return translate_cli(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mt.evaluate import evaluate_cli

    _check_decoding_command(args)
    _check_output("--hyp-out", args.hyp_out)
    return evaluate_cli(args)


def _cmd_score(args: argparse.Namespace) -> int:
    from mt.decode.score import score_cli

    _check_decoding_command(args)
    _check_output("--output", args.output)
    return score_cli(args)


def _cmd_shortlist(args: argparse.Namespace) -> int:
    from mt.decode.shortlist import shortlist_cli

    for flag, path in _named_inputs(args):
        _check_input(flag, path)
    _check_model_dir(args.model)
    return shortlist_cli(args)


def _cmd_backtranslate(args: argparse.Namespace) -> int:
    from mt.backtranslate.pipeline import backtranslate_cli

    return backtranslate_cli(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from mt.extras import require

    for module in ("fastapi", "uvicorn", "pydantic"):
        require(module, "mt serve")
    from serve.cli import serve_cli

    return serve_cli(args)


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    """The decoding flags, generated from ``mt.config.DecodeOptions`` (defaults: the model
    directory's stored ones), and the CPU thread flags."""
    from mt.decode.options import add_arguments

    add_arguments(p)
    g = p.add_argument_group("CPU threads")
    g.add_argument("--threads", type=positive_int, default=None, help="torch threads on CPU, shared by the workers")
    g.add_argument(
        "--workers", type=positive_int, default=None,
        help="batches decoded at once on CPU (default: 2 if there are >= 2 threads, else 1); output is identical",
    )


def _port(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {value}")
    return value


def _beam_list(text: str) -> list[int]:
    """``--beam-sweep``: comma-separated beam sizes >= 1 → ``[1, 2, 5, ...]``."""
    beams = [b.strip() for b in text.split(",") if b.strip()]
    if not beams or not all(b.isdigit() and int(b) >= 1 for b in beams):
        raise argparse.ArgumentTypeError(f"expected comma-separated beam sizes >= 1 such as 1,2,5,10; got {text!r}")
    return [int(b) for b in beams]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
    p.add_argument("--last", type=positive_int, default=5, help="how many of the newest checkpoints (default 5)")
    p.add_argument("--inputs", nargs="*", default=None, help="explicit checkpoint directories instead")
    p.set_defaults(func=_cmd_average)

    from mt.marian import add_import_parser  # `mt import marian`; light: torch loads only when it runs

    add_import_parser(sub)

    from mt.export import add_export_parser  # `mt export`; light: torch loads only when it runs

    add_export_parser(sub)

    p = sub.add_parser("translate", help="translate text from stdin or files")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--input", "-i", default="-", help="input file (default: stdin)")
    p.add_argument("--output", "-o", default="-", help="output file (default: stdout)")
    _add_decode_options(p)
    from mt.decode.translator import add_document_arguments

    add_document_arguments(p)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("evaluate", help="translate a test set and score it with sacreBLEU and chrF")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--src", required=True, help="source file (raw text)")
    p.add_argument("--ref", required=True, help="reference file (raw text)")
    p.add_argument("--hyp-out", default=None, help="also write the hypotheses here")
    p.add_argument(
        "--beam-sweep", type=_beam_list, default=None, help="comma-separated beam sizes, e.g. 1,2,5,10,25,50"
    )
    _add_decode_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("score", help="forced-decoding scores of given translations (per sentence, per token)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--tgt", required=True, help="their translations to score, one per line")
    p.add_argument("--output", "-o", default="-", help="TSV: index, log_prob, score, tokens (default: stdout)")
    p.add_argument("--per-token", action="store_true", help="add a column of per-token log-probs (EOS last)")
    from mt.decode.options import add_arguments as add_decode_arguments

    add_decode_arguments(p, ("search", "batch"))
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("shortlist", help="build a model's output shortlist from its training bitext (for --shortlist)")
    p.add_argument("--model", required=True, help="model directory; the shortlist is written into it")
    p.add_argument("--src", required=True, help="training source sentences (raw text, one per line)")
    p.add_argument("--tgt", required=True, help="their translations")
    p.add_argument("--frequent", type=non_negative_int, default=256,
                   help="most frequent target tokens always allowed (256)")
    p.add_argument("--per-source", type=positive_int, default=16, help="candidates per source token, by Dice (16)")
    p.add_argument("--max-lines", type=non_negative_int, default=0, help="use only the first N pairs (0 = all)")
    p.add_argument("--check-src", help="held-out sources: report how much of --check-tgt their shortlists cover")
    p.add_argument("--check-tgt", help="held-out references for --check-src")
    p.set_defaults(func=_cmd_shortlist)

    p = sub.add_parser("backtranslate", help="iterative back-translation rounds")
    _add_config(p)
    p.add_argument("--resume", action="store_true", help="skip stages already finished")
    p.set_defaults(func=_cmd_backtranslate)

    from mt.recipe import add_recipe_parser  # `mt recipe init|run`; light: torch loads only when it runs

    add_recipe_parser(sub)

    from mt.ablate import add_ablate_parser  # `mt ablate SPEC`; light: torch loads only when it runs

    add_ablate_parser(sub)

    p = sub.add_parser("serve", help="HTTP translation server (FastAPI + uvicorn)")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR", help="model dir (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--api-key", default=None, help="require this key (or set MT_API_KEY)")
    # the CLI is the composition root, so it may name the server's knobs (serve/settings.py)
    from serve.settings import add_arguments as add_server_arguments

    add_server_arguments(p)
    p.set_defaults(func=_cmd_serve)
    return parser


def _os_error_message(e: OSError) -> str:
    """``PATH: reason`` for an OSError from opening a file (its own message if it has one)."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _decode_error_message(args: argparse.Namespace, e: UnicodeDecodeError) -> str:
    """Which input was not UTF-8: the first named file with an undecodable line, else stdin."""
    for flag, path in _named_inputs(args):
        if path == "-":
            continue
        try:
            with open(path, "rb") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError as bad:
                        return f"{flag} {path}:{lineno}: invalid UTF-8 at byte {bad.start} of the line"
        except OSError:
            continue
    source = "stdin" if any(path == "-" for _, path in _named_inputs(args)) else "an input file"
    return f"{source}: invalid UTF-8 ({e.reason}, byte 0x{e.object[e.start]:02x})"


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error ends as one line ``mt <command>: error: <message>`` on
    stderr and exit code 2 (argparse errors included, see :class:`ArgumentParser`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from mt.errors import UserError
    from mt.runtime import tune_malloc

    tune_malloc()
    try:
        return args.func(args)
    except UserError as e:
        message = str(e)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        message = _os_error_message(e)  # a file the user named (a path in the config, a flag)
    except UnicodeDecodeError as e:
        message = _decode_error_message(args, e)
    print(f"{command_name(args)}: error: {one_line(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
