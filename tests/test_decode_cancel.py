"""The cancellation hook of the searches (``should_stop``): asked once per step, True stops
the search at that step with ``DecodeCancelled``; never asked to stop, the output is the same."""

from __future__ import annotations

import pytest

from mt.config import DecodeOptions
from mt.decode.search import DecodeCancelled
from mt.decode.translator import Translator, generate
from _decode_support import IntText, plain, random_sources, src_tensor

IDS = random_sources(6, seed=9)
KINDS = {
    "greedy": DecodeOptions(beam=1, max_len_a=0.0, max_len_b=40, min_len=30),
    "beam": DecodeOptions(beam=4, max_len_a=0.0, max_len_b=40, min_len=30),
    "sample": DecodeOptions(sampling="topk", topk=5, n_best=2, max_len_a=0.0, max_len_b=40, min_len=30),
}


class StopAfter:
    """``should_stop`` double: False for the first ``n`` calls, then True; counts the calls."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.n


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_should_stop_ends_the_search_at_the_next_step(kind):
    model, opts = plain(), KINDS[kind]  # min_len 30: every sentence runs at least 30 steps
    stop = StopAfter(5)
    with pytest.raises(DecodeCancelled, match="step 5"):
        generate(model, src_tensor(IDS), opts, should_stop=stop)
    assert stop.calls == 6  # steps 0-4 ran, step 5 asked and stopped
    never = StopAfter(10**9)
    assert generate(model, src_tensor(IDS), opts, should_stop=never) == generate(model, src_tensor(IDS), opts)
    assert 30 < never.calls <= 41  # once per step


def test_translator_passes_the_hook_to_every_batch():
    """Several batches on two workers: the first True stops them all."""
    tr = Translator(plain(), IntText(), workers=2)
    texts = [" ".join(map(str, ids)) for ids in IDS]
    opts = KINDS["beam"].replace(max_tokens=16)  # a batch per sentence or two
    with pytest.raises(DecodeCancelled):
        tr.translate_batch(texts, opts, should_stop=lambda: True)
    assert tr.translate_batch(texts, opts, should_stop=lambda: False) == tr.translate_batch(texts, opts)
