import pytest
import torch

from mt.config import DecodeOptions
from mt.decode.search import _slots_near_parents, beam_search, block_repeated_ngrams_, greedy_search
from _decode_support import plain, forced_log_prob, random_sources, src_tensor

IDS = random_sources(24, seed=5)


def test_beam1_equals_greedy():
    model = plain()
    for opts in (DecodeOptions(beam=1), DecodeOptions(beam=1, min_len=3, no_repeat_ngram=2, unk_penalty=1.0)):
        g = greedy_search(model, src_tensor(IDS), opts)
        b = beam_search(model, src_tensor(IDS), opts)
        assert [h[0].tokens for h in g] == [h[0].tokens for h in b]
        assert [h[0].score for h in g] == pytest.approx([h[0].score for h in b], abs=1e-5)


def test_beam_scores_match_forced_decoding():
    """Every reported log-prob equals the teacher-forced score of its tokens, so the cache
    reordering and the bookkeeping of parents are right."""
    model = plain()
    opts = DecodeOptions(beam=5, n_best=5, length_norm="none")
    beam = beam_search(model, src_tensor(IDS[:8]), opts)
    greedy = greedy_search(model, src_tensor(IDS[:8]), opts.replace(beam=1, n_best=1))
    for src, g, hyps in zip(IDS, greedy, beam):
        for h in hyps + g:
            assert h.log_prob == pytest.approx(forced_log_prob(model, src, h.tokens), abs=1e-4)


def test_beam_finds_better_scores_than_greedy():
    """Beam search is not guaranteed to beat greedy on every sentence (the greedy prefix can
    fall out of the beam and the sentence stops once it has ``beam`` finished hypotheses),
    but on this model beam 5 does on most sentences and on average, and beam 30 on all."""
    model = plain()
    opts = DecodeOptions(beam=5, length_norm="none")
    greedy = [h[0].score for h in greedy_search(model, src_tensor(IDS), opts.replace(beam=1))]
    beam = [h[0].score for h in beam_search(model, src_tensor(IDS), opts)]
    assert sum(b >= g - 1e-5 for b, g in zip(beam, greedy)) >= 0.8 * len(IDS)
    assert sum(beam) > sum(greedy) + 1.0
    wide = [h[0].score for h in beam_search(model, src_tensor(IDS), opts.replace(beam=30))]
    assert all(w >= g - 1e-5 for w, g in zip(wide, greedy))


def test_nbest_sorted_and_distinct():
    model = plain()
    for mode in ("avg", "gnmt", "none"):
        for hyps in beam_search(model, src_tensor(IDS), DecodeOptions(beam=4, n_best=4, length_norm=mode)):
            assert len(hyps) == 4
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True)
            assert len({tuple(h.tokens) for h in hyps}) == 4


@pytest.mark.parametrize("beam", [1, 4])
def test_max_and_min_length(beam):
    model = plain()
    ids = [x for x in IDS if len(x) > 5]
    short = DecodeOptions(beam=beam, max_len_a=0.5, max_len_b=1)
    for src, hyps in zip(ids, (greedy_search if beam == 1 else beam_search)(model, src_tensor(ids), short)):
        assert all(len(h.tokens) <= int(0.5 * len(src) + 1) for h in hyps)
    unconstrained = DecodeOptions(beam=beam, min_len=0, max_len_a=2.0)
    long = unconstrained.replace(min_len=25)
    search = greedy_search if beam == 1 else beam_search
    base = search(model, src_tensor(ids), unconstrained)
    assert any(len(h[0].tokens) < 25 for h in base)  # so the min-length test means something
    for src, hyps in zip(ids, search(model, src_tensor(ids), long)):
        assert all(len(h.tokens) >= min(25, int(2.0 * len(src) + 10)) for h in hyps)


def test_empty_output_possible_only_without_min_len():
    model = plain()
    opts = DecodeOptions(beam=2, min_len=1)
    assert all(len(h[0].tokens) >= 1 for h in beam_search(model, src_tensor(IDS), opts))


