"""Forced decoding (mt/decode/score.py, `mt score`): the log-probability of given
translations, per token and per sentence, agrees with teacher forcing and with beam search."""

import io
import sys

import pytest

from mt.config import DecodeOptions
from mt.decode.score import score_ids
from mt.decode.search import beam_search
from _decode_support import forced_log_prob, plain, random_sources, src_tensor, toy_model

IDS = random_sources(12, seed=21, max_len=20)


def test_scores_are_the_teacher_forced_log_probs():
    model = toy_model()
    tgt = [list(reversed(s)) for s in IDS]  # what the toy model was trained to do
    out = score_ids(model, IDS, tgt, DecodeOptions(length_norm="none", max_tokens=60))
    for s, t, got in zip(IDS, tgt, out):
        assert len(got.token_log_probs) == len(t) + 1  # the EOS is scored too
        assert got.log_prob == pytest.approx(forced_log_prob(model, s, t), abs=1e-4)
        assert got.score == got.log_prob  # length_norm none


def test_a_beam_search_output_scores_as_beam_search_scored_it():
    """Scoring beam search's own output gives its log-prob and normalised score back."""
    opts = DecodeOptions(beam=3, length_norm="avg", alpha=0.7)
    hyps = [h[0] for h in beam_search(plain(), src_tensor(IDS), opts)]
    out = score_ids(toy_model(), IDS, [h.tokens for h in hyps], opts)
    assert [o.log_prob for o in out] == pytest.approx([h.log_prob for h in hyps], abs=1e-4)
    assert [o.score for o in out] == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_batching_does_not_change_scores():
    tgt = [s[::2] for s in IDS]
    one = score_ids(toy_model(), IDS, tgt, DecodeOptions(max_tokens=1))
    many = score_ids(toy_model(), IDS, tgt, DecodeOptions(max_tokens=10_000))
    assert [o.log_prob for o in one] == pytest.approx([o.log_prob for o in many], abs=1e-5)


def test_score_cli(tmp_path, monkeypatch, capsys):
    from mt.cli import main
    from _serve_support import make_random_model_dir

    model = make_random_model_dir(tmp_path / "m")
    (tmp_path / "s.txt").write_text("ein haus\nzwei\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("a house\ntwo\n", encoding="utf-8")
    argv = ["score", "--model", str(model), "--src", str(tmp_path / "s.txt"), "--tgt", str(tmp_path / "t.txt")]
    assert main(argv + ["--per-token"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["0", "1"] and all(len(r) == 5 for r in rows)
    for r in rows:  # the per-token column sums to the sentence's log-prob
        assert sum(map(float, r[4].split())) == pytest.approx(float(r[1]), abs=1e-3) and int(r[3]) == len(r[4].split())
    (tmp_path / "t.txt").write_text("a house\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(argv) == 2
    assert "--tgt" in capsys.readouterr().err
