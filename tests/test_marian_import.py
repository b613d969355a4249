"""`mt import marian`: a MarianMT directory built here (SentencePiece models trained on the spot,
a vocab.json made the way OPUS-MT's are, a random-weight `transformers.MarianMTModel` and a real
`MarianTokenizer`, all saved with `save_pretrained`; nothing is downloaded) becomes an mt model
directory that tokenises like MarianTokenizer, translates like `generate` token for token
(greedy and beam), works with every command, and fine-tunes through data.spm_from + train.init_from.

The synthetic-text tests run anywhere; the Multi30k ones skip without $MT_DATA_DIR/multi30k.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mt.cli import main
from mt.config import DecodeOptions
from mt.data.batching import collate
from mt.data.text import TextPipeline
from mt.modelio import load_model
from _data_support import multi30k_dir

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

TAGS = (">>fra<<", ">>eng<<")  # target-language tokens of a multi-target vocabulary
N_NEW = 24  # new tokens HF may generate (the last one a forced EOS)


# --------------------------------------------------------------------------- building a MarianMT dir


def _train_spm(lines: list[str], prefix: Path, vocab_size: int) -> Path:
    """A SentencePiece model as Marian trains them: its own ids (unk 0, bos 1, eos 2, no
    pad) and its own normaliser (nmt_nfkc), which mt must leave on."""
    spm.set_random_generator_seed(1)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, normalization_rule_name="nmt_nfkc", hard_vocab_limit=False, num_threads=1,
        minloglevel=2,
    )  # fmt: skip
    return prefix.with_suffix(".model")


def _marian_vocab(spm_files: list[Path], tags: tuple[str, ...]) -> list[str]:
    """vocab.json as OPUS-MT has it: ``</s>`` 0, ``<unk>`` 1, language tokens, the pieces of
    both SentencePiece models (in no relation to their SentencePiece ids), ``<pad>`` last."""
    pieces = ["</s>", "<unk>", *tags]
    for path in spm_files:
        sp = spm.SentencePieceProcessor(model_file=str(path))
        pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
    return list(dict.fromkeys(pieces)) + ["<pad>"]


def make_tokenizer_files(work: Path, src_lines: list[str], tgt_lines: list[str], spm_size: int,
                         tags: tuple[str, ...] = ()) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    files = {"source_spm": _train_spm(src_lines, work / "source", spm_size),
             "target_spm": _train_spm(tgt_lines, work / "target", spm_size)}  # fmt: skip
    vocab = _marian_vocab([files["source_spm"], files["target_spm"]], tags)
    files["vocab"] = work / "vocab.json"
    files["vocab"].write_text(json.dumps({p: i for i, p in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    return files


def make_marian(path: Path, files: dict[str, Path], langs: tuple[str, str], init_std: float = 0.3,
                eos_boost: float = 2.0, bias: torch.Tensor | None = None, seed: int = 0) -> Path:
    """A small random MarianMTModel over ``files``' vocabulary plus its MarianTokenizer, both
    ``save_pretrained`` into ``path``. ``bias``: the final logits bias (default: random, with
    EOS ``eos_boost`` likelier so that outputs end at varied lengths, and a rare ``<unk>``)."""
    tok = transformers.MarianTokenizer(str(files["source_spm"]), str(files["target_spm"]), str(files["vocab"]),
                                       source_lang=langs[0], target_lang=langs[1])  # fmt: skip
    vocab_size = len(tok.encoder)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    cfg = transformers.MarianConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256,
        pad_token_id=pad, eos_token_id=eos, forced_eos_token_id=eos, decoder_start_token_id=pad,
        activation_function="swish", scale_embedding=True, init_std=init_std, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
        if bias is None:
            model.final_logits_bias.normal_(0.0, 0.5)
            model.final_logits_bias[0, eos] += eos_boost
            model.final_logits_bias[0, tok.unk_token_id] -= 5.0  # <unk> decodes to nothing: rarely
        else:
            model.final_logits_bias.copy_(bias.reshape(1, -1))
    model.generation_config.num_beams = 4  # as OPUS-MT's generation_config.json has it
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


class ForceEosAtLimit(transformers.LogitsProcessor):
    """mt's (fairseq's) rule at the length limit: only EOS may follow, with its own
    log-probability. HF's ``forced_eos_token_id`` gives it log-probability 0 instead, which
    re-ranks the beam hypotheses that reach the limit (greedy is the same either way)."""

    def __init__(self, step: int, eos: int) -> None:
        self.step, self.eos = step, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] == self.step:  # the decoder start + step - 1 tokens so far
            eos = scores[:, self.eos].clone()
            scores[:] = -math.inf
            scores[:, self.eos] = eos
        return scores


def hf_generate(model, tok, texts: list[str], beam: int) -> list[list[int]]:
    """HF's tokens (decoder start and EOS dropped) with settings mt can match: EOS forced as
    the N_NEW-th token (:class:`ForceEosAtLimit`), pad never generated, length penalty 1 (mt:
    avg, alpha 1), and beam search stopping once ``beam`` hypotheses finished
    (``early_stopping=True``: fairseq's rule, which mt follows)."""
    batch = tok(texts, return_tensors="pt", padding=True)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    model.generation_config.forced_eos_token_id = None  # replaced by ForceEosAtLimit
    with torch.no_grad():
        out = model.generate(
            **batch, num_beams=beam, do_sample=False, max_new_tokens=N_NEW, min_length=0, length_penalty=1.0,
            early_stopping=beam > 1, no_repeat_ngram_size=0, repetition_penalty=1.0, num_return_sequences=1,
            bad_words_ids=[[pad]], logits_processor=transformers.LogitsProcessorList([ForceEosAtLimit(N_NEW, eos)]),
        )  # fmt: skip
    rows = [row[1:] for row in out.tolist()]
    return [row[: row.index(eos)] if eos in row else row for row in rows]


def mt_options(beam: int) -> DecodeOptions:
    # mt forces EOS after max_len tokens; with a=0 that is N_NEW - 1 whatever the source
    return DecodeOptions(beam=beam, min_len=0, max_len_a=0.0, max_len_b=N_NEW - 1, length_norm="avg", alpha=1.0)


def decode_flags(beam: int) -> list[str]:
    return ["--beam", str(beam), "--min-len", "0", "--max-len-a", "0", "--max-len-b", str(N_NEW - 1),
            "--length-norm", "avg", "--alpha", "1.0", "--threads", "1"]  # fmt: skip


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- synthetic text (no data needed)

WORDS_DE = "ein zwei drei hund katze mann frau kind läuft springt spielt im park am strand rot blau grün".split()
WORDS_EN = "a two three dog cat man woman child runs jumps plays in the park at beach red blue green".split()


def _synthetic(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        idx = [rng.randrange(len(WORDS_DE)) for _ in range(rng.randint(2, 8))]
        de = " ".join(WORDS_DE[i] for i in idx) + rng.choice([".", "!", " ?"])
        pairs.append((de.capitalize(), " ".join(WORDS_EN[i] for i in idx) + "."))
    return pairs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A MarianMT dir on synthetic text (spm vocabularies of ~60), imported through the CLI."""
    root = tmp_path_factory.mktemp("tiny")
    pairs = _synthetic(400, 1)
    files = make_tokenizer_files(root / "work", [p[0] for p in pairs], [p[1] for p in pairs], 60, TAGS)
    hf_dir = make_marian(root / "hf", files, ("de", "en"), init_std=0.15, eos_boost=1.5)
    out = root / "imported"
    assert main(["import", "marian", str(hf_dir), str(out)]) == 0
    return {"root": root, "hf": hf_dir, "out": out, "files": files}


def _unseen_sentences() -> list[str]:
    """Held-out sentences, with characters neither model has seen, odd spacing, a full-width
    letter (the SentencePiece normaliser folds it) and language tokens (known and unknown)."""
    texts = [de for de, _ in _synthetic(12, 99)]
    texts += ["Zwei  hunde   spielen\tim Park ✓", "ＡＢＣ katze …", ">>fra<< Ein hund läuft.",
              ">>eng<<Katze springt", ">>xyz<< drei kinder", "ein >>fra<< im text", "", "Ähm – 42 €"]  # fmt: skip
    return texts


def test_tokenizer_equivalence_synthetic(tiny) -> None:
    tok = transformers.MarianTokenizer.from_pretrained(tiny["hf"])
    text = TextPipeline.load(tiny["out"])
    texts = _unseen_sentences()
    ours = text.encode_source(texts)
    assert [ids + [tok.eos_token_id] for ids in ours] == tok(texts).input_ids
    # the language tokens are single ids; an unknown one is <unk>, as MarianTokenizer has it
    assert ours[texts.index(">>fra<< Ein hund läuft.")][0] == tok.convert_tokens_to_ids(">>fra<<")
    assert ours[texts.index(">>xyz<< drei kinder")][0] == tok.unk_token_id
    targets = ["a dog runs in the park.", "two cats ✓ jump"]
    assert [ids + [tok.eos_token_id] for ids in text.encode_target(targets)] == tok(text_target=targets).input_ids


def test_text_pipeline_of_the_imported_dir(tiny) -> None:
    """text.json format 2: Marian's vocabulary, no mt normalisation, special ids from vocab.json."""
    tok = transformers.MarianTokenizer.from_pretrained(tiny["hf"])
    out = tiny["out"]
    cfg = json.loads((out / "text.json").read_text())
    assert cfg["format"] == 2 and cfg["normalize_punct"] == {"de": False, "en": False} and cfg["unicode_form"] == "none"
    assert cfg["vocab"] == {"src": "vocab.json", "tgt": "vocab.json", "pad_id": tok.pad_token_id,
                            "unk_id": tok.unk_token_id, "eos_id": tok.eos_token_id}  # fmt: skip
    assert json.loads((out / "vocab.json").read_text()) == tok.encoder
    text = TextPipeline.load(out)
    pieces = [p for p, _ in sorted(tok.encoder.items(), key=lambda kv: kv[1])]
    assert text.source_vocabulary() == text.target_vocabulary() == pieces
    assert text.joint and text.vocab_size == len(pieces) and text.unk_id == tok.unk_token_id
    assert text.piece_to_id(">>fra<<") == tok.encoder[">>fra<<"] and text.piece_to_id("nope") == tok.unk_token_id
    # decoding: special ids and language tokens never show; the same text as MarianTokenizer's
    ids = text.encode_target(["a dog runs in the park.", "two cats jump"])
    noisy = [[tok.encoder[">>fra<<"], *ids[0], tok.pad_token_id, tok.eos_token_id], [tok.unk_token_id, *ids[1]]]
    assert text.decode_target(noisy) == ["a dog runs in the park.", "two cats jump"]
    from mt.modelio import stored_decode_options

    assert stored_decode_options(out).beam == 4  # generation_config.json's num_beams
    cfg_model = load_model(out).model.cfg
    assert (cfg_model.pad_id, cfg_model.eos_id, cfg_model.unk_id, cfg_model.decoder_start_id) == (
        tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id)  # fmt: skip


@pytest.mark.parametrize("beam", [1, 4])
def test_translate_matches_generate_synthetic(tiny, beam) -> None:
    from mt.decode.translator import Translator

    tok = transformers.MarianTokenizer.from_pretrained(tiny["hf"])
    hf = transformers.MarianMTModel.from_pretrained(tiny["hf"]).eval()
    texts = [t for t in _unseen_sentences() if t]
    ref = hf_generate(hf, tok, texts, beam)
    hyps = Translator.load(tiny["out"], mt_options(beam), workers=1).translate_batch(texts)
    assert [h[0].tokens for h in hyps] == ref
    assert 0 < sum(len(r) < N_NEW - 1 for r in ref) < len(ref)  # both ways of ending occur


# --------------------------------------------------------------------------- bad inputs


def _broken_copy(tiny, tmp_path: Path, name: str) -> Path:
    import shutil

    bad = tmp_path / name
    shutil.copytree(tiny["hf"], bad)
    return bad


def _edit_json(path: Path, **changes) -> None:
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


BAD_INPUTS = {
    "no-source-spm": (lambda d: (d / "source.spm").unlink(), "source.spm"),
    "no-vocab": (lambda d: (d / "vocab.json").unlink(), "vocab.json"),
    "vocab-not-object": (lambda d: (d / "vocab.json").write_text('["</s>", "<unk>"]'), "vocab.json"),
    "vocab-duplicate-id": (lambda d: _edit_json(d / "vocab.json", **{"<pad>": 0}), "vocab.json"),
    "other-architecture": (lambda d: _edit_json(d / "config.json", model_type="bart"), "config.json"),
    "pre-norm": (lambda d: _edit_json(d / "config.json", normalize_before=True), "config.json"),
    "no-weights": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
    "damaged-weights": (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 64), "model.safetensors"),
    "source-spm-not-spm": (lambda d: (d / "source.spm").write_bytes(b"not a model"), "source.spm"),
    "no-tokenizer-config": (lambda d: (d / "tokenizer_config.json").unlink(), "--src-lang"),
    "bad-language": (lambda d: _edit_json(d / "tokenizer_config.json", target_lang="en us"), "target_lang"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_marian_dirs(tiny, tmp_path, capsys, case) -> None:
    """Each ends in one line naming the file (or flag), exit status 2, and no OUT_DIR."""
    damage, named = BAD_INPUTS[case]
    bad = _broken_copy(tiny, tmp_path, case)
    damage(bad)
    out = tmp_path / "out" / "model"
    capsys.readouterr()
    assert main(["import", "marian", str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mt import marian: error: ") and err.count("\n") == 1 and named in err, err
    assert not out.exists() and not any(p.name.startswith(".model") for p in out.parent.glob("*"))


def test_languages_from_flags(tiny, tmp_path) -> None:
    bad = _broken_copy(tiny, tmp_path, "nolang")
    (bad / "tokenizer_config.json").unlink()
    out = tmp_path / "flags"
    assert main(["import", "marian", str(bad), str(out), "--src-lang", "de", "--tgt-lang", "en"]) == 0
    assert (TextPipeline.load(out).src_lang, TextPipeline.load(out).tgt_lang) == ("de", "en")


def test_out_dir_that_is_not_a_model_is_kept(tiny, tmp_path, capsys) -> None:
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["import", "marian", str(tiny["hf"]), str(keep)]) == 2
    assert "not an mt model directory" in capsys.readouterr().err and (keep / "notes.txt").read_text() == "mine"
    # an mt model directory is replaced, as `mt average --out` replaces one
    assert main(["import", "marian", str(tiny["hf"]), str(tiny["out"])]) == 0


def test_pytorch_bin_weights(tiny, tmp_path) -> None:
    """`pytorch_model.bin` (older OPUS-MT uploads) is read with weights_only=True."""
    from safetensors.torch import load_file

    d = _broken_copy(tiny, tmp_path, "bin")
    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    out = tmp_path / "from_bin"
    assert main(["import", "marian", str(d), str(out)]) == 0
    a, b = load_model(out).model.state_dict(), load_model(tiny["out"]).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_separate_untied_vocabularies(tiny, tmp_path) -> None:
    """target_vocab.json (MarianTokenizer's separate_vocabs) and an untied output layer: the
    sides keep their own ids and embeddings, and mt still computes what HF computes."""
    files = tiny["files"]
    vocabs = [_marian_vocab([files[side]], ()) for side in ("source_spm", "target_spm")]
    size = max(len(v) for v in vocabs)
    for k, v in enumerate(vocabs):  # equal sizes (mt's limit), <pad> at the same id
        vocabs[k] = v[:-1] + [f"<unused{i}>" for i in range(size - len(v))] + ["<pad>"]
        (tmp_path / f"v{k}.json").write_text(json.dumps({p: i for i, p in enumerate(vocabs[k])}), encoding="utf-8")
    tok = transformers.MarianTokenizer(str(files["source_spm"]), str(files["target_spm"]), str(tmp_path / "v0.json"),
                                       target_vocab_file=str(tmp_path / "v1.json"), separate_vocabs=True,
                                       source_lang="de", target_lang="en")  # fmt: skip
    cfg = transformers.MarianConfig(
        vocab_size=size, decoder_vocab_size=size, share_encoder_decoder_embeddings=False, tie_word_embeddings=False,
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=size - 1, eos_token_id=0,
        decoder_start_token_id=size - 1, activation_function="gelu", scale_embedding=True, init_std=0.3,
    )  # fmt: skip
    torch.manual_seed(2)
    hf = transformers.MarianMTModel(cfg).eval()
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    out = tmp_path / "out"
    assert main(["import", "marian", str(hf_dir), str(out)]) == 0

    loaded = load_model(out)
    assert not loaded.model.cfg.share_embeddings and not loaded.model.cfg.tie_output and not loaded.text.joint
    assert (loaded.text.source_vocabulary(), loaded.text.target_vocabulary()) == tuple(vocabs)
    texts, targets = [de for de, _ in _synthetic(6, 5)], [en for _, en in _synthetic(6, 5)]
    batch = tok(texts, text_target=targets, return_tensors="pt", padding=True)
    assert [ids + [0] for ids in loaded.text.encode_source(texts)] == tok(texts).input_ids
    assert [ids + [0] for ids in loaded.text.encode_target(targets)] == tok(text_target=targets).input_ids
    tgt_in = torch.cat([torch.full((len(texts), 1), size - 1), batch["labels"][:, :-1].clamp(min=0)], dim=1)
    with torch.no_grad():
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=tgt_in).logits
        got = loaded.model(batch["input_ids"], tgt_in)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    assert loaded.text.decode_target(loaded.text.encode_target(targets)) == tok.batch_decode(
        tok(text_target=targets).input_ids, skip_special_tokens=True)  # fmt: skip


# --------------------------------------------------------------------------- Multi30k


def _head(path: Path, n: int, skip: int = 0) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(skip + n), f)][skip:]


@pytest.fixture(scope="module")
def m30k(tmp_path_factory) -> dict:
    """SentencePiece models (500 pieces a side) on 3000 Multi30k pairs, a multi-target
    vocabulary (>>fra<<, >>eng<<) and a random model over them, imported."""
    data = multi30k_dir()
    root = tmp_path_factory.mktemp("m30k")
    de, en = _head(data / "train.de", 3000), _head(data / "train.en", 3000)
    files = make_tokenizer_files(root / "work", de, en, 500, TAGS)
    hf_dir = make_marian(root / "hf", files, ("de", "en"))
    out = root / "imported"
    assert main(["import", "marian", str(hf_dir), str(out)]) == 0
    return {"root": root, "data": data, "files": files, "hf": hf_dir, "out": out}


def _sentences(m30k) -> list[str]:
    val = _head(m30k["data"] / "val.de", 18)
    return val[:14] + [f">>fra<< {val[14]}", f">>eng<< {val[15]}", f">>fra<<{val[16]}", f">>xyz<< {val[17]}"]


@pytest.mark.parametrize("beam", [1, 4])
def test_cli_translate_matches_generate(m30k, tmp_path, beam) -> None:
    """`mt translate` on the imported directory: HF generate's tokens, and its detokenised text."""
    from mt.decode.translator import Translator

    tok = transformers.MarianTokenizer.from_pretrained(m30k["hf"])
    hf = transformers.MarianMTModel.from_pretrained(m30k["hf"]).eval()
    texts = _sentences(m30k)
    assert [ids + [tok.eos_token_id] for ids in TextPipeline.load(m30k["out"]).encode_source(texts)] == tok(texts).input_ids
    ref = hf_generate(hf, tok, texts, beam)
    hyps = Translator.load(m30k["out"], mt_options(beam), workers=1).translate_batch(texts)
    assert [h[0].tokens for h in hyps] == ref
    assert len({tuple(r) for r in ref}) > len(ref) // 2  # varied outputs, not one degenerate string
    assert 0 < sum(len(r) < N_NEW - 1 for r in ref) < len(ref)  # both ways of ending occur
    src, hyp = write_lines(tmp_path / "src.de", texts), tmp_path / "hyp.en"
    assert main(["translate", "--model", str(m30k["out"]), "-i", str(src), "-o", str(hyp), *decode_flags(beam)]) == 0
    # MarianTokenizer's text of the same tokens (it would print language tokens; mt never does)
    tags = {tok.encoder[t] for t in TAGS}
    expected = tok.batch_decode([[i for i in r if i not in tags] for r in ref], skip_special_tokens=True)
    assert read_lines(hyp) == expected


def test_score_evaluate_serve_backtranslate(m30k, tmp_path, capsys) -> None:
    """The other readers of a model directory: `mt score` (teacher-forced log-probs equal to
    HF's), `mt evaluate`, the server's token counting, back-translation generation."""
    from mt.backtranslate.generate import run_generation
    from serve.engine import build_engine

    tok = transformers.MarianTokenizer.from_pretrained(m30k["hf"])
    hf = transformers.MarianMTModel.from_pretrained(m30k["hf"]).eval()
    out = m30k["out"]
    texts = _head(m30k["data"] / "val.de", 8, skip=20)
    refs = _head(m30k["data"] / "val.en", 8, skip=20)
    src, ref = write_lines(tmp_path / "s.de", texts), write_lines(tmp_path / "r.en", refs)
    scores = tmp_path / "scores.tsv"
    assert main(["score", "--model", str(out), "--src", str(src), "--tgt", str(ref), "-o", str(scores)]) == 0
    batch = tok(texts, text_target=refs, return_tensors="pt", padding=True)
    labels = batch.pop("labels")
    with torch.no_grad():
        lp = F.log_softmax(hf(**batch, labels=labels).logits, -1).gather(2, labels.clamp(min=0)[:, :, None])[:, :, 0]
    expected = (lp * labels.ne(tok.pad_token_id)).sum(1).tolist()
    got = [float(line.split("\t")[1]) for line in read_lines(scores) if line and not line.startswith("index")]
    assert got == pytest.approx(expected, abs=1e-3)

    hyp = tmp_path / "eval.en"
    assert main(["evaluate", "--model", str(out), "--src", str(src), "--ref", str(ref), "--hyp-out", str(hyp),
                 *decode_flags(1)]) == 0  # fmt: skip
    assert "BLEU" in capsys.readouterr().out
    translated = tmp_path / "t.en"
    assert main(["translate", "--model", str(out), "-i", str(src), "-o", str(translated), *decode_flags(1)]) == 0
    assert read_lines(hyp) == read_lines(translated)

    engine = build_engine("m", load_model(out), decoding=False)
    assert engine.count_tokens(texts) == [len(ids) - 1 for ids in tok(texts).input_ids]

    result, merged = run_generation(out, src, tmp_path / "bt", mt_options(1), shard_size=3, progress=False)
    assert merged is not None and read_lines(merged) == read_lines(translated)


# --------------------------------------------------------------------------- fine-tuning


def _valid_loss(model_dir: Path, tok, src: list[str], tgt: list[str]) -> float:
    """Mean per-token NLL of ``model_dir`` on pairs tokenised by MarianTokenizer (not by mt:
    a fine-tuning run on wrongly encoded data would not lower this)."""
    loaded = load_model(model_dir)
    cfg = loaded.model.cfg
    s = [np.asarray(ids[:-1]) for ids in tok(src).input_ids]  # collate appends the EOS again
    t = [np.asarray(ids[:-1]) for ids in tok(text_target=tgt).input_ids]
    b = collate(s, t, cfg.pad_id, loaded.model.decoder_start_id, cfg.eos_id)
    with torch.no_grad():
        logits = loaded.model(b.src, b.tgt_in)
    return F.cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), ignore_index=cfg.pad_id).item()


