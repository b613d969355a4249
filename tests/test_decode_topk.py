"""Block top-k (mt/decode/topk.py) against torch.topk."""

from __future__ import annotations

import torch

from mt.decode.topk import topk


def test_block_topk_matches_torch_topk():
    g = torch.Generator().manual_seed(0)
    for rows, n, k in [(3, 8000, 10), (7, 40000, 10), (2, 4096, 3), (5, 640, 10), (4, 1000, 5)]:
        x = torch.randn(rows, n, generator=g)
        values, idx = topk(x, k)
        ref_values, ref_idx = x.topk(k, dim=1)
        assert torch.equal(values, ref_values) and torch.equal(idx, ref_idx), (rows, n, k)


def test_block_topk_top_elements_in_one_block_and_infinities():
    x = torch.full((2, 8192), float("-inf"))
    x[0, 64:74] = torch.arange(10.0)  # all ten winners in one block
    x[1, [5, 700, 8191]] = torch.tensor([1.0, 3.0, 2.0])  # only three finite values
    values, idx = topk(x, 10)
    assert idx[0].tolist() == list(range(73, 63, -1))
    assert values[1, :3].tolist() == [3.0, 2.0, 1.0] and idx[1, :3].tolist() == [700, 8191, 5]
    assert torch.isinf(values[1, 3:]).all()
    # the indices of the -inf fillers are valid positions holding -inf
    assert torch.isinf(x[1].gather(0, idx[1, 3:])).all()