def test_no_repeat_ngram():
    model = plain()
    for n in (1, 2, 3):
        for search, beam in ((greedy_search, 1), (beam_search, 3)):
            opts = DecodeOptions(beam=beam, n_best=beam, no_repeat_ngram=n, max_len_a=2.0)
            for hyps in search(model, src_tensor(IDS), opts):
                for h in hyps:
                    grams = [tuple(h.tokens[i : i + n]) for i in range(len(h.tokens) - n + 1)]
                    assert len(grams) == len(set(grams)), (n, h.tokens)


def test_block_repeated_ngrams_unit():
    lp = torch.zeros(2, 10)
    hist = torch.tensor([[5, 6, 7, 5], [1, 2, 3, 4]])
    block_repeated_ngrams_(lp, hist, 2)  # row 0 ends with 5, and "5 6" occurred → 6 banned
    assert torch.isinf(lp[0, 6]) and torch.isfinite(lp[0]).sum() == 9
    assert torch.isfinite(lp[1]).all()


def test_unk_penalty_and_special_tokens():
    model = plain()
    # make <unk> the most likely token everywhere by biasing its logit through a hook
    from mt.model import Transformer

    orig = Transformer.output_logits

    def biased(self, h):
        out = orig(self, h)
        out[..., self.cfg.unk_id] += 30.0
        return out

    Transformer.output_logits = biased
    try:
        whole = beam_search(model, src_tensor(IDS[:6]), DecodeOptions(beam=2))
        penalised = beam_search(model, src_tensor(IDS[:6]), DecodeOptions(beam=2, unk_penalty=100.0))
    finally:
        Transformer.output_logits = orig
    assert all(1 in h[0].tokens for h in whole)
    assert all(1 not in h[0].tokens for h in penalised)
    for hyps in whole + penalised:  # pad (0) and bos (2) are never generated, eos (3) only at the end
        assert not {0, 2, 3} & set(hyps[0].tokens)


def test_slots_near_parents():
    """Each parent's best child stays in the parent's row; the other children fill the rows
    left free, in rank order."""
    parent = torch.tensor([[0, 0, 1, 3, 0], [2, 2, 2, 2, 2], [4, 3, 2, 1, 0]])
    order = _slots_near_parents(parent)
    assert order.tolist() == [[0, 2, 1, 3, 4], [1, 2, 0, 3, 4], [4, 3, 2, 1, 0]]
    assert sorted(order[0].tolist()) == list(range(5))


def test_greedy_takes_the_argmax_over_a_large_vocabulary():
    """Greedy picks each step's best token through block maxima (``mt.decode.topk``) once the
    vocabulary is large enough for blocks (the toy model's 64 is not): every token must be the
    argmax of the teacher-forced log-probs of its prefix, under the default constraints."""
    from mt.config import ModelConfig
    from mt.decode.search import Limits
    from mt.model import Transformer

    torch.manual_seed(3)
    model = Transformer(ModelConfig(preset="tiny", vocab_size=640, dropout=0.0)).eval()
    cfg, start = model.cfg, model.decoder_start_id
    ids = [[int(t) for t in torch.randint(4, 640, (n,))] for n in (3, 9, 14, 6)]
    opts = DecodeOptions(beam=1, max_len_a=0.0, max_len_b=10)
    hyps = greedy_search(plain(model), src_tensor(ids), opts)
    for src_ids, (h,) in zip(ids, hyps):
        limits = Limits.for_source(src_tensor([src_ids]), model, opts)
        tokens: list[int] = []
        with torch.inference_mode():
            while len(tokens) < int(limits.max_len[0]):
                lp = torch.log_softmax(model(src_tensor([src_ids]), torch.tensor([[start] + tokens])), -1)[0, -1]
                lp[[cfg.pad_id, start, cfg.bos_id]] = float("-inf")
                if len(tokens) < int(limits.min_len[0]):
                    lp[cfg.eos_id] = float("-inf")
                token = int(lp.argmax())
                if token == cfg.eos_id:
                    break
                tokens.append(token)
        assert h.tokens == tokens
        assert h.log_prob == pytest.approx(forced_log_prob(model, src_ids, h.tokens), abs=1e-4)
