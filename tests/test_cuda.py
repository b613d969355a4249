"""The CUDA paths: SDPA attention, bf16 decoding, bf16-autocast training, checkpoint loading
on a GPU. Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``python -m pytest tests/test_cuda.py`` (see ``bench/gpu_suite.sh``)."""

from __future__ import annotations

import copy

import pytest
import torch

from _decode_support import random_sources, src_tensor, toy_model
from _train_tiny import make_prepared, write_config
from mt.config import DecodeOptions, load_config
from mt.decode.translator import generate
from mt.decode.variant import prepare

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")
CUDA = torch.device("cuda")


def _tokens(hyps) -> list[list[int]]:
    return [h[0].tokens for h in hyps]


def _on(device: torch.device, dtype: torch.dtype = torch.float32):
    """A copy of the (cached, shared) toy model: ``Module.to`` would move the shared one."""
    return copy.deepcopy(toy_model()).to(device, dtype)


def test_incremental_decoding_equals_full_pass_on_cuda():
    model = _on(CUDA)
    src = src_tensor(random_sources(8, seed=3)).to(CUDA)
    tgt = torch.randint(4, model.cfg.vocab_size, (8, 12), device=CUDA)
    tgt[:, 0] = model.decoder_start_id
    with torch.no_grad():
        full = model(src, tgt)
        state = model.start_state(model.encode(src), beam=1)
        steps = torch.stack([model.decode_step(tgt[:, i], state) for i in range(tgt.shape[1])], 1)
    torch.testing.assert_close(steps, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("beam", [1, 4])
def test_cuda_fp32_search_matches_cpu(beam):
    cpu = prepare(toy_model(), "cpu", pack=False)
    gpu = prepare(toy_model(), CUDA)
    ids = random_sources(24, seed=5)
    opts = DecodeOptions(beam=beam)
    want = _tokens(generate(cpu, src_tensor(ids), opts))
    got = _tokens(generate(gpu, src_tensor(ids).to(CUDA), opts))
    assert got == want


def test_bf16_decoding_runs_and_mostly_agrees_with_fp32():
    gpu = prepare(toy_model(), CUDA)
    ids = random_sources(64, seed=7)
    opts = DecodeOptions(beam=4)
    ref = generate(gpu, src_tensor(ids).to(CUDA), opts)
    half = prepare(toy_model(), CUDA, dtype="bf16")
    out = generate(half, src_tensor(ids).to(CUDA), opts)
    assert all(isinstance(h[0].score, float) and h[0].score == h[0].score for h in out)  # fp32, no NaN
    same = sum(a == b for a, b in zip(_tokens(ref), _tokens(out)))
    assert same >= 0.8 * len(ids), f"bf16 beam search agrees with fp32 on only {same}/{len(ids)} sentences"


def test_bf16_autocast_training_on_cuda_learns(tmp_path):
    from mt.train.metrics import read_metrics
    from mt.train.trainer import train

    run = tmp_path / "run"
    make_prepared(run)
    cfg = load_config(write_config(tmp_path / "cfg.yaml", run, max_steps=40, valid_every=40, save_every=40, log_every=5),
                      ["train.device=cuda", "train.precision=bf16"])  # fmt: skip
    state = train(cfg)
    assert state.step == 40
    tr = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert tr[-1]["loss"] < tr[0]["loss"] - 0.5


def test_translator_load_bf16_on_cuda(tmp_path):
    from mt.decode.translator import Translator
    from mt.train.trainer import train

    run = tmp_path / "run"
    make_prepared(run)
    train(load_config(write_config(tmp_path / "cfg.yaml", run, max_steps=10, valid_every=10, save_every=10)))
    t = Translator.load(run / "model_last", device="cuda", dtype="bf16")
    assert next(t.model.net.parameters()).dtype == torch.bfloat16 and t.device.type == "cuda"
    out = t.translate_batch(["haus baum", ""], DecodeOptions(beam=2))
    assert len(out) == 2 and out[1][0].text == ""


def test_cuda_probe_gives_a_rule_and_holds_it():
    """The invariance probe runs on the GPU as on CPU; where it finds a rule, a sentence
    decodes alike alone and in a batch."""
    dm = prepare(toy_model(), CUDA)
    if not dm.padding.invariant:
        pytest.skip(f"probe: {dm.padding.finding}")
    ids = random_sources(12, seed=9)
    opts = DecodeOptions(beam=3, n_best=3)
    batch = generate(dm, src_tensor(ids).to(CUDA), opts)
    for i in (0, 5, 11):
        alone = generate(dm, src_tensor([ids[i]]).to(CUDA), opts)[0]
        assert [(h.tokens, h.score) for h in alone] == [(h.tokens, h.score) for h in batch[i]]
