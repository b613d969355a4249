"""LibreTranslate compatibility: ``POST /translate`` and ``GET /languages``.

They follow LibreTranslate's API so its clients work unchanged: bodies are JSON or
form-encoded, the API key may come in the body, ``source`` may be ``auto``.
``format: "html"`` translates the text between tags and keeps the markup byte-for-byte;
like any segment-wise approach, an inline tag (``<b>``) splits a sentence into separately
translated pieces.
"""
# No ``from __future__ import annotations``: FastAPI must resolve the endpoint annotations.

import asyncio
import contextlib
import html
import re
from typing import Any, Optional, Sequence
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from pydantic import ValidationError

from serve.engine import RequestOptions
from serve.guard import ApiError, check_api_key, json_loads_strict, provided_key, validation_error
from serve.schemas import ErrorResponse, LTLanguage, LTTranslateResponse
from serve.state import ERRORS, ServerState

Pairs = dict[str, tuple[Optional[str], Optional[str]]]  # model name -> (source, target) language

LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}

BODY_TYPES = ("application/json", "application/x-www-form-urlencoded")
TRANSLATE_OPENAPI = {  # the body is read by hand (two content types), so describe it here
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"$ref": "#/components/schemas/LTTranslateRequest"}} for t in BODY_TYPES},
    }
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def find_pair(pairs: Pairs, source: str, target: str) -> Optional[str]:
    """Model name for ``source``→``target`` (``source="auto"``: the only model into ``target``)."""
    if source == "auto":
        names = [n for n, (_, t) in pairs.items() if t == target]
        return names[0] if len(names) == 1 else None
    for name, (s, t) in pairs.items():
        if s == source and t == target:
            return name
    return None


# ---------------------------------------------------------------------------- HTML

# a tag, a comment, a doctype/processing instruction; script/style bodies are kept whole
_MARKUP = re.compile(r"(<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->|<[^>]*>)", re.S | re.I)


def split_html(doc: str) -> tuple[list[str], list[int]]:
    """``(parts, text_indices)``: ``"".join(parts) == doc``; ``parts[i]`` for ``i`` in
    ``text_indices`` are text runs worth translating (not markup, not only whitespace)."""
    parts = _MARKUP.split(doc)
    return parts, [i for i in range(0, len(parts), 2) if parts[i].strip()]


def merge_html(docs: Sequence[str], translations: Sequence[str]) -> list[str]:
    """Put translated runs (in :func:`html_runs` order) back into the markup of ``docs``.

    Runs were entity-decoded for translation, so the output is escaped again; each run keeps
    its leading/trailing whitespace so the layout survives.
    """
    out = iter(translations)
    result = []
    for parts, idx in map(split_html, docs):
        parts = list(parts)
        for i in idx:
            raw = parts[i]
            lead = raw[: len(raw) - len(raw.lstrip())]
            trail = raw[len(raw.rstrip()):]
            parts[i] = lead + html.escape(next(out), quote=False) + trail
        result.append("".join(parts))
    return result


def html_runs(docs: Sequence[str]) -> list[str]:
    """The text runs of ``docs`` to translate, entity-decoded (for counting and limits)."""
    return [html.unescape(parts[i].strip()) for parts, idx in map(split_html, docs) for i in idx]


# ---------------------------------------------------------------------------- request bodies


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def form_fields(body: bytes) -> dict[str, Any]:
    """A form-encoded body as a dict; a repeated ``q`` is a list (several texts)."""
    try:
        # BodyGuard checked the raw body is UTF-8; this checks the %-escaped bytes
        items = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_utf8", f"form field is not valid UTF-8 (offset {e.start})") from None
    data: dict[str, Any] = {}
    for k, v in items:
        if k == "q" and k in data:
            data[k] = (data[k] if isinstance(data[k], list) else [data[k]]) + [v]
        else:
            data[k] = v
    return data


