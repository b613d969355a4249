"""Decoding: search (greedy/beam), sampling, length normalisation, and the text-level
:class:`Translator`. See each module's docstring; the public names are re-exported here."""

from mt.decode.options import DecodeOptions, Hypothesis
from mt.decode.translator import Translator, generate

__all__ = ["DecodeOptions", "Hypothesis", "Translator", "generate"]
