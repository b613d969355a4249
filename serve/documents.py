"""Documents on the server: every text of a request is split into sentences
(:mod:`mt.documents`) before the micro-batcher, so the sentences of all requests batch
together, and the translations are joined back into each text's layout.

Limits: the character limit (``max_chars``) applies per text, in the request schema; the
token limit (``max_tokens_per_text``) per sentence: a longer sentence is cut at a clause or
word boundary, not refused; the request's cost (``max_request_cost``) is counted over its
sentences (:meth:`serve.state.ServerState.check_cost`). HTML that does not parse is a 400
naming the text. Both ``/v1/translate`` and LibreTranslate's ``/translate`` come here.
"""
# No ``from __future__ import annotations``: kept like the route modules that import it.

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

from mt.documents import Count, Document, DocumentError, split
from serve.batcher import BatchResult
from serve.engine import ModelEngine, RequestOptions
from serve.guard import ApiError
from serve.state import ServerState

Alternative = tuple[str, Optional[float]]  # (text, score: None when not finite)


@dataclass
class DocumentResult:
    """Per document its best translation (``texts``) and up to the request's ``n_best``
    alternatives (``n_best``; alternative k is built from every sentence's k-th hypothesis,
    or its best when it has fewer; its score is the sum of the sentences' scores); ``batch``:
    the batcher's timings of the request's sentences."""

    texts: list[str]
    n_best: list[list[Alternative]]
    batch: BatchResult


async def translate_documents(state: ServerState, engine: ModelEngine, docs: list[str], opts: RequestOptions,
                              field: str, fmt: Literal["text", "html"] = "text") -> DocumentResult:
    """Split ``docs`` (``fmt``: plain text or HTML) into sentences, translate all of them as one
    micro-batched job with ``opts``, join them back. ``field`` names the request field in
    errors (``texts[2]: html: ...``); raises :class:`serve.guard.ApiError` as
    :meth:`ServerState.translate_texts` does, and 400 ``invalid_html``."""
    limit = state.settings.max_tokens_per_text
    # splitting and counting are CPU work proportional to the request: off the event loop
    documents, lengths = await asyncio.to_thread(split_documents, engine, docs, fmt, limit, field)
    segments = [s for d in documents for s in d.segments]
    n_best = engine.options_for(opts).n_best  # a 422 naming the field, before anything is queued
    if not segments:  # only empty or blank texts: nothing to decode
        return DocumentResult([d.join([]) for d in documents], [[(d.join([]), 0.0)] for d in documents],
                              BatchResult([], 0.0, 0.0, 0, 0))
    hyps, batch = await state.translate_texts(engine, segments, opts, field, lengths)
    alternatives = await asyncio.to_thread(join_alternatives, documents, hyps, n_best)
    return DocumentResult([alts[0][0] for alts in alternatives], alternatives, batch)


class _Counter:
    """``count(text)`` by the engine's tokenizer, remembered: the splitter counts each sentence
    it keeps, and the batcher needs those counts again."""

    def __init__(self, engine: ModelEngine) -> None:
        self.engine, self.seen = engine, {}

    def __call__(self, text: str) -> int:
        if text not in self.seen:
            self.seen[text] = self.engine.count_tokens([text])[0]
        return self.seen[text]


def split_documents(engine: ModelEngine, docs: Sequence[str], fmt: str, max_tokens: int,
                    field: str) -> tuple[list[Document], list[int]]:
    """Each doc split in the engine's source language, sentences cut to ``max_tokens``; and
    the token count of every segment, in order."""
    count: Count = _Counter(engine)
    documents = []
    for i, doc in enumerate(docs):
        try:
            documents.append(split(doc, fmt, engine.src_lang, count, max_tokens))  # type: ignore[arg-type]
        except DocumentError as e:
            raise ApiError(400, "invalid_html", f"{field}[{i}]: {e}", f"{field}[{i}]") from None
    return documents, [count(s) for d in documents for s in d.segments]


def join_alternatives(documents: Sequence[Document], hyps: Sequence[Sequence[Any]],
                      n_best: int) -> list[list[Alternative]]:
    """Per document, up to ``n_best`` joined alternatives from ``hyps`` (every segment's
    hypotheses, best first, the documents' segments in order)."""
    out, pos = [], 0
    for doc in documents:
        mine = hyps[pos:pos + len(doc.segments)]
        pos += len(doc.segments)
        k = min(n_best, max((len(h) for h in mine), default=1))
        out.append([_alternative(doc, mine, j) for j in range(k)])
    return out


def _alternative(doc: Document, hyps: Sequence[Sequence[Any]], j: int) -> Alternative:
    picks = [h[j] if j < len(h) else h[0] for h in hyps]
    score = sum(p.score for p in picks)
    return doc.join([p.text for p in picks]), (float(score) if math.isfinite(score) else None)