async def read_body(request: Request) -> dict[str, Any]:
    """A LibreTranslate body: JSON or form-encoded (what LibreTranslate clients send)."""
    body = await request.body()
    if not body:
        return {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return form_fields(body)
    if ctype in ("application/json", ""):
        data = json_loads_strict(body)
        if not isinstance(data, dict):
            raise ApiError(400, "wrong_type", f"request body must be a JSON object (got {type(data).__name__})")
        return data
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {ctype!r}: send application/json or application/x-www-form-urlencoded")


# ---------------------------------------------------------------------------- routes


async def translate_docs(state: ServerState, name: str, docs: list[str], as_html: bool) -> list[str]:
    """Translate ``docs`` with model ``name`` at the server's default decoding settings."""
    settings = state.settings
    # splitting markup runs in a thread (as token counting does): a large request must not stall the loop
    texts = await asyncio.to_thread(html_runs, docs) if as_html else docs
    if len(texts) > settings.max_texts * 8:
        raise ApiError(400, "too_many_items", f"q: {len(texts)} text runs; the limit is {settings.max_texts * 8}",
                       "q")
    out: list[str] = []
    if texts:
        opts = RequestOptions(n_best=1)  # the model's decoding defaults
        hyps, _ = await state.translate_texts(state.engines[name], texts, opts, "q")
        out = [h[0].text for h in hyps]
    return await asyncio.to_thread(merge_html, docs, out) if as_html else out


def languages(pairs: Pairs) -> list[LTLanguage]:
    """Source languages with their targets, from the served models' pairs."""
    targets: dict[str, list[str]] = {}
    for src, tgt in pairs.values():
        if src and tgt:
            targets.setdefault(src, []).append(tgt)
    return [LTLanguage(code=s, name=language_name(s), targets=sorted(set(t))) for s, t in targets.items()]


def libretranslate_router(state: ServerState) -> APIRouter:
    """``POST /translate`` and ``GET /languages``; the API key may also come in the body."""
    router = APIRouter(tags=["libretranslate"])
    pairs: Pairs = {name: (e.src_lang, e.tgt_lang) for name, e in state.engines.items()}
    api_key = state.settings.api_key

    @router.post("/translate", response_model=LTTranslateResponse, openapi_extra=TRANSLATE_OPENAPI,
                 responses={**ERRORS, 403: {"model": ErrorResponse}})
    async def lt_translate(request: Request) -> LTTranslateResponse:
        """LibreTranslate ``/translate``: ``q`` (string or list), ``source`` (or ``auto``), ``target``,
        ``format`` (``text``/``html``), ``api_key``."""
        data = await read_body(request)
        check_api_key(api_key, provided_key(request) or _str_or_none(data.get("api_key")))
        try:
            req = state.schemas.LTTranslateRequest.model_validate(data)
        except ValidationError as e:
            raise validation_error(e.errors(include_url=False), status=400) from None
        name = find_pair(pairs, req.source, req.target)
        if name is None:
            have = ", ".join(f"{s}->{t}" for s, t in pairs.values())
            raise ApiError(400, "unsupported_language_pair",
                           f"source/target: no model for {req.source}->{req.target}; available: {have}", "target")
        docs = [req.q] if isinstance(req.q, str) else list(req.q)
        out = await translate_docs(state, name, docs, req.format == "html")
        return LTTranslateResponse(translatedText=out[0] if isinstance(req.q, str) else out)

    @router.get("/languages", response_model=list[LTLanguage], responses={401: ERRORS[401]})
    async def lt_languages(request: Request) -> list[LTLanguage]:
        """LibreTranslate ``/languages``: source languages and their targets."""
        key = provided_key(request)
        if key is None and api_key is not None:
            # LibreTranslate clients put api_key in a form body, even on GET
            with contextlib.suppress(ApiError):
                key = _str_or_none((await read_body(request)).get("api_key"))
        check_api_key(api_key, key)
        return languages(pairs)

    return router
