"""LibreTranslate compatibility: ``POST /translate``, ``POST /detect`` and ``GET /languages``.

They follow LibreTranslate's API so its clients work unchanged: bodies are JSON or
form-encoded, the API key may come in the body. ``source: "auto"`` detects each text's
language among the served ones (:mod:`mt.langid`) and picks the model from it into
``target``; ``alternatives: N`` adds up to N other n-best translations.
Texts are documents (:mod:`mt.documents`): sentences are split and translated, line breaks
kept. ``format: "html"`` keeps the markup byte-for-byte and translates a sentence with inline
tags (``<b>``) as one sentence, the tags carried into the translation.
"""
# No ``from __future__ import annotations``: FastAPI must resolve the endpoint annotations.

import asyncio
import contextlib
import re
from typing import Any, Literal, Optional, Sequence
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from mt import langid
from serve.documents import translate_documents
from serve.engine import ModelEngine, RequestOptions
from serve.guard import ApiError, check_api_key, json_loads_strict, provided_key, validation_error
from serve.schemas import ErrorResponse, LTDetection, LTLanguage, LTTranslateResponse
from serve.state import ERRORS, ServerState

Pairs = dict[str, tuple[Optional[str], Optional[str]]]  # model name -> (source, target) language

LANGUAGE_NAMES = {
    "ar": "Arabic", "chr": "Cherokee", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
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


def named(codes: Sequence[str]) -> str:
    """``de (German), fr (French)``: languages for an error message."""
    return ", ".join(f"{c} ({language_name(c)})" for c in codes) or "none"


def served_languages(pairs: Pairs) -> list[str]:
    """Every language of the served models, sources and targets: what detection ranks.
    Targets count too, so that a text plainly in a language no model translates into the
    target (say, already in it) is refused rather than forced through another language's model."""
    return list(dict.fromkeys(lang for pair in pairs.values() for lang in pair if lang))


def models_into(pairs: Pairs, target: str) -> dict[str, str]:
    """Source language -> model name, for the models into ``target`` (400 when there are none)."""
    sources: dict[str, str] = {}
    for name, (s, t) in pairs.items():
        if s and t == target:
            sources.setdefault(s, name)  # two models of one pair: the first, as for requests naming none
    if not sources:
        targets = sorted({t for _, t in pairs.values() if t})
        raise ApiError(400, "unsupported_language_pair",
                       f"target: no model translates into {target!r}; served targets: {named(targets)}", "target")
    return sources


def model_for(sources: dict[str, str], source: str, target: str) -> str:
    """The model for an explicit ``source`` (``sources``: :func:`models_into` ``target``)."""
    if source not in sources:
        raise ApiError(400, "unsupported_language_pair",
                       f"source: no model translates {source!r} into {target} ({language_name(target)}); "
                       f"models into {target} translate from: {named(list(sources))}", "source")
    return sources[source]


# A text at least this likely (0..1) in a served language with no model into the target is
# refused. Below it, the likeliest language with a model is used: on 2,400 multi30k texts
# (sentences, 3-word and 1-word prefixes; docs/langid.md) no wrong detection reached 0.68,
# while 99% of whole sentences were detected at >= 0.99.
SURE = 0.9


def source_for(sources: dict[str, str], ranked: list[tuple[str, float]], target: str,
               field: str) -> tuple[str, float]:  # fmt: skip
    """The language (and its probability) to translate a text from, given its detected
    languages ``ranked`` (best first): the likeliest one with a model into ``target``."""
    best, p = ranked[0]
    if best not in sources and p >= SURE:
        raise ApiError(400, "unsupported_language",
                       f"{field}: among the served languages the text is most likely {language_name(best)} "
                       f"({best}, {percent(p):g}%), but no model translates it into {target} "
                       f"({language_name(target)}); models into {target} translate from: {named(list(sources))}",
                       field)
    lang, q = next((lang, q) for lang, q in ranked if lang in sources)  # every source is a candidate
    if q <= 0:  # no candidate is known to the detector nor written in the text's script
        raise ApiError(400, "language_not_detected",
                       f"{field}: cannot tell the language of the text; models into {target} translate from: "
                       f"{named(list(sources))}; give source", field)
    return lang, q


# ---------------------------------------------------------------------------- request bodies


FORM_INTS = ("alternatives",)  # form fields that are numbers


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
        elif k in FORM_INTS and re.fullmatch(r"[0-9]{1,6}", v):
            data[k] = int(v)  # a form has only strings; JSON must send a number (strict validation)
        else:
            data[k] = v
    return data


async def lt_request(request: Request, model: type[BaseModel], api_key: Optional[str]) -> Any:
    """A LibreTranslate body (JSON or form), its API key checked (header or body), validated
    by ``model``: 400 naming the field, as LibreTranslate answers."""
    data = await read_body(request)
    check_api_key(api_key, provided_key(request) or _str_or_none(data.get("api_key")))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e.errors(include_url=False), status=400) from None


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


def languages(pairs: Pairs) -> list[LTLanguage]:
    """Source languages with their targets, from the served models' pairs."""
    targets: dict[str, list[str]] = {}
    for src, tgt in pairs.values():
        if src and tgt:
            targets.setdefault(src, []).append(tgt)
    return [LTLanguage(code=s, name=language_name(s), targets=sorted(set(t))) for s, t in targets.items()]


# ---------------------------------------------------------------------------- detection, alternatives


def percent(p: float) -> float:
    """A probability (0..1) as LibreTranslate's confidence (0..100, one decimal)."""
    return round(100.0 * p, 1)


