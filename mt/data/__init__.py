"""Data pipeline: read, fetch, clean, normalise/tokenise, binarise and batch corpora."""


class DataError(ValueError):
    """Input data is unusable: misaligned, undecodable, empty after cleaning, unwritable output..."""
