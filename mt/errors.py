"""The user-error base class: every mistake in a user's input (a flag, a config field, a
file, a model directory) raises a subclass, and ``mt.cli.main`` prints it as one line and
exits 2 instead of showing a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message names the flag, field, file or line."""


class ConfigError(UserError, ValueError):
    """A configuration value (YAML field, CLI flag, ``config.json`` field) is missing,
    unknown, of the wrong type or out of range."""


class ModelDirError(UserError, ValueError):
    """A model directory (``config.json``, ``model.safetensors``, ``text.json``, the
    SentencePiece files) is damaged or inconsistent; the message names the file."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named (or one that it must contain, such as a model
    directory's ``config.json``) does not exist. Also a ``FileNotFoundError``, as callers
    that check for missing files expect."""
