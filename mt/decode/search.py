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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mt.decode.lengths import max_output_len, min_output_len, normalize
from mt.decode.options import DecodeOptions, Hypothesis
from mt.decode.shapes import keep_sentences, pad_source, row_multiple, sentence_multiple
from mt.decode.topk import topk as block_topk
from mt.model import Transformer

NEG_INF = float("-inf")


@dataclass
class Limits:
    """Per-sentence length limits, ``(batch,)`` long tensors (EOS excluded)."""

    min_len: Tensor
    max_len: Tensor

    @classmethod
    def for_source(cls, src: Tensor, model: Transformer, opts: DecodeOptions) -> "Limits":
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
    lprobs: Tensor, hist: Tensor, step: int, min_len: Tensor, max_len: Tensor, model: Transformer, opts: DecodeOptions
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


def step_log_probs(model: Transformer, tokens: Tensor, state, temperature: float = 1.0) -> Tensor:
    """One decoder step → fp32 log-probs ``(rows, vocab)``. With a shortlist
    (``state.vocab``) the softmax runs over the shortlist and every other token gets -inf."""
    logits = model.decode_step(tokens, state).float()
    if temperature != 1.0:
        logits = logits / temperature
    lprobs = F.log_softmax(logits, dim=-1)
    if state.vocab is None:
        return lprobs
    full = lprobs.new_full((lprobs.shape[0], model.cfg.vocab_size), NEG_INF)
    return full.index_copy_(1, state.vocab, lprobs)


@torch.inference_mode()
def greedy_search(
    model: Transformer, src: Tensor, opts: DecodeOptions, vocab_ids: Tensor | None = None
) -> list[list[Hypothesis]]:
    """Argmax decoding. ``src``: ``(batch, src_len)`` → one hypothesis per sentence.
    ``vocab_ids``: an output shortlist (sorted target ids, ``mt.decode.shortlist``) or None."""
    cfg = model.cfg
    multiple = row_multiple(model)
    src, n_real = pad_source(src, cfg.pad_id, 1, cfg.max_positions, multiple)
    b0, dev = src.shape[0], src.device
    limits = Limits.for_source(src, model, opts)
    state = model.start_state(model.encode(src), beam=1, vocab=vocab_ids)
    t_max = int(limits.max_len.max())
    out = torch.full((b0, t_max + 1), cfg.pad_id, dtype=torch.long, device=dev)
    log_prob = torch.zeros(b0, device=dev)
    length = torch.zeros(b0, dtype=torch.long, device=dev)
    finished = torch.zeros(b0, dtype=torch.bool, device=dev)
    sent = torch.arange(b0, device=dev)  # original index of each decoded row
    hist = torch.full((b0, 1), model.decoder_start_id, dtype=torch.long, device=dev)
    for step in range(t_max + 1):
        lprobs = step_log_probs(model, hist[:, -1], state)
        constrain_(lprobs, hist[:, 1:], step, limits.min_len[sent], limits.max_len[sent], model, opts)
        best, tok = lprobs.max(dim=-1)  # (rows,)
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
            keep = keep_sentences(alive, 1, multiple)
            if keep.numel() < sent.numel():
                state.select_sentences(keep)
                sent, hist = sent[keep], hist[keep]
    score = normalize(log_prob, length, opts.length_norm, opts.alpha)
    return [
        [Hypothesis("", out[i, : length[i] - 1].tolist(), float(score[i]), float(log_prob[i]))]
        for i in range(n_real)
    ]


