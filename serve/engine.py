"""A served model: a name, a ``Translator``, token counting and per-request options.

``create_app`` accepts, per model name, either a ``LoadedModel`` (``mt.modelio``), which gets
wrapped in ``mt.decode.translator.Translator``, or anything with the Translator's interface
(``translate_batch(texts, DecodeOptions)`` plus a ``text`` pipeline), e.g. a prepared Translator
or a test double.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from mt.config import DecodeOptions
from mt.decode.lengths import max_output_len
from mt.decode.options import Hypothesis
from mt.errors import ConfigError
from serve.guard import ApiError


@dataclass(frozen=True)
class RequestOptions:
    """The decoding options a request may set (None: the model's default). Hashable: the
    batcher only merges requests whose options are equal, because one batched search runs
    with one set of options."""

    beam: Optional[int] = None
    alpha: Optional[float] = None
    max_length: Optional[int] = None
    n_best: Optional[int] = None

    def decode_options(self, base: DecodeOptions) -> DecodeOptions:
        """``base`` with this request's values; raises ``ConfigError`` naming the field (as
        the request spells it) when they do not fit together, e.g. ``n_best`` > the beam."""
        changes: dict[str, Any] = {k: v for k, v in (("beam", self.beam), ("alpha", self.alpha),
                                                     ("n_best", self.n_best)) if v is not None}
        if self.max_length is not None:
            # max output length = a * src_len + b, so a fixed cap is a=0, b=cap
            changes.update(max_len_a=0.0, max_len_b=self.max_length)
        try:
            return base.replace(**changes)
        except ConfigError as e:
            raise ConfigError(_request_names(str(e))) from None


def _request_names(message: str) -> str:
    """A decoding-settings error in the request's field names (``n_best: must be <= beam
    (5)`` → ``n_best: must be <= beam_size (5)``)."""
    for name, field in REQUEST_FIELDS.items():
        message = re.sub(rf"\b{field}\b(?=:| \()", name, message)
    return message


# request field -> DecodeOptions field (the HTTP API keeps its established names)
REQUEST_FIELDS = {"beam_size": "beam", "length_penalty": "alpha", "n_best": "n_best"}


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
        # Translator-likes without the cancellation hook (test doubles) decode to the end
        method = getattr(translator, "translate_batch", None)
        self.cancellable = method is not None and "should_stop" in inspect.signature(method).parameters

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

    def options_for(self, opts: RequestOptions) -> DecodeOptions:
        """This model's decoding settings for a request; an :class:`ApiError` 422 naming the
        request field when the request's values do not fit them (e.g. n_best > the beam)."""
        try:
            return opts.decode_options(self.base_options)
        except ConfigError as e:
            raise ApiError(422, "invalid_options", str(e), str(e).split(":")[0]) from None

    def text_costs(self, lengths: list[int], opts: RequestOptions) -> list[int]:
        """The most decoder row-steps each text may take: rows (the beam, or ``n_best``
        samples) × (maximum output length + 1 for the final EOS step), the maximum output
        length being the request's ``max_length`` or the model's ``a * src_len + b``, capped
        by its positions. ``lengths``: source tokens per text (:meth:`count_tokens`). This
        bounds the work (and the time) a request can cause before it is queued, whatever
        the model does; 422 as :meth:`options_for` when the options do not fit."""
        d = self.options_for(opts)
        rows = d.n_best if d.sampling in ("topk", "topp") else d.beam
        positions = self.max_positions or 1 << 30  # a double without a model: no cap
        return [rows * (max_output_len(n, d.max_len_a, d.max_len_b, positions) + 1) for n in lengths]

    def translate(self, texts: list[str], opts: RequestOptions,
                  should_stop: Optional[Callable[[], bool]] = None) -> list[list[Hypothesis]]:  # fmt: skip
        """Decode ``texts`` with the request's options. ``should_stop``: asked once per decoding
        step; True raises ``mt.decode.search.DecodeCancelled`` (ignored by engines whose
        translator has no such hook)."""
        extra = {"should_stop": should_stop} if should_stop is not None and self.cancellable else {}
        with torch.inference_mode():
            return self.translator.translate_batch(list(texts), opts.decode_options(self.base_options), **extra)


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


def build_engine(name: str, obj: Any, decode: Optional[dict[str, Any]] = None, decoding: bool = True) -> ModelEngine:
    """Wrap a ``LoadedModel``, a ``Translator``-like object or a ``ModelEngine`` under ``name``.

    A ``LoadedModel`` decodes with its directory's stored decoding defaults with ``decode``
    (field → value, the server's flags) on top, through the same variant builder as
    ``mt translate`` (:meth:`mt.decode.translator.Translator.from_loaded`). ``decoding=False``:
    an engine that only counts tokens (the server process when decoding processes decode)."""
    if isinstance(obj, ModelEngine):
        obj.name = name
        return obj
    meta = getattr(obj, "meta", None) or {}
    if hasattr(obj, "translate_batch"):  # a Translator (or a double): use as is
        base = getattr(obj, "options", None) or DecodeOptions()
        return ModelEngine(name, obj, obj.text, meta, getattr(obj, "model", None), base)
    if hasattr(obj, "model") and hasattr(obj, "text"):  # a LoadedModel
        from mt.decode.translator import Translator

        base = loaded_options(obj, decode)
        if base.shortlist and obj.path is None:
            raise ValueError(f"model {name!r}: --shortlist needs the model's directory")
        translator = Translator.from_loaded(obj, base, workers=1) if decoding else None
        return ModelEngine(name, translator, obj.text, meta, obj.model, base)
    raise TypeError(f"model {name!r}: expected a LoadedModel or a Translator, got {type(obj).__name__}")


def loaded_options(loaded: Any, decode: Optional[dict[str, Any]] = None) -> DecodeOptions:
    """The decoding settings of a ``LoadedModel``: its directory's stored defaults with the
    server's ``decode`` (field → value) on top."""
    from mt.decode.options import apply
    from mt.modelio import stored_decode_options

    return apply(stored_decode_options(loaded.path) if loaded.path else DecodeOptions(), decode or {})


def finite(x: float) -> Optional[float]:
    """JSON has no infinities/NaN: report those scores as null."""
    return float(x) if x is not None and math.isfinite(x) else None
