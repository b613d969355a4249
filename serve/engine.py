"""A served model: a name, a ``Translator``, token counting and per-request options.

``create_app`` accepts, per model name, either a ``LoadedModel`` (``mt.modelio``), which gets
wrapped in ``mt.decode.translator.Translator``, or anything with the Translator's interface
(``translate(texts, DecodeOptions)`` plus a ``text`` pipeline), e.g. a prepared Translator
or a test double.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from mt.decode.options import DecodeOptions, Hypothesis


@dataclass(frozen=True)
class RequestOptions:
    """The decoding options a request may set. Hashable: the batcher only merges requests
    whose options are equal, because one batched search runs with one set of options."""

    beam: int
    alpha: float
    max_length: Optional[int]
    n_best: int

    def decode_options(self, base: DecodeOptions) -> DecodeOptions:
        changes: dict[str, Any] = {"beam": self.beam, "alpha": self.alpha, "n_best": self.n_best}
        if self.max_length is not None:
            # max output length = a * src_len + b, so a fixed cap is a=0, b=cap
            changes.update(max_len_a=0.0, max_len_b=self.max_length)
        return base.replace(**changes)


class ModelEngine:
    """One model as the server sees it. ``translate`` runs in a batcher worker thread (or in a
    decoding process, which builds its own engines: ``serve/processes.py``)."""

    def __init__(self, name: str, translator: Any, text: Any, meta: Optional[dict[str, Any]] = None,
                 model: Optional[torch.nn.Module] = None, base_options: Optional[DecodeOptions] = None) -> None:
        self.name = name
        self.translator = translator
        self.text = text
        self.meta = dict(meta or {})
        self.model = model
        self.base_options = base_options or DecodeOptions()
        self.src_lang: Optional[str] = self.meta.get("src_lang") or getattr(text, "src_lang", None)
        self.tgt_lang: Optional[str] = self.meta.get("tgt_lang") or getattr(text, "tgt_lang", None)

    @property
    def max_positions(self) -> Optional[int]:
        cfg = getattr(self.model, "cfg", None)
        return getattr(cfg, "max_positions", None)

    @property
    def parameters(self) -> Optional[int]:
        if self.model is not None:
            return sum(p.numel() for p in self.model.parameters())
        return self.meta.get("parameters")

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Source tokens per text, exactly as the decoder will see them (normalised + spm)."""
        return [len(ids) for ids in self.text.encode_source(list(texts))]

    def translate(self, texts: list[str], opts: RequestOptions) -> list[list[Hypothesis]]:
        with torch.inference_mode():
            return self.translator.translate(list(texts), opts.decode_options(self.base_options))


def default_name(obj: Any, path: Optional[str | Path] = None) -> str:
    """``src-tgt`` from the model's metadata, else the directory name."""
    meta = getattr(obj, "meta", None) or {}
    text = getattr(obj, "text", None)
    src = meta.get("src_lang") or getattr(text, "src_lang", None)
    tgt = meta.get("tgt_lang") or getattr(text, "tgt_lang", None)
    if src and tgt:
        return f"{src}-{tgt}"
    if path is not None:
        return Path(path).resolve().name
    raise ValueError("model has no languages in its metadata; give it a name (NAME=DIR)")


def build_engine(
    name: str,
    obj: Any,
    base_options: Optional[DecodeOptions] = None,
    pack: bool = True,
    int8: bool = False,
    dtype: str = "fp32",
    shortlist: bool = False,
) -> ModelEngine:
    """Wrap a ``LoadedModel``, a ``Translator``-like object or a ``ModelEngine`` under ``name``.

    A ``LoadedModel`` is decoded by :func:`mt.decode.translator.decoding_model` of it: ``int8``
    quantised or cast to ``dtype``, with oneDNN-packed weights on CPU when ``pack``; with
    ``shortlist``, over its directory's output shortlist (``mt shortlist``). An engine that
    only counts tokens (the server process when decoding processes decode) needs none of this:
    ``pack=False`` and the defaults."""
    if isinstance(obj, ModelEngine):
        obj.name = name
        return obj
    meta = getattr(obj, "meta", None) or {}
    if hasattr(obj, "translate"):  # a Translator (or a double): use as is
        return ModelEngine(name, obj, obj.text, meta, getattr(obj, "model", None), base_options)
    if hasattr(obj, "model") and hasattr(obj, "text"):  # a LoadedModel
        from mt.decode.shortlist import Shortlist
        from mt.decode.translator import Translator, decoding_model

        try:
            device = next(obj.model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        model = obj.model
        if not model.training:
            model = decoding_model(model, device, int8=int8, dtype=dtype, pack=pack)
        lexicon = None
        if shortlist:
            if getattr(obj, "path", None) is None:
                raise ValueError(f"model {name!r}: --shortlist needs the model's directory")
            lexicon = Shortlist.load(obj.path)
        translator = Translator(model, obj.text, device, shortlist=lexicon)
        return ModelEngine(name, translator, obj.text, meta, obj.model, base_options)
    raise TypeError(f"model {name!r}: expected a LoadedModel or a Translator, got {type(obj).__name__}")


def finite(x: float) -> Optional[float]:
    """JSON has no infinities/NaN: report those scores as null."""
    return float(x) if x is not None and math.isfinite(x) else None
