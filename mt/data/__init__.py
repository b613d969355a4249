"""Data pipeline: read, fetch, clean, normalise/tokenise, binarise and batch corpora."""

from mt.errors import UserError


class DataError(UserError, ValueError):
    """Input data is unusable: misaligned, undecodable, empty after cleaning, unwritable output..."""
