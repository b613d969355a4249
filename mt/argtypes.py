"""Value types and shared flags of the command line: ``mt/cli.py`` and the modules that add
their own subcommands to it (``mt/recipe.py``, ``mt/marian.py``, ``mt/export.py``).

A bad value raises ``argparse.ArgumentTypeError``, which ``mt.cli.ArgumentParser`` prints as
one line naming the flag (``argument --threads: must be >= 1, got 0``).
"""

from __future__ import annotations

import argparse
import math


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_overrides(p: argparse.ArgumentParser, what: str = "the config") -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``: fields of an experiment config."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a field of {what}, e.g. --set train.max_steps=100 (repeatable)")  # fmt: skip
