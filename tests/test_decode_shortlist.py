"""Lexical output shortlists (mt/decode/shortlist.py) and decoding over them."""

from __future__ import annotations

import pytest
import torch

from mt.config import DecodeOptions
from mt.decode.search import beam_search, greedy_search
from mt.decode.shortlist import Shortlist, build, coverage
from mt.decode.translator import Translator
from _decode_support import plain, VOCAB, IntText, random_sources, src_tensor

IDS = random_sources(12, seed=5, max_len=12)


def toy_bitext(n: int = 300, seed: int = 0):
    """Source word w translates to target word w + 1 (ids 4..60); order reversed."""
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, 60, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist()
           for _ in range(n)]
    return src, [[w + 1 for w in reversed(s)] for s in src]


def test_build_puts_the_translation_first_and_counts_frequent_tokens():
    src, tgt = toy_bitext()
    sl = build(src, tgt, VOCAB, frequent=5, per_source=3, always=(3, 1), ignore=(0, 2))
    assert sl.table.shape == (VOCAB, 3)
    for w in range(4, 60):  # Dice ranks the one true translation first
        assert sl.table[w, 0].item() == w + 1
    assert (sl.table[60:] == -1).all() and (sl.table[:4] == -1).all()  # never seen as sources
    counts = torch.bincount(torch.tensor([t for s in tgt for t in s]), minlength=VOCAB)
    assert sorted(sl.frequent.tolist()) == sorted(counts.topk(5).indices.tolist())
    ids = sl.for_sources([[10, 11], [12]])
    assert ids.tolist() == sorted(set(ids.tolist()))  # sorted, unique
    assert {11, 12, 13, 3, 1} <= set(ids.tolist()) and len(ids) <= 5 + 2 + 3 * 3
    cov = coverage(sl, src[:50], tgt[:50])
    assert cov["token_coverage"] == 1.0 and cov["sentences_covered"] == 1.0
    with pytest.raises(ValueError, match="2 source and 1 target"):
        build(src[:2], tgt[:1], VOCAB)


def test_full_shortlist_decodes_like_the_whole_vocabulary():
    model = plain()
    everything = torch.arange(VOCAB)
    for search, opts in [(beam_search, DecodeOptions(beam=3, n_best=2)), (greedy_search, DecodeOptions(beam=1))]:
        whole = search(model, src_tensor(IDS), opts)
        listed = search(model, src_tensor(IDS), opts, everything)
        for a, b in zip(whole, listed):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_decoding_only_produces_shortlisted_tokens():
    model = plain()
    allowed = torch.tensor([1, 3] + list(range(20, 40)))
    for search, opts in [(beam_search, DecodeOptions(beam=4)), (greedy_search, DecodeOptions(beam=1))]:
        for hyps in search(model, src_tensor(IDS), opts, allowed):
            assert set(hyps[0].tokens) <= set(allowed.tolist())
            assert hyps[0].score > float("-inf")


def test_translator_with_shortlist_and_file_roundtrip(tmp_path):
    src, tgt = toy_bitext()
    sl = build(src, tgt, VOCAB, frequent=8, per_source=4, always=(3, 1), ignore=(0, 2))
    sl.save(tmp_path, {"note": "test"})
    loaded = Shortlist.load(tmp_path)
    assert torch.equal(loaded.table, sl.table) and torch.equal(loaded.frequent, sl.frequent)
    assert loaded.always == (3, 1)
    texts = [" ".join(map(str, s)) for s in IDS]
    out = Translator(plain(), IntText(), shortlist=loaded).translate_batch(texts, DecodeOptions(beam=2))
    for s, hyps in zip(IDS, out):
        assert set(hyps[0].tokens) <= set(loaded.for_sources([s]).tolist()) | set(loaded.for_sources(IDS).tolist())
    with pytest.raises(FileNotFoundError, match="mt shortlist"):
        Shortlist.load(tmp_path / "nowhere")
