import torch

from mt.config import DecodeOptions
from mt.decode.sampling import add_noise, add_noise_to_text, draw, restrict_
from mt.decode.search import greedy_search
from mt.decode.translator import Translator, generate
from _decode_support import plain, IntText, forced_log_prob, random_sources, src_tensor

IDS = random_sources(10, seed=7)


def _tokens(results):
    return [[h.tokens for h in hyps] for hyps in results]


def test_sampling_reproducible_for_a_seed():
    model = plain()
    for mode in ("topk", "topp"):
        opts = DecodeOptions(sampling=mode, n_best=3, topk=5, topp=0.8, temperature=1.2, seed=4)
        a = generate(model, src_tensor(IDS), opts)
        b = generate(model, src_tensor(IDS), opts)
        c = generate(model, src_tensor(IDS), opts.replace(seed=5))
        assert _tokens(a) == _tokens(b)
        assert _tokens(a) != _tokens(c)
        assert len({tuple(h.tokens) for hyps in a for h in hyps}) > len(IDS)  # samples differ
        for src, hyps in zip(IDS, a):  # scores are the model's log-probs of the samples
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True)
            h = hyps[0]
            assert abs(h.log_prob - forced_log_prob(model, src, h.tokens)) < 1e-4


def test_top1_sampling_is_greedy():
    model = plain()
    sampled = generate(model, src_tensor(IDS), DecodeOptions(sampling="topk", topk=1, n_best=1))
    greedy = greedy_search(model, src_tensor(IDS), DecodeOptions(beam=1))
    assert _tokens(sampled) == _tokens(greedy)


def test_restrict_topk_topp():
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(restrict_(lp.clone(), topk=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(restrict_(lp.clone(), topp=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(restrict_(lp.clone(), topp=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(restrict_(lp.clone(), topp=0.1)).tolist() == [[True, False, False, False]]


def test_topk_draw_has_the_masked_distribution():
    # drawing among the top-k candidates = masking the rest and drawing over the vocabulary
    torch.manual_seed(0)
    lp = torch.randn(1, 50).log_softmax(-1).expand(20000, 50).clone()
    lp[:, 7] = float("-inf")  # a blocked token (e.g. EOS before min_len) never comes out
    g = torch.Generator().manual_seed(3)
    got = torch.bincount(draw(lp, 0.7, 5, 1.0, g), minlength=50).float() / 20000
    want = restrict_(lp[:1] / 0.7, topk=5).softmax(-1)[0]
    assert got[7] == 0 and set(got.nonzero().view(-1).tolist()) <= set(want.nonzero().view(-1).tolist())
    assert torch.allclose(got, want, atol=0.015)


def test_beam_noise():
    words = [f"w{i}" for i in range(200)]
    a = add_noise(words, torch.Generator().manual_seed(1))
    assert a == add_noise(words, torch.Generator().manual_seed(1))
    dropped = 200 - len(a)
    assert 5 < dropped < 40 and 5 < a.count("<blank>") < 40
    kept = [w for w in a if w != "<blank>"]
    pos = {w: i for i, w in enumerate(kept)}
    order = sorted(pos, key=lambda w: int(w[1:]))
    assert all(abs(pos[w] - i) <= 3 for i, w in enumerate(order))  # local shuffle only
    tr = Translator(plain(), IntText())
    texts = [" ".join(map(str, x)) for x in IDS]
    clean = tr.translate_batch(texts, DecodeOptions(beam=3))
    noisy = tr.translate_batch(texts, DecodeOptions(beam=3, sampling="beam_noise", seed=3))
    assert [h[0].tokens for h in clean] == [h[0].tokens for h in noisy]  # same search
    assert [h[0].text for h in clean] != [h[0].text for h in noisy]
    assert [h[0].text for h in noisy] == [h[0].text for h in tr.translate_batch(texts, DecodeOptions(beam=3, sampling="beam_noise", seed=3))]


def test_beam_noise_works_on_characters_for_a_language_written_without_spaces():
    zh = "今天天气很好我们去公园散步吧然后一起吃晚饭晚上再看一部电影" * 4  # one whitespace "word"
    gen = torch.Generator().manual_seed(2)
    noisy = add_noise_to_text(zh, gen, "char")
    assert noisy != zh and "<blank>" in noisy and 0.6 * len(zh) < len(noisy.replace("<blank>", "x")) < len(zh)
    assert set(noisy.replace("<blank>", "")) <= set(zh)
    as_words = [add_noise_to_text(zh, torch.Generator().manual_seed(k)) for k in range(40)]
    assert set(as_words) <= {zh, "", "<blank>"}  # word noise can only keep, drop or blank the whole sentence
    assert add_noise_to_text("a b c d", torch.Generator().manual_seed(1)) == " ".join(add_noise(list("abcd"), torch.Generator().manual_seed(1)))
    tr = Translator(plain(), IntText())
    texts = [" ".join(map(str, x)) for x in IDS]
    opts = DecodeOptions(beam=3, sampling="beam_noise", seed=3)
    words = tr.translate_batch(texts, opts)
    tr.text.tgt_lang = "zh"  # the stand-in pipeline's output read as Chinese: noised per character
    chars = tr.translate_batch(texts, opts)
    assert [h[0].text for h in chars] != [h[0].text for h in words]  # the same seed: only the unit differs
