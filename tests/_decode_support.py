"""Shared fixtures for the decoding tests: a tiny model trained for a few dozen steps on a
toy task (reverse the source), so its outputs have varied lengths and non-degenerate
scores, and a whitespace-integer "text pipeline" for exercising the Translator."""

from __future__ import annotations

import dataclasses
import functools

import torch

from mt.config import ModelConfig
from mt.data.batching import collate, make_source
from mt.model import Transformer

VOCAB = 64


def toy_model(steps: int = 60, seed: int = 0, max_positions: int = 1024) -> Transformer:
    """Tiny transformer (d64, 2+2 layers) trained ``steps`` Adam steps to reverse sequences;
    ``max_positions`` only changes the (sinusoidal) position limit of the same weights."""
    trained = _trained(steps, seed)
    if max_positions == trained.cfg.max_positions:
        return trained
    model = Transformer(dataclasses.replace(trained.cfg, max_positions=max_positions))
    model.load_state_dict(trained.state_dict())
    return model.eval()


@functools.lru_cache(maxsize=None)
def _trained(steps: int, seed: int) -> Transformer:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(preset="tiny", vocab_size=VOCAB, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        lens = torch.randint(1, 12, (32,), generator=g).tolist()
        srcs = [torch.randint(4, VOCAB, (n,), generator=g).numpy() for n in lens]
        b = collate(srcs, [s[::-1].copy() for s in srcs], 0, model.decoder_start_id, 3)
        logits = model(b.src, b.tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def random_sources(n: int, seed: int = 1, max_len: int = 30) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, max_len, (n,), generator=g).tolist()
    return [torch.randint(4, VOCAB, (k,), generator=g).tolist() for k in lens]


def src_tensor(ids: list[list[int]]) -> torch.Tensor:
    return make_source(ids, 0, 3)


def forced_log_prob(model: Transformer, src_ids: list[int], tokens: list[int]) -> float:
    """Teacher-forced (full-sequence) log-probability of ``tokens + [eos]`` (``model``: a
    Transformer or a decoding model)."""
    model = getattr(model, "net", model)
    src = src_tensor([src_ids])
    tgt_in = torch.tensor([[model.decoder_start_id] + tokens])
    with torch.inference_mode():
        lp = torch.log_softmax(model(src, tgt_in).float(), dim=-1)[0]
    target = tokens + [model.cfg.eos_id]
    return float(lp[torch.arange(len(target)), target].sum())


class IntText:
    """A stand-in TextPipeline: text is whitespace-separated token ids ("5 17 9")."""

    vocab_size = VOCAB

    def encode_source(self, texts: list[str]) -> list[list[int]]:
        return [[int(t) for t in s.split()] for s in texts]

    def decode_target(self, ids: list[list[int]]) -> list[str]:
        return [" ".join(str(i) for i in seq) for seq in ids]


def plain(model: Transformer | None = None, **kw):
    """``model`` (default: the toy model) as decoding runs it unpacked in fp32 on CPU, with
    the padding rule probed on this machine."""
    from mt.decode.variant import prepare

    return prepare(model if model is not None else toy_model(), "cpu", pack=False, **kw)
