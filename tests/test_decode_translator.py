import io
import json
import sys
import warnings

import pytest
import torch

from mt.cli import build_parser
from mt.config import ModelConfig
from mt.config import DecodeOptions
from mt.decode.options import from_args
from mt.decode.translator import Translator
from mt.model import Transformer
from _decode_support import plain, IntText, random_sources, toy_model


def test_translate_restores_order_and_detokenises():
    tr = Translator(plain(), IntText())
    ids = random_sources(9, seed=2)
    texts = [" ".join(map(str, x)) for x in ids]
    out = tr.translate_batch(texts, DecodeOptions(beam=2, max_tokens=20))
    alone = [tr.translate_batch([t], DecodeOptions(beam=2))[0][0] for t in texts]
    assert [h[0].tokens for h in out] == [a.tokens for a in alone]
    assert all(h[0].text == " ".join(map(str, h[0].tokens)) for h in out)


def test_parallel_workers_give_identical_output_and_restore_threads():
    """workers=2 decodes batches on two threads: same tokens and scores as one worker, for
    beam search and for seeded sampling (one generator per batch), and torch's thread count
    is restored afterwards."""
    model = plain()
    texts = [" ".join(map(str, x)) for x in random_sources(40, seed=4)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for opts in (DecodeOptions(beam=3, max_tokens=40),
                     DecodeOptions(beam=1, sampling="topk", topk=5, n_best=2, seed=7, max_tokens=40)):
            one = Translator(model, IntText(), workers=1).translate_batch(texts, opts)
            seen = []
            two = Translator(model, IntText(), workers=2).translate_batch(texts, opts, progress=seen.append)
            assert [[(h.tokens, h.score) for h in x] for x in one] == [[(h.tokens, h.score) for h in x] for x in two]
            assert sum(seen) == len(texts) and len(seen) > 2  # several batches, all reported
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="workers"):
        Translator(model, IntText(), workers=0)


def test_empty_input_gives_empty_translation():
    tr = Translator(plain(), IntText())
    out = tr.translate_batch(["", "5 6 7", "   "], DecodeOptions(beam=3, n_best=2))
    assert out[0][0].text == "" and out[0][0].tokens == [] and out[2][0].text == ""
    assert out[1][0].text != "" and len(out[1]) == 2
    assert tr.translate_batch([], DecodeOptions()) == []


def test_overlong_input_is_truncated_with_warning():
    model = plain(toy_model(max_positions=24))
    tr = Translator(model, IntText())
    long = " ".join(["7"] * 40)
    with pytest.warns(UserWarning, match="truncated"):
        out = tr.translate_batch([long, "5 6"], DecodeOptions(beam=2))
    assert len(out[0][0].tokens) <= 23
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr.translate_batch(["5 6"], DecodeOptions(beam=2))  # no warning for a normal sentence


def test_options_validation_and_flags():
    with pytest.raises(ValueError, match="n_best"):
        DecodeOptions(beam=2, n_best=3)
    with pytest.raises(ValueError, match="length_norm"):
        DecodeOptions(length_norm="wu")
    with pytest.raises(ValueError, match="alpha"):
        DecodeOptions(alpha=float("nan"))
    args = build_parser().parse_args(["translate", "--model", "x", "--beam", "3", "--n-best", "2"])
    o = from_args(args, DecodeOptions(alpha=0.6, beam=7))
    assert o.beam == 3 and o.n_best == 2 and o.sampling == "none" and o.alpha == 0.6  # flags over the base
    args = build_parser().parse_args(["translate", "--model", "x", "--beam", "0"])
    with pytest.raises(ValueError, match="^--beam: must be >= 1"):
        from_args(args)


def test_every_decoding_field_has_one_flag_and_help():
    """The CLI flags are generated from DecodeOptions: one per field, with its help."""
    import dataclasses

    parser = build_parser()
    help_text = parser._subparsers._group_actions[0].choices["translate"].format_help()
    for f in dataclasses.fields(DecodeOptions):
        name = ("--no-" if f.default is True else "--") + f.name.replace("_", "-")
        assert name in help_text, name


