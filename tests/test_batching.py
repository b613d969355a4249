"""Binarised corpora and the token-budget batch sampler."""

import numpy as np
import pytest

from mt.data.batching import TokenBatchSampler, collate, make_source
from mt.data.binarize import IndexedDataset, write_indexed


def _sizes(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 60, n)
    tgt = np.maximum(1, src + rng.integers(-5, 6, n))
    return src, tgt


def test_indexed_roundtrip_and_dtype(tmp_path):
    seqs = [[5, 6, 7], [], [65535], list(range(4, 100))]
    assert write_indexed(tmp_path / "c", seqs, vocab_size=65536) == 4
    ds = IndexedDataset(tmp_path / "c")
    assert ds.dtype == np.uint16
    assert [ds[i].tolist() for i in range(len(ds))] == seqs
    assert ds.sizes.tolist() == [3, 0, 1, 96]
    write_indexed(tmp_path / "big", [[70000]], vocab_size=80000)
    assert IndexedDataset(tmp_path / "big")[0].tolist() == [70000]


def test_indexed_rejects_out_of_range_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        write_indexed(tmp_path / "c", [[1], [70000]], vocab_size=1000)
    assert list(tmp_path.iterdir()) == []


def test_indexed_detects_truncation(tmp_path):
    write_indexed(tmp_path / "c", [[5, 6, 7, 8]], vocab_size=100)
    data = (tmp_path / "c.bin").read_bytes()
    (tmp_path / "c.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="corrupt"):
        IndexedDataset(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="mt prepare"):
        IndexedDataset(tmp_path / "missing")


def test_batches_respect_budget_and_cover_every_example_once():
    src, tgt = _sizes()
    sampler = TokenBatchSampler(src, tgt, max_tokens=600, seed=3)
    seen = []
    for batch in sampler:
        cost = len(batch) * (max(src[batch].max(), tgt[batch].max()) + 1)
        assert cost <= 600
        seen.extend(batch.tolist())
    assert sorted(seen) == list(range(len(src)))
    assert sampler.state_dict()["epoch"] == 1  # exhausting an epoch advances it


def test_max_len_leaves_out_only_the_overlong_examples_in_every_epoch():
    src, tgt = _sizes()
    long = [3, 50, len(src) - 1]
    src, tgt = src.copy(), tgt.copy()
    src[long[0]], tgt[long[1]], src[long[2]] = 90, 120, 200
    sampler = TokenBatchSampler(src, tgt, max_tokens=600, seed=3, max_len=80)
    assert sampler.skipped == 3
    for epoch in (0, 1):
        seen = sorted(i for b in sampler.batches(epoch) for i in b.tolist())
        assert seen == [i for i in range(len(src)) if i not in long]
    # a bound every example fits under changes nothing
    fit = TokenBatchSampler(src, tgt, max_tokens=600, seed=3, max_len=201)
    plain = TokenBatchSampler(src, tgt, max_tokens=600, seed=3)
    assert fit.skipped == 0 and [b.tolist() for b in fit.batches()] == [b.tolist() for b in plain.batches()]


def test_length_bucketing_keeps_padding_low():
    src, tgt = _sizes(20000)
    stats = TokenBatchSampler(src, tgt, max_tokens=4096).padding_stats()
    assert stats["padding_waste"] < 0.10
    unsorted_waste = 0.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(src))
    for chunk in np.array_split(order, stats["batches"]):
        s, t = src[chunk] + 1, tgt[chunk] + 1
        unsorted_waste += len(chunk) * (s.max() + t.max()) - s.sum() - t.sum()
    assert stats["padded_tokens"] - stats["real_tokens"] < unsorted_waste / 3


def test_deterministic_for_seed_and_epoch_dependent():
    src, tgt = _sizes()
    a = [b.tolist() for b in TokenBatchSampler(src, tgt, 800, seed=5).batches()]
    b = [b.tolist() for b in TokenBatchSampler(src, tgt, 800, seed=5).batches()]
    c = [b.tolist() for b in TokenBatchSampler(src, tgt, 800, seed=6).batches()]
    assert a == b and a != c
    s = TokenBatchSampler(src, tgt, 800, seed=5)
    assert [x.tolist() for x in s.batches(epoch=1)] != a


def test_resume_mid_epoch_gives_the_same_stream():
    src, tgt = _sizes()
    full = TokenBatchSampler(src, tgt, 700, seed=2)
    expected = [b.tolist() for b in full] + [b.tolist() for b in full]  # two epochs
    first = TokenBatchSampler(src, tgt, 700, seed=2)
    it = iter(first)
    got = [next(it).tolist() for _ in range(7)]
    state = first.state_dict()
    resumed = TokenBatchSampler(src, tgt, 700, seed=2)
    resumed.load_state_dict(state)
    got += [b.tolist() for b in resumed] + [b.tolist() for b in resumed]
    assert got == expected


def test_ranks_partition_the_global_batches():
    src, tgt = _sizes()
    one = TokenBatchSampler(src, tgt, 700, seed=4, world_size=2, rank=0)
    two = TokenBatchSampler(src, tgt, 700, seed=4, world_size=2, rank=1)
    assert len(one) == len(two)
    global_batches = one._global_batches(0)
    interleaved = [b for pair in zip(one.batches(), two.batches()) for b in pair]
    assert [b.tolist() for b in interleaved] == [b.tolist() for b in global_batches]
    with pytest.raises(ValueError, match="world_size"):
        TokenBatchSampler(src, tgt, 700, world_size=1).load_state_dict(one.state_dict())


def test_collate_builds_eos_and_start_tokens():
    b = collate([np.array([5, 6]), np.array([7])], [np.array([8]), np.array([9, 10, 11])], 0, 2, 3)
    assert b.src.tolist() == [[5, 6, 3], [7, 3, 0]]
    assert b.tgt_in.tolist() == [[2, 8, 0, 0], [2, 9, 10, 11]]
    assert b.tgt_out.tolist() == [[8, 3, 0, 0], [9, 10, 11, 3]]
    assert (b.n_src_tokens, b.n_tgt_tokens) == (5, 6)
    assert make_source([[5], []], 0, 3).tolist() == [[5, 3], [3, 0]]
