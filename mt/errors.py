"""The user-error base class: every mistake in a user's input (a flag, a config field, a
file, a model directory) raises a subclass, and ``mt.cli.main`` prints it as one line and
exits 2 instead of showing a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message names the flag, field, file or line."""


class ConfigError(UserError, ValueError):
    """A configuration value (YAML field, CLI flag, ``config.json`` field) is missing,
    unknown, of the wrong type or out of range."""