# ---------------------------------------------------------------- CLI with a real model dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mt.data.text import TextPipeline, train_sentencepiece
    from mt.modelio import save_model

    tmp = tmp_path_factory.mktemp("decode_model")
    words = ["haus", "baum", "katze", "hund", "rot", "blau", "gross", "klein", "und", "der"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(2 + i % 6)) for i in range(200)]
    (tmp / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm_path = train_sentencepiece([tmp / "corpus.txt"], tmp / "spm", vocab_size=40, byte_fallback=False, num_threads=1)
    text = TextPipeline("de", "en", spm_path, spm_path, False, num_threads=1)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(preset="tiny", vocab_size=text.vocab_size, dropout=0.0))
    save_model(tmp / "model", model, text)
    (tmp / "src.txt").write_text("haus baum\n\nkatze und hund\n", encoding="utf-8")
    (tmp / "ref.txt").write_text("house tree\n\ncat and dog\n", encoding="utf-8")
    return tmp


def _run(argv, stdin=""):
    from mt.cli import main

    old_in, old_out = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = io.StringIO(stdin), io.StringIO()
    try:
        rc = main(argv)
        return rc, sys.stdout.getvalue()
    finally:
        sys.stdin, sys.stdout = old_in, old_out


def test_translate_cli_stdin_and_nbest(model_dir):
    rc, out = _run(["translate", "--model", str(model_dir / "model"), "--beam", "2", "--threads", "2"], "haus baum\n\nkatze\n")
    assert rc == 0 and len(out.splitlines()) == 3 and out.splitlines()[1] == ""
    rc, out = _run(["translate", "--model", str(model_dir / "model"), "--beam", "3", "--n-best", "3",
                    "-i", str(model_dir / "src.txt")])  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    assert rc == 0 and [r[0] for r in rows] == ["0", "0", "0", "1", "2", "2", "2"]
    scores = [float(r[1]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)


def test_evaluate_cli_prints_scores_and_json(model_dir, tmp_path):
    rc, out = _run(["evaluate", "--model", str(model_dir / "model"), "--src", str(model_dir / "src.txt"),
                    "--ref", str(model_dir / "ref.txt"), "--beam", "2", "--hyp-out", str(tmp_path / "hyp.txt")])  # fmt: skip
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("BLEU = ") and "nrefs:1" in lines[0] and lines[1].startswith("chrF = ")
    record = json.loads(lines[2])
    assert {"bleu", "chrf", "bleu_signature", "chrf_signature", "mean_len", "empty"} <= set(record)
    assert len((tmp_path / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 3
    rc, out = _run(["evaluate", "--model", str(model_dir / "model"), "--src", str(model_dir / "src.txt"),
                    "--ref", str(model_dir / "ref.txt"), "--beam-sweep", "1,2"])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["length_norm"], r["beam"]) for r in rows] == [(m, b) for m in ("avg", "gnmt", "none") for b in (1, 2)]


def test_shortlist_cli_then_decode_with_it(model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir / "model", model)
    rc, out = _run(["translate", "--model", str(model), "--shortlist"], "haus\n")
    assert rc == 2  # no shortlist yet: a clear error (printed to stderr)
    (tmp_path / "train.de").write_text("haus baum\nkatze und hund\nhaus\n", encoding="utf-8")
    (tmp_path / "train.en").write_text("house tree\ncat and dog\nhouse\n", encoding="utf-8")
    rc, out = _run(["shortlist", "--model", str(model), "--src", str(tmp_path / "train.de"),
                    "--tgt", str(tmp_path / "train.en"), "--frequent", "4", "--per-source", "8",
                    "--check-src", str(tmp_path / "train.de"), "--check-tgt", str(tmp_path / "train.en")])  # fmt: skip
    report = json.loads(out)
    assert rc == 0 and report["sentences"] == 3 and (model / "shortlist.safetensors").is_file()
    assert report["check"]["token_coverage"] == 1.0  # every training target token is listed for its source
    rc, out = _run(["evaluate", "--model", str(model), "--src", str(model_dir / "src.txt"),
                    "--ref", str(model_dir / "ref.txt"), "--beam", "2", "--shortlist", "--workers", "1"])  # fmt: skip
    assert rc == 0 and json.loads(out.splitlines()[2])["shortlist"] is True


def test_model_dir_missing_file_is_a_clear_error(model_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir / "model", broken)
    (broken / "model.safetensors").unlink()
    from mt.cli import main

    rc = main(["translate", "--model", str(broken)])
    assert rc == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_corpus_scores():
    from mt.evaluate import corpus_scores

    s = corpus_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert s["bleu"] == pytest.approx(100.0) and s["chrf"] == pytest.approx(100.0)
    assert s["bleu_signature"].startswith("nrefs:1") and "nc:6" in s["chrf_signature"]
    with pytest.raises(ValueError):
        corpus_scores(["a"], ["a", "b"])


def test_workers_and_threads_must_be_positive(capsys):
    for flag in ("--workers", "--threads"):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["translate", "--model", "m", flag, "0"])
        assert e.value.code == 2 and f"argument {flag}: must be >= 1" in capsys.readouterr().err


