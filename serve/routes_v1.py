"""The native API: ``POST /v1/translate`` (micro-batched) and ``GET /v1/models``."""
# No ``from __future__ import annotations``: FastAPI must resolve the endpoint annotations,
# and the request class comes from the state (its limits come from the settings).

import time

from fastapi import APIRouter

from serve.batcher import BatchResult
from serve.documents import Alternative, translate_documents
from serve.engine import RequestOptions
from serve.schemas import Candidate, ModelInfo, ModelsResponse, Timings, TranslateResponse, Translation
from serve.state import ERRORS, ServerState


def translation(nbest: list[Alternative], with_alternatives: bool) -> Translation:
    """One text's answer from its ``(text, score)`` alternatives (best first)."""
    text, score = nbest[0]
    alternatives = [Candidate(text=t, score=s) for t, s in nbest] if with_alternatives else None
    return Translation(text=text, score=score, n_best=alternatives)


def timings(result: BatchResult, start: float) -> Timings:
    """Where the request's time went; ``start``: its ``time.perf_counter()`` on arrival."""
    return Timings(
        queue_ms=round(result.queue_s * 1000, 3),
        decode_ms=round(result.decode_s * 1000, 3),
        total_ms=round((time.perf_counter() - start) * 1000, 3),
        batch_texts=result.batch_texts,
        batch_requests=result.batch_requests,
    )


def v1_router(state: ServerState) -> APIRouter:
    """``/v1/models`` and ``/v1/translate``, both behind the API key."""
    router = APIRouter(tags=["translation"], dependencies=state.auth)
    TranslateRequest = state.schemas.TranslateRequest

    @router.get("/v1/models", response_model=ModelsResponse, responses={401: ERRORS[401]})
    async def list_models() -> ModelsResponse:
        return ModelsResponse(models=[
            ModelInfo(name=e.name, src_lang=e.src_lang, tgt_lang=e.tgt_lang, parameters=e.parameters,
                      default=e.name == state.default_model)
            for e in state.engines.values()
        ])

    @router.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS)
    async def translate(req: TranslateRequest) -> TranslateResponse:  # type: ignore[valid-type]
        """Translate ``texts`` (in order). Each text is split into sentences (its line breaks
        and blank lines kept; ``format: html``: its markup), and the sentences of concurrent
        requests with the same model and options are merged into one batched beam search."""
        start = time.perf_counter()
        engine = state.engine_for(req.model)
        alpha = None if req.length_penalty is None else float(req.length_penalty)
        opts = RequestOptions(req.beam_size, alpha, req.max_length, req.n_best)
        n_best = engine.options_for(opts).n_best  # 422 naming the field if they do not fit the model's
        result = await translate_documents(state, engine, req.texts, opts, "texts", req.format)
        return TranslateResponse(
            model=engine.name,
            translations=[translation(alternatives, n_best > 1) for alternatives in result.n_best],
            timings=timings(result.batch, start),
        )

    return router
