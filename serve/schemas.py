"""Request/response models of the HTTP API (pydantic), with the limits from ``ServerSettings``.

The limits are baked into the models so that validation and the OpenAPI document (``/docs``)
agree; :func:`build_schemas` therefore makes the request classes per settings.

Text fields reject control characters other than tab/newline/carriage return and lone
surrogates (possible through JSON ``\\ud800`` escapes): neither is translatable text, and a
lone surrogate cannot even be encoded to UTF-8 for SentencePiece.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mt.config import DecodeOptions
from serve.settings import ServerSettings

_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def check_text(value: str) -> str:
    """Reject control characters and lone surrogates, naming the first one and its offset."""
    m = _BAD_CHARS.search(value)
    if m:
        raise ValueError(f"contains control character U+{ord(m.group()):04X} at offset {m.start()}")
    return value


# ---------------------------------------------------------------------------- responses


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer. ``error`` is a one-line message (a string, as LibreTranslate
    clients expect); ``field`` is the offending request field, e.g. ``texts[3]``."""

    error: str
    code: str = Field(description="machine-readable kind, e.g. text_too_long, unknown_model, body_too_large")
    field: Optional[str] = None


class Candidate(BaseModel):
    text: str
    score: Optional[float] = Field(description="length-normalised log-probability (null if not finite)")


class Translation(BaseModel):
    text: str = Field(description="the best translation")
    score: Optional[float] = None
    n_best: Optional[list[Candidate]] = Field(
        default=None, description="all n_best hypotheses, best first (only when n_best > 1)"
    )


class Timings(BaseModel):
    queue_ms: float = Field(description="waiting for the batcher (includes waiting for other batches)")
    decode_ms: float = Field(description="the batched search this request was part of")
    total_ms: float = Field(description="request received to response ready")
    batch_texts: int = Field(description="texts in the batched search (this request's included)")
    batch_requests: int = Field(description="requests merged into that search")


class TranslateResponse(BaseModel):
    model: str
    translations: list[Translation]
    timings: Timings


class ModelInfo(BaseModel):
    name: str
    src_lang: Optional[str] = None
    tgt_lang: Optional[str] = None
    parameters: Optional[int] = None
    default: bool = False


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    models: list[str]


class LTDetection(BaseModel):
    """A detected language, as LibreTranslate reports it."""

    language: str = Field(description="language code, e.g. de")
    confidence: float = Field(ge=0, le=100, description="0..100 (a percentage, as LibreTranslate reports it)")


class LTTranslateResponse(BaseModel):
    """LibreTranslate's answer; with a list ``q``, each field is a list with one entry per text."""

    translatedText: Union[str, list[str]]
    alternatives: Optional[Union[list[str], list[list[str]]]] = Field(
        default=None, description="only when alternatives > 0: other n-best translations, best first, "
        "without the translatedText one and without repeats (so there may be fewer than asked for)")
    detectedLanguage: Optional[Union[LTDetection, list[LTDetection]]] = Field(
        default=None, description="only when source is auto: the language chosen for each text")


class LTLanguage(BaseModel):
    code: str
    name: str
    targets: list[str]


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Schemas:
    """The request classes for one set of limits."""

    TranslateRequest: type[BaseModel]
    LTTranslateRequest: type[BaseModel]
    LTDetectRequest: type[BaseModel]


def decode_field(name: str, limit: Optional[float] = None) -> Any:
    """A request field for ``DecodeOptions.<name>``: its help and bounds (tightened to the
    server's ``limit``), default None (the model's stored default)."""
    meta = {f.name: f.metadata for f in dataclasses.fields(DecodeOptions)}[name]
    high = meta["high"] if limit is None else min(meta["high"], limit)
    bound = {"gt" if meta["low_open"] else "ge": meta["low"], "le": high}
    extra = {"allow_inf_nan": False} if isinstance(meta["low"], float) else {}
    return Field(default=None, description=f"{meta['help']} (default: the model's)", **bound, **extra)


def build_schemas(settings: ServerSettings) -> Schemas:
    """Request models whose field limits come from ``settings``."""
    s = settings
    Text = Annotated[str, Field(max_length=s.max_chars), AfterValidator(check_text)]

    class TranslateRequest(BaseModel):
        """Translate ``texts`` with ``model``; the output keeps the input order."""

        # strict: "5" is not a beam size; forbid: a misspelt option is an error, not a no-op
        model_config = ConfigDict(strict=True, extra="forbid")

        model: Optional[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
            default=None, description="model name from GET /v1/models (default: the first model)"
        )
        texts: list[Text] = Field(min_length=1, max_length=s.max_texts, description=(
            "source texts; each is split into sentences, translated and joined back with its line breaks, "
            f"blank lines and spacing kept (a sentence over {s.max_tokens_per_text} tokens is cut)"))
        format: Literal["text", "html"] = Field(default="text", description=(
            "html: each text is HTML; its tags, comments and scripts are kept as they are, the text between "
            "block tags is translated, inline tags (b, a, span ...) are carried into the translation"))
        beam_size: Optional[int] = decode_field("beam", s.max_beam)
        length_penalty: Optional[float] = decode_field("alpha")
        max_length: Optional[int] = Field(
            default=None, ge=1, le=s.max_output_length,
            description="most output tokens (default: max_len_a * source length + max_len_b, the model's)",
        )
        n_best: Optional[int] = decode_field("n_best", s.max_beam)

        @field_validator("n_best")
        @classmethod
        def _n_best_within_beam(cls, value: Optional[int], info: ValidationInfo) -> Optional[int]:
            beam = info.data.get("beam_size")  # absent when beam_size itself was invalid
            if beam is not None and value is not None and value > beam:
                raise ValueError(f"must not exceed beam_size ({beam}), got {value}")
            return value

    class LTTranslateRequest(BaseModel):
        """LibreTranslate's ``POST /translate`` body (JSON or form-encoded)."""

        # extra fields (e.g. 'secret') are ignored as LibreTranslate does
        model_config = ConfigDict(strict=True, extra="ignore")

        q: Union[Text, Annotated[list[Text], Field(min_length=1, max_length=s.max_texts)]]
        source: Annotated[str, Field(min_length=1, max_length=16)] = Field(
            default="auto", description="language code, or auto: detected among the served languages")
        target: Annotated[str, Field(min_length=1, max_length=16)]
        format: Literal["text", "html"] = "text"
        # the beam must hold alternatives + 1 hypotheses, and the server caps the beam at max_beam
        alternatives: int = Field(default=0, ge=0, le=s.max_beam - 1,
                                  description="how many other n-best translations to return as well")
        api_key: Optional[Annotated[str, Field(max_length=256)]] = None

    class LTDetectRequest(BaseModel):
        """LibreTranslate's ``POST /detect`` body (JSON or form-encoded)."""

        model_config = ConfigDict(strict=True, extra="ignore")

        q: Text
        api_key: Optional[Annotated[str, Field(max_length=256)]] = None

    return Schemas(TranslateRequest=TranslateRequest, LTTranslateRequest=LTTranslateRequest,
                   LTDetectRequest=LTDetectRequest)