async def detect_docs(docs: list[str], candidates: list[str]) -> list[list[tuple[str, float]]]:
    """Each text's ``candidates`` ranked (:func:`mt.langid.detect`); 400 naming an empty text.
    In a thread: long texts take milliseconds, and the model's first load ~0.7 s."""
    def run() -> list[list[tuple[str, float]]]:
        ranked = []
        for i, doc in enumerate(docs):
            try:
                ranked.append(langid.detect(doc, candidates))
            except langid.EmptyTextError as e:
                field = "q" if len(docs) == 1 else f"q[{i}]"
                raise ApiError(400, "empty_text", f"{field}: {e}; give source", field) from None
        return ranked

    return await asyncio.to_thread(run)


def other_translations(best: str, n_best: list[tuple[str, Optional[float]]], k: int) -> list[str]:
    """Up to ``k`` of the n-best texts other than ``best``, without repeats (two token
    sequences can detokenize to the same text)."""
    seen, out = {best}, []
    for text, _ in n_best:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out[:k]


async def translate_with_alternatives(state: ServerState, engine: ModelEngine, docs: list[str], k: int,
                                      fmt: Literal["text", "html"]) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """Translations (each split into sentences, :func:`serve.documents.translate_documents`)
    and up to ``k`` alternatives each: the ``k + 1`` best hypotheses of one beam search, whose
    beam is the model's own or ``k + 1`` if larger (it must hold them). ``k = 0``: the model's
    decoding defaults."""
    opts = RequestOptions(beam=max(engine.base_options.beam, k + 1), n_best=k + 1) if k else RequestOptions(n_best=1)
    result = await translate_documents(state, engine, docs, opts, "q", fmt)
    return result.texts, [other_translations(t, nb, k) for t, nb in zip(result.texts, result.n_best)]


async def translate_by_model(state: ServerState, names: list[str], docs: list[str], req: Any,
                             ) -> tuple[list[str], list[list[str]]]:  # fmt: skip
    """Each text with its model, the texts of one model in one call (so they batch together):
    ``(translations, alternatives)`` in the texts' order."""
    texts, alternatives = [""] * len(docs), [[] for _ in docs]
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        part = [docs[i] for i in idx]
        out, more = await translate_with_alternatives(state, state.engines[name], part, req.alternatives, req.format)
        for i, text, alts in zip(idx, out, more):
            texts[i], alternatives[i] = text, alts
    return texts, alternatives


def lt_answer(req: Any, texts: list[str], alternatives: list[list[str]],
              chosen: Optional[list[tuple[str, float]]]) -> LTTranslateResponse:  # fmt: skip
    """The response, shaped like ``q``: single values for a string, lists for a list.
    ``chosen``: each text's detected source language and its probability (``auto`` only)."""
    one = isinstance(req.q, str)
    detected = [LTDetection(language=lang, confidence=percent(p)) for lang, p in chosen] if chosen else None
    return LTTranslateResponse(
        translatedText=texts[0] if one else texts,
        alternatives=(alternatives[0] if one else alternatives) if req.alternatives else None,
        detectedLanguage=(detected[0] if one else detected) if detected else None,
    )


def detect_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``/detect``'s body (read by hand, JSON or form), inline: it is not a FastAPI body model."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {t: {"schema": schema} for t in BODY_TYPES}}}


def libretranslate_router(state: ServerState) -> APIRouter:
    """``POST /translate``, ``POST /detect`` and ``GET /languages``; the API key may also
    come in the body."""
    router = APIRouter(tags=["libretranslate"])
    pairs: Pairs = {name: (e.src_lang, e.tgt_lang) for name, e in state.engines.items()}
    candidates = served_languages(pairs)
    api_key, schemas = state.settings.api_key, state.schemas

    @router.post("/translate", response_model=LTTranslateResponse, response_model_exclude_none=True,
                 openapi_extra=TRANSLATE_OPENAPI, responses={**ERRORS, 403: {"model": ErrorResponse}})
    async def lt_translate(request: Request) -> LTTranslateResponse:
        """LibreTranslate ``/translate``: ``q`` (string or list), ``source`` (or ``auto``), ``target``,
        ``format`` (``text``/``html``), ``alternatives`` (0..max_beam - 1), ``api_key``."""
        req = await lt_request(request, schemas.LTTranslateRequest, api_key)
        docs = [req.q] if isinstance(req.q, str) else list(req.q)
        sources = models_into(pairs, req.target)
        if req.source == "auto":
            fields = ["q"] if len(docs) == 1 else [f"q[{i}]" for i in range(len(docs))]
            ranked = await detect_docs(docs, candidates)
            chosen = [source_for(sources, r, req.target, f) for r, f in zip(ranked, fields)]
            names = [sources[lang] for lang, _ in chosen]
        else:
            chosen, names = None, [model_for(sources, req.source, req.target)] * len(docs)
        texts, alternatives = await translate_by_model(state, names, docs, req)
        return lt_answer(req, texts, alternatives, chosen)

    @router.post("/detect", response_model=list[LTDetection], openapi_extra=detect_openapi(schemas.LTDetectRequest),
                 responses={c: ERRORS[c] for c in (400, 401, 413)})
    async def lt_detect(request: Request) -> list[LTDetection]:
        """LibreTranslate ``/detect``: the served languages, most likely first, with the
        confidence (0..100) that ``q`` is in each."""
        req = await lt_request(request, schemas.LTDetectRequest, api_key)
        (ranked,) = await detect_docs([req.q], candidates)
        return [LTDetection(language=lang, confidence=percent(p)) for lang, p in ranked]

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