@torch.inference_mode()
def beam_search(
    model: Transformer, src: Tensor, opts: DecodeOptions, vocab_ids: Tensor | None = None
) -> list[list[Hypothesis]]:
    """Beam search. ``src``: ``(batch, src_len)`` → per sentence the ``opts.n_best`` best
    finished hypotheses, sorted by normalised score (best first). ``vocab_ids``: as in
    :func:`greedy_search`."""
    cfg = model.cfg
    k, vocab = opts.beam, cfg.vocab_size
    multiple = row_multiple(model)
    src, n_real = pad_source(src, cfg.pad_id, k, cfg.max_positions, multiple)
    b0, dev = src.shape[0], src.device
    n_cand = min(2 * k, k * vocab)
    limits = Limits.for_source(src, model, opts)
    state = model.start_state(model.encode(src), beam=k, vocab=vocab_ids)
    t_max = int(limits.max_len.max())

    # Step 0: all k beams of a sentence hold the same prefix (the decoder start), so when that
    # keeps the row count a multiple of `multiple` (packed/int8 models, or odd k: shapes.py) step 0
    # runs one row per sentence and the first reorder copies its cache to the k beams. Whether
    # it does depends on k and the model alone, never on the batch: decoding stays batch-invariant.
    one_row = sentence_multiple(k, multiple) % sentence_multiple(1, multiple) == 0
    width = 1 if one_row and n_cand <= vocab else k
    # active hypotheses, rows sentence-major: (b * width, steps so far + 1), decoder start first
    hist = torch.full((b0 * width, 1), model.decoder_start_id, dtype=torch.long, device=dev)
    scores = torch.zeros(b0, width, device=dev)
    scores[:, 1:] = NEG_INF  # all beams start identical: only the first may expand at step 0
    sent = torch.arange(b0, device=dev)  # original sentence index of each decoded sentence
    beam_offsets = torch.arange(k, device=dev)
    cand_rank = torch.arange(n_cand, device=dev)

    # finished hypotheses per original sentence (tokens include the final EOS)
    fin_tokens = torch.full((b0, k, t_max + 1), cfg.pad_id, dtype=torch.long, device=dev)
    fin_score = torch.full((b0, k), NEG_INF, device=dev)
    fin_logp = torch.full((b0, k), NEG_INF, device=dev)
    fin_len = torch.zeros(b0, k, dtype=torch.long, device=dev)
    fin_count = torch.zeros(b0, dtype=torch.long, device=dev)
    finished = torch.zeros(b0, dtype=torch.bool, device=dev)  # sentence done (may still be decoded)

    for step in range(t_max + 1):
        b = sent.numel()
        lprobs = step_log_probs(model, hist[:, -1], state)  # (b * width, vocab)
        rows_min = limits.min_len[sent].repeat_interleave(width)
        rows_max = limits.max_len[sent].repeat_interleave(width)
        constrain_(lprobs, hist[:, 1:], step, rows_min, rows_max, model, opts)
        cand = lprobs.add_(scores.view(-1, 1)).view(b, width * vocab)  # in place: no temporary
        top_score, top_idx = block_topk(cand, n_cand)  # (b, n_cand), best first
        parent, token = top_idx // vocab, top_idx % vocab
        is_eos = token.eq(cfg.eos_id)
        alive = ~finished[sent]  # (b,)

        # -- finish: EOS candidates ranked in the first k, while the sentence has room
        fin_here = is_eos[:, :k] & torch.isfinite(top_score[:, :k]) & alive[:, None]
        if bool(fin_here.any()):
            slot = fin_count[sent, None] + fin_here.long().cumsum(1) - 1  # (b, k)
            accept = fin_here & (slot < k)
            bi, ri = accept.nonzero(as_tuple=True)
            orig, s = sent[bi], slot[bi, ri]
            rows = bi * width + parent[bi, ri]
            fin_tokens[orig, s, :step] = hist[rows, 1:]
            fin_tokens[orig, s, step] = cfg.eos_id
            logp = top_score[bi, ri]
            fin_logp[orig, s] = logp
            fin_score[orig, s] = normalize(logp, step + 1, opts.length_norm, opts.alpha)
            fin_len[orig, s] = step + 1
            fin_count[sent] += accept.sum(1)

        ended = alive & (fin_count[sent].ge(k) | limits.max_len[sent].le(step))
        finished[sent[ended]] = True
        alive &= ~ended
        if not bool(alive.any()):
            break

        # -- continue: the k best non-EOS candidates (EOS pushed behind every other rank)
        _, pick = torch.topk(is_eos.long() * n_cand + cand_rank, k, dim=1, largest=False)  # (b, k)
        pick = pick.gather(1, _slots_near_parents(parent.gather(1, pick)))
        scores = top_score.gather(1, pick)
        rows = (torch.arange(b, device=dev)[:, None] * width + parent.gather(1, pick)).view(-1)  # (b * k,)
        new_tokens = token.gather(1, pick).view(-1, 1)
        width = k

        # -- drop finished sentences so the next steps do less work; the cache then makes
        # one gather for both the parents and the dropped sentences
        keep = keep_sentences(alive, k, multiple) if bool(ended.any()) else None
        if keep is not None and keep.numel() < b:
            keep_rows = (keep[:, None] * k + beam_offsets).view(-1)
            rows, new_tokens, scores, sent = rows[keep_rows], new_tokens[keep_rows], scores[keep], sent[keep]
            state.select_sentences(keep, rows=rows)
        else:
            state.reorder(rows)
        hist = torch.cat([hist.index_select(0, rows), new_tokens], dim=1)

    return _collect(fin_tokens[:n_real], fin_score[:n_real], fin_logp[:n_real], fin_len[:n_real],
                    fin_count[:n_real], opts.n_best)


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


def _collect(
    fin_tokens: Tensor, fin_score: Tensor, fin_logp: Tensor, fin_len: Tensor, fin_count: Tensor, n_best: int
) -> list[list[Hypothesis]]:
    """Sort each sentence's finished hypotheses by score and convert the ``n_best`` to Python."""
    order = fin_score.argsort(dim=1, descending=True, stable=True)
    fin_tokens = fin_tokens.gather(1, order[:, :, None].expand_as(fin_tokens)).tolist()
    fin_score, fin_logp = fin_score.gather(1, order).tolist(), fin_logp.gather(1, order).tolist()
    fin_len, counts = fin_len.gather(1, order).tolist(), fin_count.tolist()
    results = []
    for i in range(len(counts)):
        hyps = [
            Hypothesis("", fin_tokens[i][j][: fin_len[i][j] - 1], fin_score[i][j], fin_logp[i][j])
            for j in range(min(n_best, counts[i]))
        ]
        results.append(hyps or [Hypothesis("", [], NEG_INF, NEG_INF)])  # every path was blocked
    return results
