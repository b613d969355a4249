"""Greedy and batched beam search over ``(batch * beam)`` rows with the decoder's KV cache.

Both searches work on a batch of source sentences at once and shrink it as sentences
finish (``DecoderState.select_sentences``), so late steps only pay for long sentences.

Beam search (fairseq's algorithm, vectorised over batch × beam — no Python loop over
hypotheses inside a step):

1. every row's next-token log-probs are added to its running score and the
   ``2 * beam`` best ``(parent, token)`` candidates per sentence are taken over
   ``beam * vocab``;
2. EOS candidates ranked within the first ``beam`` become finished hypotheses, scored
   with the length normalisation of :mod:`mt.decode.lengths`;
3. the ``beam`` best non-EOS candidates continue; the self-attention cache follows
   their parents (``DecoderState.reorder``).

**Stopping rule** (fairseq's, documented choice): a sentence is done as soon as it has
``beam`` finished hypotheses, or at its maximum length (where only EOS is allowed).
It does *not* wait for active hypotheses that might still overtake the best finished one
under ``avg``/``gnmt`` normalisation; with normalisation the bound is loose enough that
waiting would mean running nearly every sentence to its maximum length.

Constraints applied to every step's log-probs (:func:`constrain_`): padding and the
decoder-start token never generated, EOS blocked before ``min_len`` and forced at
``max_len``, ``unk_penalty`` subtracted from the unknown token, repeated n-grams blocked.

Index spaces (a legend; names in the code follow it):

==========  ==================================================================================
original    the caller's sentences ``0..n_real-1`` (then padding sentences up to ``b0``):
            results, limits and :class:`Finished` are indexed by these
decoded     the sentences still decoded, ``0..b-1``; ``sent[i]`` is decoded sentence ``i``'s
            original index (the batch shrinks as sentences finish)
rows        decoder rows, ``decoded * width + beam slot`` (sentence-major; ``width`` is 1 at
            beam search's step 0 when it runs one row per sentence, else ``k``)
candidates  per decoded sentence, the ``2k`` best ``(parent slot, token)`` expansions, best first
==========  ==================================================================================

The searches take a :class:`mt.decode.variant.DecodingModel` (``model``): its padding rule
keeps decoding batch-invariant (:mod:`mt.decode.shapes`), its output layer may be a shortlist.

**Cancellation**: every search (and :func:`mt.decode.sampling.sample`) takes an optional
``should_stop`` callable, called once at the start of each step; when it returns True the
search raises :class:`DecodeCancelled` and its partial results are dropped. The server uses
it to stop work whose client has given up (``serve/batcher.py``); one Python call per step
costs nothing next to a decoder step, and it never changes what is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mt.decode.lengths import max_output_len, min_output_len, normalize
from mt.config import DecodeOptions
from mt.decode.options import Hypothesis
from mt.decode.shapes import keep_sentences, pad_source
from mt.decode.topk import topk as block_topk
from mt.decoder_state import DecoderState

NEG_INF = float("-inf")

StopCheck = Optional[Callable[[], bool]]
"""``should_stop() -> bool``, asked once per decoding step (None: never stop early)."""


class DecodeCancelled(Exception):
    """``should_stop`` asked a search to stop; it has no results."""


@dataclass
class Limits:
    """Per-sentence length limits, ``(batch,)`` long tensors (EOS excluded)."""

    min_len: Tensor
    max_len: Tensor

    @classmethod
    def for_source(cls, src: Tensor, model: Any, opts: DecodeOptions) -> "Limits":
        """``src``: ``(batch, src_len)`` with an EOS ending every row (``make_source``)."""
        src_len = src.ne(model.cfg.pad_id).sum(1) - 1  # the appended EOS does not count
        max_len = max_output_len(src_len, opts.max_len_a, opts.max_len_b, model.cfg.max_positions)
        return cls(min_output_len(opts.min_len, max_len), max_len)


def block_repeated_ngrams_(lprobs: Tensor, hist: Tensor, n: int) -> None:
    """Forbid tokens that would repeat an ``n``-gram already in ``hist``.

    ``lprobs``: ``(rows, vocab)``, modified in place; ``hist``: ``(rows, t)`` tokens generated
    so far (decoder-start excluded). Vectorised: every length-``n`` window whose first
    ``n - 1`` tokens equal the last ``n - 1`` generated ones bans its last token.
    """
    t = hist.shape[1]
    if n <= 0 or t < n:  # no complete earlier n-gram yet
        return
    if n == 1:
        lprobs.scatter_(1, hist, NEG_INF)
        return
    windows = hist.unfold(1, n, 1)  # (rows, t - n + 1, n)
    match = (windows[:, :, :-1] == hist[:, None, t - n + 1 :]).all(-1)  # (rows, t - n + 1)
    # scatter_reduce(amax): a token banned by any window stays banned whatever the order
    banned = torch.zeros_like(lprobs).scatter_reduce_(1, windows[:, :, -1], match.to(lprobs.dtype), "amax")
    lprobs.masked_fill_(banned > 0, NEG_INF)


def constrain_(
    lprobs: Tensor, hist: Tensor, step: int, min_len: Tensor, max_len: Tensor, model: Any, opts: DecodeOptions
) -> Tensor:
    """Apply the decoding constraints to ``lprobs`` ``(rows, vocab)`` in place and return it.

    ``hist``: ``(rows, step)`` generated tokens; ``min_len``/``max_len``: ``(rows,)``.
    """
    cfg = model.cfg
    lprobs[:, cfg.pad_id] = NEG_INF
    lprobs[:, model.decoder_start_id] = NEG_INF
    if cfg.bos_id != cfg.eos_id:
        lprobs[:, cfg.bos_id] = NEG_INF
    if opts.unk_penalty:
        lprobs[:, cfg.unk_id] -= opts.unk_penalty
    if opts.no_repeat_ngram > 0:
        block_repeated_ngrams_(lprobs, hist, opts.no_repeat_ngram)
    too_short = min_len > step
    if bool(too_short.any()):
        lprobs[too_short, cfg.eos_id] = NEG_INF
    at_max = max_len <= step
    if bool(at_max.any()):
        eos = lprobs[at_max, cfg.eos_id].clone()
        lprobs[at_max] = NEG_INF
        lprobs[at_max, cfg.eos_id] = eos  # keep the real log-prob so scores stay honest
    return lprobs


def step_log_probs(model: Any, tokens: Tensor, run: "Run", temperature: float = 1.0) -> Tensor:
    """One decoder step → fp32 log-probs ``(rows, vocab)``. With a shortlist
    (``run.out.vocab``) the softmax runs over the shortlist and every other token gets -inf."""
    logits = model.decode_step(tokens, run.state, run.out).float()
    if temperature != 1.0:
        logits = logits / temperature
    lprobs = F.log_softmax(logits, dim=-1)
    if run.out.vocab is None:
        return lprobs
    full = lprobs.new_full((lprobs.shape[0], model.cfg.vocab_size), NEG_INF)
    return full.index_copy_(1, run.out.vocab, lprobs)


@dataclass
class Run:
    """What every search loop starts from (:func:`start_run`): ``src`` padded by the model's
    rule, ``n_real`` sentences of the caller's among ``b0``, their ``limits``, the decoder
    ``state`` and output layer ``out``, ``t_max`` (the last step), ``sent`` (original index of
    each decoded sentence) and ``hist`` (``(rows, 1)``: the decoder start token per row)."""

    src: Tensor
    n_real: int
    b0: int
    limits: Limits
    state: DecoderState
    out: Any  # mt.decode.variant.OutputLayer
    t_max: int
    sent: Tensor
    hist: Tensor


def start_run(model: Any, src: Tensor, opts: DecodeOptions, group: int, width: int,
              vocab_ids: Tensor | None) -> Run:
    """Pad ``src`` ``(batch, src_len)`` for ``group`` rows per sentence (the beam, or samples),
    encode it and start a decoder with ``width`` rows per sentence (1 or ``group``)."""
    cfg = model.cfg
    src, n_real = pad_source(src, cfg.pad_id, group, cfg.max_positions, model.padding)
    b0, dev = src.shape[0], src.device
    limits = Limits.for_source(src, model, opts)
    state, out = model.start(model.encode(src), group, vocab_ids)
    hist = torch.full((b0 * width, 1), model.decoder_start_id, dtype=torch.long, device=dev)
    return Run(src, n_real, b0, limits, state, out, int(limits.max_len.max()), torch.arange(b0, device=dev), hist)


@torch.inference_mode()
def greedy_search(
    model: Any, src: Tensor, opts: DecodeOptions, vocab_ids: Tensor | None = None, should_stop: StopCheck = None
) -> list[list[Hypothesis]]:
    """Argmax decoding. ``src``: ``(batch, src_len)`` → one hypothesis per sentence.
    ``vocab_ids``: an output shortlist (sorted target ids, ``mt.decode.shortlist``) or None;
    ``should_stop``: see the module docstring (raises :class:`DecodeCancelled`)."""
    cfg = model.cfg
    run = start_run(model, src, opts, 1, 1, vocab_ids)
    b0, dev, sent, hist, limits = run.b0, run.src.device, run.sent, run.hist, run.limits
    out = torch.full((b0, run.t_max + 1), cfg.pad_id, dtype=torch.long, device=dev)  # original
    log_prob = torch.zeros(b0, device=dev)
    length = torch.zeros(b0, dtype=torch.long, device=dev)
    finished = torch.zeros(b0, dtype=torch.bool, device=dev)
    for step in range(run.t_max + 1):
        if should_stop is not None and should_stop():
            raise DecodeCancelled(f"greedy search stopped at step {step}")
        lprobs = step_log_probs(model, hist[:, -1], run)
        constrain_(lprobs, hist[:, 1:], step, limits.min_len[sent], limits.max_len[sent], model, opts)
        # block maxima, not max(dim): torch's CPU max with indices along a long last dim is not vectorised
        best, tok = block_topk(lprobs, 1)
        best, tok = best[:, 0], tok[:, 0]  # (rows,)
        alive = ~finished[sent]  # rows kept only for batch invariance produce nothing
        out[sent[alive], step] = tok[alive]
        log_prob[sent[alive]] += best[alive]
        hist = torch.cat([hist, tok[:, None]], dim=1)
        ended = alive & tok.eq(cfg.eos_id)
        if bool(ended.any()):
            length[sent[ended]] = step + 1
            finished[sent[ended]] = True
            alive &= ~ended
            if not bool(alive.any()):
                break
            keep = keep_sentences(alive, 1, model.padding)
            if keep.numel() < sent.numel():
                run.state.select_sentences(keep)
                sent, hist = sent[keep], hist[keep]
    score = normalize(log_prob, length, opts.length_norm, opts.alpha)
    return [
        [Hypothesis("", out[i, : length[i] - 1].tolist(), float(score[i]), float(log_prob[i]))]
        for i in range(run.n_real)
    ]


class Finished:
    """Finished hypotheses of beam search, up to ``k`` per original sentence: ``tokens``
    ``(b0, k, t_max + 1)`` (final EOS included), ``score`` (normalised) and ``log_prob``
    ``(b0, k)``, ``length`` ``(b0, k)`` (EOS included), ``count`` ``(b0,)``."""

    def __init__(self, b0: int, k: int, t_max: int, pad_id: int, device: torch.device) -> None:
        self.tokens = torch.full((b0, k, t_max + 1), pad_id, dtype=torch.long, device=device)
        self.score = torch.full((b0, k), NEG_INF, device=device)
        self.log_prob = torch.full((b0, k), NEG_INF, device=device)
        self.length = torch.zeros(b0, k, dtype=torch.long, device=device)
        self.count = torch.zeros(b0, dtype=torch.long, device=device)

    def add(self, orig: Tensor, slot: Tensor, prefix: Tensor, eos_id: int, log_prob: Tensor, score: Tensor) -> None:
        """Store hypotheses: original sentence ``orig`` ``(m,)``, its free ``slot`` ``(m,)``,
        the generated ``prefix`` ``(m, step)`` then EOS, with ``log_prob`` / ``score`` ``(m,)``."""
        step = prefix.shape[1]
        self.tokens[orig, slot, :step] = prefix
        self.tokens[orig, slot, step] = eos_id
        self.log_prob[orig, slot] = log_prob
        self.score[orig, slot] = score
        self.length[orig, slot] = step + 1

    def best(self, n_real: int, n_best: int) -> list[list[Hypothesis]]:
        """Each real sentence's ``n_best`` hypotheses by score, best first (a sentence whose
        every path was blocked gets one empty hypothesis scored -inf)."""
        order = self.score[:n_real].argsort(dim=1, descending=True, stable=True)
        tokens = self.tokens[:n_real].gather(1, order[:, :, None].expand(-1, -1, self.tokens.shape[2])).tolist()
        score, logp = self.score[:n_real].gather(1, order).tolist(), self.log_prob[:n_real].gather(1, order).tolist()
        length, counts = self.length[:n_real].gather(1, order).tolist(), self.count[:n_real].tolist()
        results = []
        for i, count in enumerate(counts):
            hyps = [Hypothesis("", tokens[i][j][: length[i][j] - 1], score[i][j], logp[i][j])
                    for j in range(min(n_best, count))]
            results.append(hyps or [Hypothesis("", [], NEG_INF, NEG_INF)])
        return results


@torch.inference_mode()
def beam_search(
    model: Any, src: Tensor, opts: DecodeOptions, vocab_ids: Tensor | None = None, should_stop: StopCheck = None
) -> list[list[Hypothesis]]:
    """Beam search. ``src``: ``(batch, src_len)`` → per sentence the ``opts.n_best`` best
    finished hypotheses, sorted by normalised score (best first). ``vocab_ids``,
    ``should_stop``: as in :func:`greedy_search`."""
    cfg = model.cfg
    k, vocab = opts.beam, cfg.vocab_size
    n_cand = min(2 * k, k * vocab)
    # Step 0: all k beams of a sentence hold the same prefix (the decoder start), so when that
    # keeps the row count a multiple of the rule's (no padding rows, or odd k) step 0 runs one
    # row per sentence and the first reorder copies its cache to the k beams. Whether it does
    # depends on k and the rule alone, never on the batch: decoding stays batch-invariant.
    rule = model.padding
    one_row = rule.sentence_multiple(k) % rule.sentence_multiple(1) == 0
    width = 1 if one_row and n_cand <= vocab else k
    run = start_run(model, src, opts, k, width, vocab_ids)
    dev, sent, hist, limits, state = run.src.device, run.sent, run.hist, run.limits, run.state
    scores = torch.zeros(run.b0, width, device=dev)  # (decoded, width): running log-probs
    scores[:, 1:] = NEG_INF  # all beams start identical: only the first may expand at step 0
    beam_offsets = torch.arange(k, device=dev)
    cand_rank = torch.arange(n_cand, device=dev)
    fin = Finished(run.b0, k, run.t_max, cfg.pad_id, dev)
    finished = torch.zeros(run.b0, dtype=torch.bool, device=dev)  # original: done (may still be decoded)

    for step in range(run.t_max + 1):
        if should_stop is not None and should_stop():
            raise DecodeCancelled(f"beam search stopped at step {step}")
        b = sent.numel()
        lprobs = step_log_probs(model, hist[:, -1], run)  # (rows, vocab)
        rows_min = limits.min_len[sent].repeat_interleave(width)
        rows_max = limits.max_len[sent].repeat_interleave(width)
        constrain_(lprobs, hist[:, 1:], step, rows_min, rows_max, model, opts)
        cand = lprobs.add_(scores.view(-1, 1)).view(b, width * vocab)  # in place: no temporary
        top_score, top_idx = block_topk(cand, n_cand)  # (decoded, candidates), best first
        parent, token = top_idx // vocab, top_idx % vocab
        is_eos = token.eq(cfg.eos_id)
        alive = ~finished[sent]  # (decoded,)

        # -- finish: EOS candidates ranked in the first k, while the sentence has room
        fin_here = is_eos[:, :k] & torch.isfinite(top_score[:, :k]) & alive[:, None]
        if bool(fin_here.any()):
            slot = fin.count[sent, None] + fin_here.long().cumsum(1) - 1  # (decoded, k)
            accept = fin_here & (slot < k)
            bi, ri = accept.nonzero(as_tuple=True)  # decoded sentence, candidate
            logp = top_score[bi, ri]
            fin.add(sent[bi], slot[bi, ri], hist[bi * width + parent[bi, ri], 1:], cfg.eos_id, logp,
                    normalize(logp, step + 1, opts.length_norm, opts.alpha))
            fin.count[sent] += accept.sum(1)

        ended = alive & (fin.count[sent].ge(k) | limits.max_len[sent].le(step))
        finished[sent[ended]] = True
        alive &= ~ended
        if not bool(alive.any()):
            break

        # -- continue: the k best non-EOS candidates (EOS pushed behind every other rank)
        _, pick = torch.topk(is_eos.long() * n_cand + cand_rank, k, dim=1, largest=False)  # (decoded, k)
        pick = pick.gather(1, _slots_near_parents(parent.gather(1, pick)))
        scores = top_score.gather(1, pick)
        rows = (torch.arange(b, device=dev)[:, None] * width + parent.gather(1, pick)).view(-1)  # (decoded * k,)
        new_tokens = token.gather(1, pick).view(-1, 1)
        width = k

        # -- drop finished sentences so the next steps do less work; the cache then makes
        # one gather for both the parents and the dropped sentences
        keep = keep_sentences(alive, k, rule) if bool(ended.any()) else None
        if keep is not None and keep.numel() < b:
            keep_rows = (keep[:, None] * k + beam_offsets).view(-1)
            rows, new_tokens, scores, sent = rows[keep_rows], new_tokens[keep_rows], scores[keep], sent[keep]
            state.select_sentences(keep, rows=rows)
        else:
            state.reorder(rows)
        hist = torch.cat([hist.index_select(0, rows), new_tokens], dim=1)

    return fin.best(run.n_real, opts.n_best)


def _slots_near_parents(parent: Tensor) -> Tensor:
    """Which chosen candidate goes to which beam row, so the KV cache moves as little as possible.

    ``parent``: ``(b, k)`` parent beam of the ``k`` chosen candidates (best first) → ``order``
    ``(b, k)``: row ``s`` of a sentence takes candidate ``order[:, s]``. The best child of each
    parent stays in its parent's row (no cache copy); the other children fill the rows whose
    hypothesis had no child, in rank order. The order of a sentence's beams carries no meaning
    (every ranking is by score), so this changes nothing but the rows that need copying.
    """
    b, k = parent.shape
    slots = torch.arange(k, device=parent.device)
    one_hot = parent[:, :, None].eq(slots)  # (b, k candidates, k parents)
    first = (one_hot.cumsum(1) * one_hot).sum(2).eq(1)  # best child of its parent
    claimed = (one_hot & first[:, :, None]).any(1)  # (b, k rows): rows kept by a first child
    # candidates sorted as [first children by parent row, others by rank] pair up with
    # rows sorted as [claimed rows, free rows], both ascending
    by_cand = torch.where(first, parent, k + slots).argsort(1)
    by_row = torch.where(claimed, slots, k + slots).argsort(1)
    return torch.empty_like(parent).scatter_(1, by_row, by_cand)
