"""bench/peer_chren_onmt.py's own pieces: the paper's text preparation, its vocabulary, the
checkpoint it scores and the step times it costs (training itself needs OpenNMT-py, which CI
does not install)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _bench_support import bench_script


@pytest.fixture(scope="module")
def bench():
    return bench_script("peer_chren_onmt")


def write_splits(data: Path) -> None:
    en = ["The man said: \"Go home.\"", "the man went home, and slept.", "Then the man said it again."]
    chr_ = ["ᎠᏍᎦᏯ ᎤᏛᏁ, \"ᏫᏍᏓᏩᏗᏒ.\"", "ᎠᏍᎦᏯ ᏭᎶᏒ ᎦᏁᎸᎢ.", "ᎿᏉ ᎠᏍᎦᏯ ᏔᎵᏁ ᎤᏛᏁ."]
    for split in ("train", "dev", "test"):
        (data / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (data / f"{split}.chr").write_text("\n".join(chr_) + "\n", encoding="utf-8")


def test_moses_preparation_splits_punctuation_truecases_english_and_keeps_the_syllabary(bench, tmp_path) -> None:
    write_splits(tmp_path)
    bench.moses_prepare(tmp_path, tmp_path)
    en = (tmp_path / "train.true.en").read_text(encoding="utf-8").splitlines()
    chr_ = (tmp_path / "train.true.chr").read_text(encoding="utf-8").splitlines()
    # sentence-initial "The" becomes the truecaser's "the" (seen lower-cased mid-sentence), "Then"
    # stays (never seen otherwise); quotes are escaped as tokenizer.perl does
    assert en[0].split()[:4] == ["the", "man", "said", ":"] and "&quot;" in en[0]
    assert en[2].split()[0] == "Then"
    assert chr_[1] == "ᎠᏍᎦᏯ ᏭᎶᏒ ᎦᏁᎸᎢ ."
    assert "".join(chr_[1].split()) == "ᎠᏍᎦᏯᏭᎶᏒᎦᏁᎸᎢ."  # nothing but spaces added
    # the paper's scoring undoes both: detruecase + detokenise gives the raw English back
    hyp = tmp_path / "hyp"
    hyp.write_text("\n".join(en) + "\n", encoding="utf-8")
    assert bench.detok(hyp, "en") == ["The man said: \"Go home.\"", "The man went home, and slept.",
                                      "Then the man said it again."]
    hyp.write_text("\n".join(chr_) + "\n", encoding="utf-8")
    assert bench.detok(hyp, "chr")[1] == "ᎠᏍᎦᏯ ᏭᎶᏒ ᎦᏁᎸᎢ."


def test_the_vocabulary_is_every_word_by_frequency_up_to_the_cap(bench, tmp_path) -> None:
    train = tmp_path / "train"
    train.write_text("a b b c c c\nc d\n", encoding="utf-8")
    assert bench.write_vocab(train, tmp_path / "v") == 4
    assert (tmp_path / "v").read_text(encoding="utf-8") == "c\t4\nb\t2\na\t1\nd\t1\n"
    assert bench.write_vocab(train, tmp_path / "v2", cap=2) == 2


def test_the_scored_checkpoint_is_the_newest_complete_one(bench, tmp_path) -> None:
    torch.save({"step": 25}, tmp_path / "model_step_25.pt")
    torch.save({"step": 50}, tmp_path / "model_step_50.pt")
    (tmp_path / "model_step_75.pt").write_bytes(b"cut short by the deadline")
    assert bench.last_checkpoint(tmp_path) == (50, tmp_path / "model_step_50.pt")
    with pytest.raises(SystemExit, match="no complete checkpoint"):
        bench.last_checkpoint(tmp_path / "empty")


def test_step_times_read_onmt_report_lines(bench, tmp_path) -> None:
    log = tmp_path / "train.log"
    log.write_text(
        "[2026-12-04 22:10:19,280 INFO] Step 10/20000; acc: 4.8; ppl: 6255.2; xent: 8.7; lr: 0.00050; "
        "sents:     378; bsz:  598/ 948/38;  83/131 tok/s;     72 sec;\n"
        "[2026-12-04 22:10:30,000 INFO] Validation perplexity: 900.1\n"
        "[2026-12-04 22:11:11,298 INFO] Step 20/20000; acc: 6.0; ppl: 1996.4; xent: 7.6; lr: 0.00050; "
        "sents:     340; bsz:  604/ 948/34; 116/182 tok/s;    124 sec;\n", encoding="utf-8")
    assert bench.step_times(log) == [(10, 72.0), (20, 124.0)]


def test_missing_data_or_peer_is_one_line(bench, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MT_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"ChrEn data not found: .*chren/train\.chr .*MT_DATA_DIR"):
        bench.main(["--src", "chr", "--tgt", "en", "--minutes", "1", "--out", str(tmp_path / "o")])
    (tmp_path / "chren").mkdir()
    write_splits(tmp_path / "chren")
    with pytest.raises(SystemExit, match=r"--onmt-path .*nowhere: no OpenNMT-py there"):
        bench.main(["--src", "chr", "--tgt", "en", "--minutes", "1", "--out", str(tmp_path / "o"),
                    "--onmt-path", str(tmp_path / "nowhere")])
    assert not (tmp_path / "o").exists()  # nothing written before the checks