def test_shortlist_cli_bad_input_is_a_clear_error(model_dir, tmp_path, capsys):
    from mt.cli import main

    (tmp_path / "a.de").write_text("haus\nbaum\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("house\n", encoding="utf-8")
    base = ["shortlist", "--model", str(model_dir / "model")]
    assert main(base + ["--src", str(tmp_path / "a.de"), "--tgt", str(tmp_path / "a.en")]) == 2
    err = capsys.readouterr().err
    assert "a.de has 2 lines" in err and "a.en has 1 lines" in err
    assert main(base + ["--src", str(tmp_path / "a.de"), "--tgt", str(tmp_path / "a.de"),
                        "--check-src", str(tmp_path / "a.de")]) == 2  # fmt: skip
    assert "--check-src and --check-tgt go together" in capsys.readouterr().err
    assert not (model_dir / "model" / "shortlist.safetensors").exists()  # nothing written on error
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--src", "a", "--tgt", "b", "--per-source", "0"])


def test_model_directory_remembers_its_decoding_defaults(model_dir, tmp_path):
    """save_model stores the search settings; Translator.load and `mt translate` use them,
    and flags override them."""
    from mt.modelio import load_model, save_model, stored_decode_options

    loaded = load_model(model_dir / "model")
    stored = DecodeOptions(beam=3, max_len_a=0.0, max_len_b=2, length_norm="none", int8=True)
    save_model(tmp_path / "m", loaded.model, loaded.text, decode=stored)
    got = stored_decode_options(tmp_path / "m")
    assert (got.beam, got.max_len_a, got.max_len_b, got.length_norm) == (3, 0.0, 2, "none")
    assert not got.int8  # the search settings are stored, not how one machine ran the model
    tr = Translator.load(tmp_path / "m")
    assert tr.options == got
    assert all(len(h[0].tokens) <= 2 for h in tr.translate_batch(["haus baum katze und hund rot blau"]))
    assert Translator.load(tmp_path / "m", max_len_b=6).options.max_len_b == 6
    rc, out = _run(["translate", "--model", str(tmp_path / "m"), "--max-len-b", "1", "--n-best", "2"], "haus baum\n")
    assert rc == 0 and len(out.splitlines()) == 2  # n-best over the stored beam of 3
    assert stored_decode_options(model_dir / "model") == DecodeOptions()  # none stored: the defaults


# ---------------------------------------------------------------- documents (mt/documents.py)


def test_translate_takes_documents_and_batches_their_sentences_together(model_dir):
    """`translate` splits each text into sentences, translates all of them in one
    translate_batch call, and joins them back into each text's layout; split=False is the
    sentence-per-text behaviour of translate_batch."""
    tr = Translator.load(model_dir / "model", beam=2, max_len_a=0.0, max_len_b=4)  # short: a random model
    docs = ["Haus baum. Katze und hund.\n\nRot blau.", "  Klein.  ", ""]
    sentences = ["Haus baum.", "Katze und hund.", "Rot blau.", "Klein."]
    calls = []
    original = tr.translate_batch
    tr.translate_batch = lambda texts, *a, **k: calls.append(list(texts)) or original(texts, *a, **k)
    a, b, c, d = [h[0].text for h in original(sentences)]
    assert tr.translate(docs) == [f"{a} {b}\n\n{c}", f"  {d}  ", ""]
    assert calls == [sentences]  # one call: the sentences of all documents batch together
    assert tr.translate(docs[:1], split=False) == [original(docs[:1])[0][0].text]
    html = tr.translate(['<p>Haus <b>baum</b>. Katze.</p>'], fmt="html")[0]
    assert html.startswith("<p>") and html.endswith("</p>") and html.count("<b>") == html.count("</b>") == 1


def test_translate_cuts_a_sentence_longer_than_the_model_instead_of_truncating_it():
    tr = Translator(plain(toy_model(max_positions=24)), IntText())  # 23 source subwords at most
    long = " ".join(["7"] * 30 + ["9"] * 10)
    pieces = [" ".join(["7"] * 23), " ".join(["7"] * 7 + ["9"] * 10)]
    opts = DecodeOptions(beam=2, max_len_a=0.0, max_len_b=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning: nothing is cut off
        out = tr.translate([long], opts)
    expect = [h[0].text for h in tr.translate_batch(pieces, opts)]
    assert out == [" ".join(expect)]


def _document_args(model, *flags: str, doc_flags: tuple[str, ...] = ()):
    """`mt translate` arguments with the document flags (``add_document_arguments``) parsed."""
    import argparse

    from mt.decode.translator import add_document_arguments

    args = build_parser().parse_args(["translate", "--model", str(model), *flags])
    parser = argparse.ArgumentParser()
    add_document_arguments(parser)
    vars(args).update(vars(parser.parse_args(list(doc_flags))))
    return args


def test_translate_cli_split_keeps_the_line_structure(model_dir, tmp_path):
    """--split: the input is one document; each line is split into sentences and the output
    has the input's lines, blank ones included. Without it, one sentence per line as before."""
    from mt.decode.translator import translate_cli

    src = tmp_path / "doc.txt"
    src.write_text("Haus baum. Katze und hund.\n\n  Rot blau.\nKlein\n", encoding="utf-8")
    model = model_dir / "model"
    short = ("--beam", "2", "--max-len-a", "0", "--max-len-b", "4")
    tr = Translator.load(model, beam=2, max_len_a=0.0, max_len_b=4)
    a, b, c, d = [h[0].text for h in tr.translate_batch(["Haus baum.", "Katze und hund.", "Rot blau.", "Klein"])]
    out = tmp_path / "out.txt"
    assert translate_cli(_document_args(model, *short, "-i", str(src), "-o", str(out),
                                        doc_flags=("--split",))) == 0
    assert out.read_text(encoding="utf-8") == f"{a} {b}\n\n  {c}\n{d}\n"
    # the default is unchanged: line 1 is one "sentence"
    assert translate_cli(_document_args(model, *short, "-i", str(src), "-o", str(out))) == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[0] == tr.translate_batch(["Haus baum. Katze und hund."])[0][0].text and len(lines) == 5
    html = tmp_path / "page.html"
    html.write_text('<html><body>\n<p class="a>b">Haus <b>baum</b>.</p>\n<!-- x --></body></html>\n', encoding="utf-8")
    assert translate_cli(_document_args(model, *short, "-i", str(html), "-o", str(out),
                                        doc_flags=("--format", "html"))) == 0
    got = out.read_text(encoding="utf-8")
    assert got.startswith('<html><body>\n<p class="a>b">') and got.endswith("</p>\n<!-- x --></body></html>\n")


def test_translate_cli_split_refuses_n_best(model_dir):
    from mt.decode.translator import translate_cli
    from mt.errors import ConfigError

    args = _document_args(model_dir / "model", "--beam", "2", "--n-best", "2", doc_flags=("--split",))
    with pytest.raises(ConfigError, match="^--n-best: 2 is for one sentence per line"):
        translate_cli(args)
