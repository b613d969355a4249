"""The decoding settings on the command line, and what decoding yields.

:class:`mt.config.DecodeOptions` defines every decoding setting once (type, default, bounds,
help); :func:`add_arguments` turns its fields into flags for ``mt translate`` / ``evaluate``
/ ``serve`` and back-translation generation, and :func:`from_args` reads them back on top of
a base (a model directory's stored defaults), so flags override only what the user gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from mt.config import DecodeOptions
from mt.errors import ConfigError

GROUPS = ("search", "batch", "model")


@dataclass
class Hypothesis:
    """One output. ``tokens``: target ids without the final EOS; ``score``: summed
    log-probability (EOS included) after length normalisation (see :mod:`mt.decode.lengths`);
    ``log_prob``: the same before normalisation."""

    text: str
    tokens: list[int] = field(default_factory=list)
    score: float = 0.0
    log_prob: float = 0.0


def flag(name: str) -> str:
    """The CLI flag of field ``name``: ``max_len_a`` → ``--max-len-a``."""
    return "--" + name.replace("_", "-")


def _fields(groups: tuple[str, ...]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(DecodeOptions) if f.metadata["group"] in groups]


def add_arguments(parser: argparse.ArgumentParser, groups: tuple[str, ...] = GROUPS,
                  defaults: DecodeOptions | None = None) -> None:
    """One flag per field of ``groups`` (help, type, choices from the field). Every default is
    None, meaning "not given": :func:`from_args` then keeps the base's value. ``defaults`` is
    only shown in the help (``DecodeOptions()`` if None)."""
    shown = defaults or DecodeOptions()
    hints = typing.get_type_hints(DecodeOptions)
    g = parser.add_argument_group("decoding (defaults: the model directory's, else these)")
    for f in _fields(groups):
        m, default = f.metadata, getattr(shown, f.name)
        if hints[f.name] is bool:
            name = f.name if not default else "no_" + f.name  # --int8 / --no-pack
            g.add_argument(flag(name), dest=f.name, action="store_const", const=not default, default=None,
                           help=m["help"])
            continue
        kind = hints[f.name]
        g.add_argument(flag(f.name), dest=f.name, type=kind, default=None, choices=m["choices"] or None,
                       metavar=None if m["choices"] else kind.__name__.upper(),
                       help=f"{m['help']} (default {default})")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding fields the user gave as flags (the others are None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeOptions)
            if getattr(args, f.name, None) is not None}


def from_args(args: argparse.Namespace, base: DecodeOptions | None = None, **changes: Any) -> DecodeOptions:
    """``base`` (default ``DecodeOptions()``) with the flags the user gave, then ``changes``;
    an invalid value raises :class:`ConfigError` naming its flag."""
    return apply(base or DecodeOptions(), {**given(args), **changes})


def apply(base: DecodeOptions, values: dict[str, Any]) -> DecodeOptions:
    """``base`` with ``values`` (field → value); errors name the field's flag."""
    try:
        return base.replace(**values)
    except ConfigError as e:
        raise ConfigError(_name_flag(str(e))) from None
    except TypeError as e:  # an unknown field name
        raise ConfigError(f"decoding settings: {e}") from None


def check(values: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the flag if ``values`` cannot be decoding settings."""
    apply(DecodeOptions(), values)


def _name_flag(message: str) -> str:
    """``beam: must be >= 1`` → ``--beam: must be >= 1`` (the field named first)."""
    name, sep, rest = message.partition(":")
    return flag(name) + sep + rest if sep and name in {f.name for f in dataclasses.fields(DecodeOptions)} else message
