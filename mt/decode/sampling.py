"""Sampling-based generation for back-translation: top-k / top-p / temperature sampling and
"beam + noise" (Edunov et al. 2018, *Understanding Back-Translation at Scale*).

Every random draw goes through one ``torch.Generator`` so a run is reproducible for a
seed (for a fixed batching: unlike search, the random stream is consumed batch by batch).

Scores of sampled outputs are the model's log-probabilities of the chosen tokens (before
temperature / top-k / top-p reshaping, after the decoding constraints), normalised like
beam search's (see :mod:`mt.decode.lengths`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mt.config import DecodeOptions
from mt.data.languages import LengthUnit
from mt.decode.lengths import normalize
from mt.decode.options import Hypothesis
from mt.decode.search import NEG_INF, DecodeCancelled, StopCheck, constrain_, start_run, step_log_probs
from mt.decode.shapes import keep_sentences
from mt.decode.topk import topk as block_topk


def restrict_(logp: Tensor, topk: int = 0, topp: float = 1.0) -> Tensor:
    """Keep the ``topk`` most likely tokens and/or the smallest set whose probability reaches
    ``topp`` (nucleus); ``logp``: ``(rows, vocab)`` log-probs, others set to -inf in place.
    The most likely token always survives."""
    if topk > 0 and topk < logp.shape[-1]:
        kth = logp.topk(topk, dim=-1).values[:, -1:]
        logp.masked_fill_(logp < kth, NEG_INF)
    if topp < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        probs = sorted_lp.softmax(dim=-1)
        # drop a token when the tokens before it already reach topp
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= topp
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        logp.masked_fill_(drop, NEG_INF)
    return logp


def draw(lprobs: Tensor, temperature: float, topk: int, topp: float, generator: torch.Generator) -> Tensor:
    """One token per row of ``lprobs`` ``(rows, vocab)`` → ``(rows,)``. Top-k alone draws
    among the ``topk`` candidates only (a softmax and a draw over k values instead of the
    whole vocabulary: the same distribution, several times cheaper per step)."""
    scaled = lprobs / temperature
    if topk > 0 and topp >= 1.0 and topk < scaled.shape[-1]:
        values, ids = block_topk(scaled, topk)
        pick = torch.multinomial(values.softmax(dim=-1), 1, generator=generator)
        return ids.gather(1, pick).squeeze(1)
    shaped = restrict_(scaled, topk, topp)
    return torch.multinomial(shaped.softmax(dim=-1), 1, generator=generator).squeeze(1)


@torch.inference_mode()
def sample(
    model: Any,
    src: Tensor,
    opts: DecodeOptions,
    generator: torch.Generator,
    vocab_ids: Tensor | None = None,
    should_stop: StopCheck = None,
) -> list[list[Hypothesis]]:
    """``opts.n_best`` independent samples per sentence of ``src`` ``(batch, src_len)``.

    ``opts.sampling``: ``topk`` restricts to ``opts.topk`` tokens, ``topp`` to the nucleus of
    mass ``opts.topp``; both divide log-probs by ``opts.temperature`` first. The samples of a
    sentence share its cross-attention keys/values (``n`` rows per sentence).
    Returned per sentence sorted by score, best first. ``vocab_ids``: an output shortlist or None;
    ``should_stop``: asked once per step, True raises ``DecodeCancelled`` (:mod:`mt.decode.search`).
    """
    cfg = model.cfg
    n = opts.n_best
    run = start_run(model, src, opts, n, n, vocab_ids)
    b0, dev, sent, hist, limits = run.b0, run.src.device, run.sent, run.hist, run.limits
    out = torch.full((b0 * n, run.t_max + 1), cfg.pad_id, dtype=torch.long, device=dev)  # original rows
    log_prob = torch.zeros(b0 * n, device=dev)
    length = torch.zeros(b0 * n, dtype=torch.long, device=dev)
    row_done = torch.zeros(b0 * n, dtype=torch.bool, device=dev)
    offsets = torch.arange(n, device=dev)
    topk = opts.topk if opts.sampling == "topk" else 0
    topp = opts.topp if opts.sampling == "topp" else 1.0
    for step in range(run.t_max + 1):
        if should_stop is not None and should_stop():
            raise DecodeCancelled(f"sampling stopped at step {step}")
        rows = (sent[:, None] * n + offsets).view(-1)  # original row of each decoded row
        lprobs = step_log_probs(model, hist[:, -1], run)
        constrain_(lprobs, hist[:, 1:], step, limits.min_len[sent].repeat_interleave(n),
                   limits.max_len[sent].repeat_interleave(n), model, opts)  # fmt: skip
        tok = draw(lprobs, opts.temperature, topk, topp, generator)
        live = ~row_done[rows]
        out[rows[live], step] = tok[live]
        log_prob[rows[live]] += lprobs.gather(1, tok[:, None]).squeeze(1)[live]
        ended = live & tok.eq(cfg.eos_id)
        length[rows[ended]] = step + 1
        row_done[rows[ended]] = True
        hist = torch.cat([hist, tok[:, None]], dim=1)
        alive = ~row_done[rows].view(-1, n).all(dim=1)  # (b,) sentences with a sample running
        if not bool(alive.any()):
            break
        keep = keep_sentences(alive, n, model.padding)
        if keep.numel() < sent.numel():
            run.state.select_sentences(keep)
            hist = hist.index_select(0, (keep[:, None] * n + offsets).view(-1))
            sent = sent[keep]
    score = normalize(log_prob, length, opts.length_norm, opts.alpha)
    results = []
    for i in range(run.n_real):
        hyps = [
            Hypothesis("", out[r, : length[r] - 1].tolist(), float(score[r]), float(log_prob[r]))
            for r in range(i * n, (i + 1) * n)
        ]
        results.append(sorted(hyps, key=lambda h: -h.score))
    return results


def add_noise(
    words: list[str],
    generator: torch.Generator,
    p_drop: float = 0.1,
    p_blank: float = 0.1,
    max_shift: int = 3,
    filler: str = "<blank>",
) -> list[str]:
    """Edunov et al. (2018) "beam + noise" on one output: delete each word with probability
    ``p_drop``, replace it by ``filler`` with probability ``p_blank``, then shuffle locally so
    no word moves more than ``max_shift`` positions (sort by ``i + U(0, max_shift + 1)``,
    Lample et al. 2018). Works on whitespace words, as in the paper."""
    if not words:
        return words
    u = torch.rand(len(words), generator=generator).tolist()
    kept = [filler if p_drop <= x < p_drop + p_blank else w for w, x in zip(words, u) if x >= p_drop]
    keys = torch.arange(len(kept), dtype=torch.float) + torch.rand(len(kept), generator=generator) * (max_shift + 1)
    return [kept[i] for i in keys.argsort(stable=True).tolist()]


def add_noise_to_text(text: str, generator: torch.Generator, unit: LengthUnit = "word") -> str:
    """:func:`add_noise` on the words of ``text``, or on its characters (``unit="char"``) for
    a language written without spaces (:func:`mt.data.languages.length_unit`), where the whole
    sentence is one whitespace word: noising it would drop or blank the sentence whole."""
    if unit == "char":
        return "".join(add_noise(list(text), generator))
    return " ".join(add_noise(text.split(), generator))