def test_finetune_from_imported(m30k, tmp_path, capsys) -> None:
    """`mt prepare` (data.spm_from = the imported dir) + `mt train` (train.init_from = it),
    with the sections `mt import marian` prints: the validation loss falls, the run started
    from the imported weights (final_logits_bias, a buffer, is carried over unchanged), and the
    fine-tuned directory keeps Marian's vocabulary."""
    from mt.marian import finetune_config

    data, files = m30k["data"], m30k["files"]
    de, en = _head(data / "train.de", 2000, skip=3000), _head(data / "train.en", 2000, skip=3000)
    # a model that knows the target unigram distribution (its output bias), nothing more
    tok = transformers.MarianTokenizer(str(files["source_spm"]), str(files["target_spm"]), str(files["vocab"]))
    counts = np.ones(len(tok.encoder))
    for ids in tok(text_target=en).input_ids:
        np.add.at(counts, ids, 1)
    bias = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)
    hf_dir = make_marian(m30k["root"] / "hf_ft", files, ("de", "en"), init_std=0.02, bias=bias, seed=1)
    imported = tmp_path / "imported"
    capsys.readouterr()
    assert main(["import", "marian", str(hf_dir), str(imported)]) == 0
    printed = capsys.readouterr().out
    sections = finetune_config(imported.resolve(), load_model(imported).model.cfg)
    assert yaml.safe_dump(sections, sort_keys=False, allow_unicode=True) in printed

    raw = tmp_path / "raw"
    raw.mkdir()
    vde, ven = _head(data / "val.de", 200), _head(data / "val.en", 200)
    for name, lines in (("train.de", de), ("train.en", en), ("val.de", vde), ("val.en", ven)):
        write_lines(raw / name, lines)
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "data": {"src_lang": "de", "tgt_lang": "en", "data_dir": str(raw), **sections["data"],
                 "train": {"src": "train.de", "tgt": "train.en"}, "valid": {"src": "val.de", "tgt": "val.en"}},
        "model": sections["model"],
        "train": {**sections["train"], "seed": 1, "max_tokens": 2500, "lr": 3e-3, "warmup_steps": 5,
                  "schedule": "constant", "max_steps": 40, "threads": 1, "valid_every": 40, "save_every": 40,
                  "log_every": 10, "valid_bleu": True, "valid_bleu_sentences": 40, "best_metric": "loss", "progress": "off",
                  "label_smoothing": 0.0, "peak_tflops": 0.1},
    }  # fmt: skip
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    assert main(["prepare", str(path)]) == 0
    prepared = TextPipeline.load(tmp_path / "run" / "data")
    assert prepared.vocab is not None and prepared.source_vocabulary() == sorted(tok.encoder, key=tok.encoder.get)
    assert prepared.encode_source(vde[:20]) == [ids[:-1] for ids in tok(vde[:20]).input_ids]
    assert main(["train", str(path)]) == 0
    capsys.readouterr()

    before = _valid_loss(imported, tok, vde, ven)
    after = _valid_loss(tmp_path / "run" / "model_last", tok, vde, ven)
    valid_ids = torch.tensor([i for ids in tok(text_target=ven).input_ids for i in ids])
    unigram = -float(torch.log_softmax(bias, 0)[valid_ids].mean())
    assert before == pytest.approx(unigram, rel=0.05)  # the imported model is its output bias
    assert after < before - 0.5, (before, after)  # measured: 5.06 -> 4.28
    # the trainer's own validation (data encoded by `mt prepare`) saw exactly MarianTokenizer's ids
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records if r["kind"] == "valid"][-1] == pytest.approx(after, rel=1e-4)
    start, end = load_model(imported).model, load_model(tmp_path / "run" / "model_last").model
    assert torch.equal(start.final_logits_bias, end.final_logits_bias)
    fine = TextPipeline.load(tmp_path / "run" / "model_last")
    assert fine.vocab == TextPipeline.load(imported).vocab
    _serve_and_translate_with_libretranslatepy(tmp_path / "run" / "model_last", vde[:3])


def _serve_and_translate_with_libretranslatepy(model_dir: Path, texts: list[str]) -> None:
    """The end of the round trip HF Marian → mt → fine-tuned → served: LibreTranslate's own
    client gets what the Translator gives for the same model directory."""
    from libretranslatepy import LibreTranslateAPI

    from mt.decode.translator import Translator
    from serve.app import create_app
    from serve.settings import ServerSettings
    from _serve_support import LiveServer

    expected = Translator.load(model_dir, workers=1).translate(texts)
    app = create_app({"de-en": load_model(model_dir)}, ServerSettings(threads=1, max_tokens_per_text=200))  # the test model has 256 positions
    with LiveServer(app) as url:
        client = LibreTranslateAPI(url + "/")
        got = [client.translate(t, "de", "en") for t in texts]
    assert got == expected and any(got)
