"""The training loop in-process on a tiny synthetic corpus: records, models, budget,
early stopping, gradient accumulation, bad input."""

import json
import math
import shutil

import pytest
import torch

from _train_tiny import make_prepared, write_config
from mt.config import ConfigError, ModelConfig, load_config
from mt.data.batching import collate
from mt.model import Transformer
from mt.train.loss import label_smoothed_nll_reference
from mt.train.metrics import read_metrics
from mt.data.sources import interleave_order
from mt.train.trainer import Trainer, optimizer_update, scores_by_part, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("shared") / "run")


def _cfg(tmp_path, data_dir, overrides=(), **train):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    if not (run / "data").exists():
        (run / "data").symlink_to(data_dir)
    return load_config(write_config(tmp_path / "cfg.yaml", run, **train), list(overrides))


def test_short_run_learns_and_writes_records_and_models(tmp_path, data_dir):
    from mt.modelio import load_model

    cfg = _cfg(tmp_path, data_dir, max_steps=40, valid_every=20, save_every=20, log_every=5)
    state = train(cfg)
    run = cfg.run_path
    assert state.step == 40 and state.stop_reason.startswith("max_steps")
    records = read_metrics(run / "metrics.jsonl")
    tr = [r for r in records if r["kind"] == "train"]
    va = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in tr] == list(range(5, 41, 5)) and [r["step"] for r in va] == [20, 40]
    assert tr[-1]["loss"] < tr[0]["loss"] - 0.5  # it learns
    assert va[-1]["loss"] < va[0]["loss"] and va[-1]["ppl"] == pytest.approx(math.exp(va[-1]["nll"]))
    for key in ("tokens_per_s", "tgt_tokens_per_s", "lr", "grad_norm", "mfu", "rss_mib"):
        assert tr[-1][key] > 0
    assert tr[-1]["tokens_per_s"] > tr[-1]["tgt_tokens_per_s"]
    assert records[-1]["kind"] == "summary" and records[-1]["best_step"] == 40
    assert (run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("model_best", "model_last"):
        loaded = load_model(run / name)
        assert loaded.meta["step"] == 40 and loaded.model.cfg.vocab_size == loaded.text.vocab_size
    assert [p.name for p in (run / "checkpoints").iterdir()] != []


def test_gradient_accumulation_equals_one_big_batch():
    """Normalising by the update's token count: [A, B] with accumulation == A+B at once."""
    torch.manual_seed(0)
    cfg = ModelConfig(preset=None, vocab_size=30, d_model=16, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=32, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(4, 30, (int(n),), generator=g).numpy() for n in torch.randint(2, 9, (10,), generator=g)]
    whole = collate(seqs, seqs[::-1], 0, 2, 3)
    parts = [collate(seqs[:4], seqs[::-1][:4], 0, 2, 3), collate(seqs[4:], seqs[::-1][4:], 0, 2, 3)]
    results = []
    for batches in ([whole], parts):
        torch.manual_seed(0)
        model = Transformer(cfg)
        # SGD with lr 1 turns the gradient into the weight change (Adam's first step,
        # ~lr * sign(g), would amplify rounding noise of near-zero gradients); the clip
        # threshold is out of reach so a wrong constant factor would show too
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        n = sum(b.n_tgt_tokens for b in batches)
        loss, nll, norm = optimizer_update(model, model, opt, batches, n, 0.1, 0, torch.device("cpu"), False, 1e9)
        results.append((loss, norm, [p.detach().clone() for p in model.parameters()]))
    (l1, n1, p1), (l2, n2, p2) = results
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(n1, n2)
    assert n1 > 0
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and both are one SGD step on the per-token mean loss (plain autograd reference)
    torch.manual_seed(0)
    model = Transformer(cfg)
    before = [p.detach().clone() for p in model.parameters()]
    ref = label_smoothed_nll_reference(model(whole.src, whole.tgt_in), whole.tgt_out, 0.1, 0)
    (ref.loss / whole.n_tgt_tokens).backward()
    for w0, w1, p in zip(before, p1, model.parameters()):
        torch.testing.assert_close(w0 - p.grad, w1, rtol=1e-5, atol=1e-6)


def test_time_budget_stops_the_run_and_still_saves(tmp_path, data_dir):
    cfg = _cfg(tmp_path, data_dir, max_steps=1_000_000, max_time_minutes=0.03, valid_every=50, save_every=1000, log_every=50)
    state = train(cfg)
    assert state.stop_reason.startswith("time budget")
    assert state.elapsed < 0.03 * 60 + 1.5  # the final validation + saves fit (nearly) in the budget
    assert (cfg.run_path / "model_last").is_dir() and (cfg.run_path / "model_best").is_dir()
    assert (cfg.run_path / "checkpoints" / f"step_{state.step:08d}").is_dir()


def test_early_stopping_after_patience(tmp_path, data_dir, monkeypatch, capsys):
    losses = iter([3.0, 2.0, 2.5, 2.1, 2.05, 1.0])
    monkeypatch.setattr(Trainer, "valid_loss", lambda self: {"loss": next(losses)})
    cfg = _cfg(tmp_path, data_dir, max_steps=100, valid_every=2, patience=3, save_every=100, best_metric="bleu")
    state = train(cfg)
    assert "best loss 2.0 at step 4" in capsys.readouterr().err  # no BLEU (valid_bleu off): loss decided
    assert state.step == 10 and "early stopping" in state.stop_reason
    assert state.best == 2.0 and state.best_step == 4
    best = json.loads((cfg.run_path / "model_best" / "config.json").read_text())
    assert best["meta"]["step"] == 4


def test_valid_bleu_uses_the_decoder(tmp_path, data_dir):
    cfg = _cfg(tmp_path, data_dir, max_steps=4, valid_every=4, valid_bleu=True, valid_bleu_sentences=5, best_metric="bleu")
    train(cfg)
    va = [r for r in read_metrics(cfg.run_path / "metrics.jsonl") if r["kind"] == "valid"]
    assert va[-1]["bleu_sentences"] == 5 and 0.0 <= va[-1]["bleu"] <= 100.0 and va[-1]["chrf"] >= 0.0
    assert va[-1]["best_metric"] == "bleu"


def test_scores_by_part_splits_outputs_by_their_corpus():
    refs = [f"sentence number {i} of the valid set" for i in range(10)]
    order = interleave_order([6, 4])  # line j is from part order[j]
    hyps = [r if order[j] == 0 else "zzz" for j, r in enumerate(refs)]
    parts = scores_by_part(hyps, refs, [("good", 6), ("bad", 4)], "13a")
    assert parts["good"]["bleu"] == pytest.approx(100.0) and parts["bad"]["bleu"] == pytest.approx(0.0)
    assert (parts["good"]["sentences"], parts["bad"]["sentences"]) == (6, 4)
    first = scores_by_part(hyps[:1], refs[:1], [("good", 6), ("bad", 4)], "13a")  # a prefix: parts with lines only
    assert list(first) == ["good"]


def test_an_interleaved_valid_set_is_scored_per_corpus(tmp_path, data_dir):
    """manifest.json's counts.valid.parts (written by `mt prepare` for a valid list) adds each
    corpus's BLEU/chrF to the valid records, for the lines validation decoded."""
    own = tmp_path / "run" / "data"
    shutil.copytree(data_dir, own)
    (own / "manifest.json").write_text(json.dumps({"counts": {"valid": {"pairs": 20, "parts": [
        {"name": "x", "pairs": 12}, {"name": "y", "pairs": 8}]}}}))  # fmt: skip
    cfg = _cfg(tmp_path, data_dir, max_steps=4, valid_every=4, valid_bleu=True, valid_bleu_sentences=10)
    train(cfg)
    va = [r for r in read_metrics(cfg.run_path / "metrics.jsonl") if r["kind"] == "valid"][-1]
    order = interleave_order([12, 8])[:10]
    assert {k: v["sentences"] for k, v in va["parts"].items()} == {"x": order.count(0), "y": order.count(1)}
    assert all(0.0 <= v["bleu"] <= 100.0 and v["chrf"] >= 0.0 for v in va["parts"].values())


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.n_heads=3", "n_heads"),
        ("train.lr=-0.1", "train.lr"),
        ("model.preset=enormous", "model.preset"),
        ("train.min_lr=1.0", "train.min_lr"),
        ("train.betas=[0.9, 1.5]", "train.betas"),
        ("train.device=gpu0", "train.device"),
        ("train.max_time_minutes=0", "train.max_time_minutes"),
        ("train.precision=fp8", "train.precision"),
    ],
)
def test_impossible_config_fails_before_training(tmp_path, data_dir, override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _cfg(tmp_path, data_dir, [override])


def test_missing_prepared_data_says_run_prepare(tmp_path, capsys):
    from mt.cli import main

    cfg = write_config(tmp_path / "cfg.yaml", tmp_path / "nowhere")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "prepared data not found" in err and "mt prepare" in err


def test_model_longer_than_max_positions_is_rejected(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="max_positions"):
        Trainer(_cfg(tmp_path, data_dir, ["model.max_positions=4"]))


def test_a_few_pairs_longer_than_max_positions_are_left_out_with_a_note(tmp_path, capsys):
    """One stray overlong pair (a JSON line in monolingual text) must not stop a
    back-translation round; many mean the model is too short for the corpus."""
    few = make_prepared(tmp_path / "few" / "run", long_pairs=1)
    state = train(_cfg(tmp_path / "few", few, max_steps=4, valid_every=4, save_every=4))
    assert state.step == 4
    assert "leaving out 1 of 301 training pairs longer than model.max_positions=64" in capsys.readouterr().err
    many = make_prepared(tmp_path / "many" / "run", long_pairs=4)
    with pytest.raises(ConfigError, match="4 of 304 training pairs .* longer than max_positions"):
        Trainer(_cfg(tmp_path / "many", many))
