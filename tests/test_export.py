"""``mt export``: the CTranslate2 and HF MarianMT exports translate like mt, token for token.

Random-weight tiny models (weights scaled up so that outputs differ between sentences) are
exported and run by the other toolkit on the same normalised, SentencePiece-encoded input:

* CTranslate2 greedy == mt ``Translator`` greedy for pre-norm, post-norm and every feature
  (activations, learned positions, embedding LayerNorm, untied output, separate
  vocabularies of different sizes, final-logits bias, pad as decoder start);
* CTranslate2 beam 4 == mt beam 4 for every sentence that ends before the maximum length
  (there mt forces EOS and CTranslate2 cuts the hypothesis: a documented difference);
* HF ``MarianMTModel.from_pretrained(export)`` greedy ``generate`` == mt greedy, and
  ``MarianTokenizer`` encodes normalised text to mt's ids + EOS;
* refusals (pre-norm → marian-hf, learned positions, a non-empty OUT_DIR, a damaged model)
  are one-line user errors that leave OUT_DIR absent (or untouched).

The Multi30k test (skipped without ``$MT_DATA_DIR/multi30k``) repeats the round trips on
real text with SentencePiece models trained on a few thousand real lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from _serve_support import synthetic_sentences

from mt.cli import main
from mt.config import DecodeOptions, ModelConfig
from mt.data.text import TextPipeline, normalize, train_sentencepiece
from mt.decode.translator import Translator
from mt.errors import MissingFileError, ModelDirError
from mt.export import ExportError, UnsupportedModelError, export_model
from mt.model import Transformer
from mt.modelio import save_model

ctranslate2 = pytest.importorskip("ctranslate2")

TINY = dict(preset=None, d_model=32, n_heads=4, enc_layers=2, dec_layers=2, ffn_dim=64, dropout=0.0,
            max_positions=128)  # fmt: skip
PAD, BOS, EOS = 0, 2, 3
MAX_LEN = 20  # greedy: random models rarely end, so outputs are this long; they differ by sentence


# --------------------------------------------------------------------------- models


def _spm(work: Path, lines: list[str], vocab: int, name: str) -> Path:
    corpus = work / f"{name}.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train_sentencepiece([corpus], work / name, vocab, num_threads=1)


def _random_model(out: Path, text: TextPipeline, seed: int = 0, eos_bias: float | None = None,
                  specials_bias: float | None = None, **changes) -> Path:
    """A random model whose outputs depend on the source: embeddings N(0, 0.5), projections
    ×3, random biases and norms (mt's initialisation gives one repeated token for every input).
    ``eos_bias``: final-logits bias of EOS (outputs of varied lengths); ``specials_bias``: of
    pad and BOS, which mt never generates: high, a consumer must suppress them too; -1e4,
    masking them before or after the softmax is the same (the beam test)."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=text.vocab_size, **{**TINY, **changes})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed" in name and "norm" not in name or name.endswith("_pos.weight"):
                p.normal_(0.0, 0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.2)
            elif "norm" in name:
                p.normal_(1.0, 0.2)
            else:
                p.mul_(3.0)
        if model.cfg.final_logits_bias:
            model.final_logits_bias.normal_(0.0, 0.5)
            if eos_bias is not None:
                model.final_logits_bias[EOS] = eos_bias
            if specials_bias is not None:
                model.final_logits_bias[[PAD, BOS]] = specials_bias
    return save_model(out, model, text)


MODELS = {
    # name: (ModelConfig changes, which text pipeline)
    "pre": (dict(norm="pre", activation="relu"), "joint"),
    "post": (dict(norm="post", activation="swish", tie_output=False, share_embeddings=False,
                  final_logits_bias=True, eos_bias=3.5, specials_bias=4.0), "separate"),  # fmt: skip
    "post_shared_untied": (dict(norm="post", activation="gelu", tie_output=False, decoder_start_id=PAD), "joint"),
    "exotic": (dict(norm="pre", activation="gelu", positions="learned", layernorm_embedding=True,
                    scale_embedding=False), "joint"),  # fmt: skip
    "beam_pre": (dict(norm="pre", final_logits_bias=True, eos_bias=10.0, specials_bias=-1e4), "joint"),
    "beam_post": (dict(norm="post", activation="swish", final_logits_bias=True, eos_bias=7.0,
                       specials_bias=-1e4), "joint"),  # fmt: skip
}


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, TextPipeline]:
    work = tmp_path_factory.mktemp("spm")
    joint = _spm(work, synthetic_sentences(3000, 1), 500, "joint")
    src = _spm(work, synthetic_sentences(3000, 2), 500, "src")
    tgt = _spm(work, synthetic_sentences(3000, 3, n_words=200), 420, "tgt")  # smaller: placeholders
    return {"joint": TextPipeline("de", "en", joint, normalize_punct=False, num_threads=1),
            "separate": TextPipeline("de", "en", src, tgt, normalize_punct=True, num_threads=1)}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory, texts) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: _random_model(root / name, texts[which], **changes) for name, (changes, which) in MODELS.items()}


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    # a few with what normalisation changes (NFKC, quotes, spaces) on top of synthetic text
    extra = ["Ｄer  „Haus“ ist\u00a0groß !", "ka lo — mi ne ’su’ …", "ﬁne  dasunG\tder ta ."]
    return synthetic_sentences(37, seed=9) + extra


# --------------------------------------------------------------------------- helpers


def _mt_tokens(model_dir: Path, src: list[str], **opts) -> list[list[int]]:
    tr = Translator.load(model_dir, DecodeOptions(**opts), threads=1, workers=1)
    return [h[0].tokens for h in tr.translate_batch(src)]


def _ct2_tokens(export: Path, text: TextPipeline, src: list[str], **overrides) -> list[list[int]]:
    """Translate with CTranslate2 as the export's README says: normalise, SentencePiece
    pieces, ``translate_batch`` with the options of ``mt_preprocessing.json``."""
    settings = json.loads((export / "mt_preprocessing.json").read_text(encoding="utf-8"))
    opts = {**settings["ctranslate2"]["translate_batch"], **overrides}
    translator = ctranslate2.Translator(str(export), device="cpu", intra_threads=1)
    pieces = [text.src_sp.encode(text.normalize_source(x), out_type=str) for x in src]
    results = translator.translate_batch(pieces, **opts)
    name = "shared_vocabulary.json" if (export / "shared_vocabulary.json").exists() else "target_vocabulary.json"
    ids = {p: i for i, p in enumerate(json.loads((export / name).read_text(encoding="utf-8")))}
    return [[ids[p] for p in r.hypotheses[0]] for r in results]


def _nontrivial(outputs: list[list[int]]) -> None:
    assert any(outputs), "every output is empty"
    assert len({tuple(o) for o in outputs}) >= len(outputs) // 3, "outputs barely depend on the source"


@torch.no_grad()
def _assert_same_greedy(model_dir: Path, src: list[str], ours: list[list[int]], theirs: list[list[int]],
                        tie: float = 1e-4) -> None:
    """``theirs == ours`` token for token, except on a numerical tie: where they part, mt's
    own teacher-forced log-probs of the two choices are within ``tie`` (another summation
    order in the other toolkit, not a conversion error; a wrong conversion parts by far more).
    At most one sentence in 20 may end on a tie."""
    from mt.data.batching import make_source
    from mt.modelio import load_model

    loaded = load_model(model_dir)
    net, cfg = loaded.model, loaded.model.cfg
    ties = []
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a == b:
            continue
        k = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        mine, other = (a + [cfg.eos_id])[k], (b + [cfg.eos_id])[k]  # one of them may have ended
        source = make_source(loaded.text.encode_source([src[i]]), cfg.pad_id, cfg.eos_id)
        lp = net(source, torch.tensor([[net.decoder_start_id, *a[:k]]]))[0, -1].log_softmax(-1)
        margin = float(lp[mine] - lp[other])
        assert abs(margin) < tie, f"sentence {i}, token {k}: mt {mine}, export {other} (log-prob margin {margin:.3g})"
        ties.append(i)
    assert len(ties) <= len(src) // 20, f"{len(ties)} numerical ties: {ties}"


def _assert_same_beam(model_dir: Path, src: list[str], ours: list[list[int]], theirs: list[list[int]],
                      tie: float = 1e-4) -> None:
    """Beam search's ``theirs == ours``, except on a numerical tie: where the two searches
    chose differently, mt's own length-normalised scores of the two outputs are within
    ``tie`` (another summation order reordered candidates that score the same; a wrong
    conversion gives outputs that score far apart). At most one sentence in 20 may differ."""
    from mt.decode.score import score_ids
    from mt.modelio import load_model

    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert len(differ) <= len(src) // 20, f"{len(differ)} of {len(src)} beam outputs differ: {differ}"
    if differ:
        loaded = load_model(model_dir)
        ids = loaded.text.encode_source([src[i] for i in differ])
        mine = score_ids(loaded.model, ids, [ours[i] for i in differ], DecodeOptions())
        other = score_ids(loaded.model, ids, [theirs[i] for i in differ], DecodeOptions())
        for i, a, b in zip(differ, mine, other):
            assert abs(a.score - b.score) < tie, f"sentence {i}: mt {ours[i]} ({a.score:.6f}), export {theirs[i]} ({b.score:.6f})"


# --------------------------------------------------------------------------- CTranslate2


@pytest.mark.parametrize("name", ["pre", "post", "post_shared_untied", "exotic"])
def test_ctranslate2_greedy_equals_mt(name, models, texts, sentences, tmp_path):
    out = export_model(models[name], tmp_path / "ct2", "ctranslate2")
    ours = _mt_tokens(models[name], sentences, beam=1, max_len_a=0.0, max_len_b=MAX_LEN)
    theirs = _ct2_tokens(out, texts[MODELS[name][1]], sentences, beam_size=1, max_decoding_length=MAX_LEN)
    _nontrivial(ours)
    _assert_same_greedy(models[name], sentences, ours, theirs)
    config = json.loads((out / "config.json").read_text())
    start = "<pad>" if name == "post_shared_untied" else "<s>"
    assert (config["decoder_start_token"], config["add_source_eos"], config["eos_token"]) == (start, True, "</s>")
    assert (out / "source.spm").read_bytes() == texts[MODELS[name][1]].src_sp.serialized_model_proto()


@pytest.mark.parametrize("name", ["beam_pre", "beam_post"])
def test_ctranslate2_beam_equals_mt_below_max_length(name, models, texts, sentences, tmp_path):
    """Same beam search (candidates, finishing, stopping, EOS-inclusive length penalty) with
    pad/BOS improbable (-1e4) and no minimum length, so masking before or after the softmax
    agree. Sentences that reach the maximum length may differ: mt forces EOS there."""
    max_len, beam = 60, 4
    out = export_model(models[name], tmp_path / "ct2", "ctranslate2")
    ours = _mt_tokens(models[name], sentences, beam=beam, max_len_a=0.0, max_len_b=max_len, min_len=0)
    theirs = _ct2_tokens(out, texts["joint"], sentences, beam_size=beam, max_decoding_length=max_len,
                         min_decoding_length=0)  # fmt: skip
    ended = [i for i, (a, b) in enumerate(zip(ours, theirs)) if len(a) < max_len and len(b) < max_len]
    assert len(ended) >= len(sentences) // 3 and len({len(ours[i]) for i in ended}) >= 4
    _assert_same_beam(models[name], [sentences[i] for i in ended], [ours[i] for i in ended],
                      [theirs[i] for i in ended])
    # and greedy is exact for every sentence, also those cut at the maximum length
    greedy = _mt_tokens(models[name], sentences, beam=1, max_len_a=0.0, max_len_b=max_len, min_len=0)
    _assert_same_greedy(models[name], sentences, greedy, _ct2_tokens(out, texts["joint"], sentences, beam_size=1,
                                                              max_decoding_length=max_len, min_decoding_length=0))


def test_ctranslate2_quantization(models, texts, sentences, tmp_path):
    full = export_model(models["pre"], tmp_path / "fp32", "ctranslate2")
    q = export_model(models["pre"], tmp_path / "int8", "ctranslate2", quantization="int8")
    assert (q / "model.bin").stat().st_size < 0.6 * (full / "model.bin").stat().st_size
    settings = json.loads((q / "mt_preprocessing.json").read_text())
    assert settings["ctranslate2"]["quantization"] == "int8"
    outputs = _ct2_tokens(q, texts["joint"], sentences, beam_size=1, max_decoding_length=MAX_LEN)
    assert len(outputs) == len(sentences) and any(outputs)
    for kind in ("int8_float32", "int16", "float16", "bfloat16"):  # what the spec's optimize accepts
        out = export_model(models["post"], tmp_path / kind, "ctranslate2", quantization=kind)
        assert any(_ct2_tokens(out, texts["separate"], sentences[:4], beam_size=1, max_decoding_length=5))


def test_ctranslate2_separate_vocabularies(models, texts, tmp_path):
    out = export_model(models["post"], tmp_path / "ct2", "ctranslate2")
    src = json.loads((out / "source_vocabulary.json").read_text())
    tgt = json.loads((out / "target_vocabulary.json").read_text())
    text = texts["separate"]
    assert src == text.source_vocabulary()  # the larger side fills the embedding
    assert tgt[: text.tgt_vocab_size] == text.target_vocabulary() and len(tgt) == len(src)
    assert tgt[text.tgt_vocab_size] == f"<mt_unused_{text.tgt_vocab_size}>"
    assert (out / "target.spm").read_bytes() == text.tgt_sp.serialized_model_proto()


# --------------------------------------------------------------------------- HF MarianMT


def _hf_greedy(export: Path, text: TextPipeline, src: list[str], max_len: int) -> tuple[list[list[int]], list]:
    """HF greedy tokens (decoder start and EOS removed) and the tokenizer's input ids."""
    transformers = pytest.importorskip("transformers")
    model, info = transformers.MarianMTModel.from_pretrained(str(export), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tok = transformers.MarianTokenizer.from_pretrained(str(export))
    batch = tok([text.normalize_source(x) for x in src], return_tensors="pt", padding=True)
    with torch.no_grad():  # max_len tokens, then HF forces EOS (mt forces it at step max_len)
        out = model.eval().generate(**batch, num_beams=1, do_sample=False, max_new_tokens=max_len + 1)
    tokens = []
    for row in out[:, 1:].tolist():
        tokens.append(row[: row.index(EOS)] if EOS in row else row)
    ids = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    return tokens, ids


@pytest.mark.parametrize("name", ["post", "post_shared_untied"])
def test_marian_hf_greedy_and_tokenizer_equal_mt(name, models, texts, sentences, tmp_path):
    out = export_model(models[name], tmp_path / "hf", "marian-hf")
    text = texts[MODELS[name][1]]
    ours = _mt_tokens(models[name], sentences, beam=1, max_len_a=0.0, max_len_b=MAX_LEN)
    theirs, input_ids = _hf_greedy(out, text, sentences, MAX_LEN)
    _nontrivial(ours)
    _assert_same_greedy(models[name], sentences, ours, theirs)
    assert input_ids == [ids + [EOS] for ids in text.encode_source(sentences)]
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "source.spm", "target.spm",
            "vocab.json", "tokenizer_config.json", "mt_preprocessing.json", "README.md"} <= files  # fmt: skip
    assert ("target_vocab.json" in files) == (name == "post")


def test_marian_hf_export_reimports_to_the_same_weights(models, texts, sentences, tmp_path):
    """``mt import marian`` reads the export back: the same weights, the same greedy tokens
    (on normalised text: the HF format has no place for mt's normalisation settings, so the
    importer sets none)."""
    from mt.marian import import_marian
    from mt.modelio import load_model

    hf = export_model(models["post"], tmp_path / "hf", "marian-hf")
    back = import_marian(hf, tmp_path / "back")
    ours, theirs = load_model(models["post"]).model.state_dict(), load_model(back).model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    opts = dict(beam=1, max_len_a=0.0, max_len_b=MAX_LEN)
    normalised = [texts["separate"].normalize_source(x) for x in sentences]
    assert _mt_tokens(back, normalised, **opts) == _mt_tokens(models["post"], sentences, **opts)


# --------------------------------------------------------------------------- Argos Translate


def test_argos_package_holds_the_ctranslate2_model_and_one_sentencepiece(models, texts, sentences, tmp_path):
    """The package's ``model/`` is the CTranslate2 export (same greedy tokens from the pieces
    of ``sentencepiece.model``, as Argos encodes them), with Argos' metadata and README."""
    out = export_model(models["pre"], tmp_path / "argos", "argos", quantization="int8")
    ct2 = export_model(models["pre"], tmp_path / "ct2", "ctranslate2", quantization="int8")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "metadata.json", "model", "mt_preprocessing.json",
                                                     "sentencepiece.model"]  # fmt: skip
    assert (out / "model" / "model.bin").read_bytes() == (ct2 / "model.bin").read_bytes()
    text = texts["joint"]
    assert (out / "sentencepiece.model").read_bytes() == text.src_sp.serialized_model_proto()
    meta = json.loads((out / "metadata.json").read_text())
    assert (meta["type"], meta["from_code"], meta["to_code"]) == ("translate", "de", "en")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "sentencepiece.model"))
    pieces = [sp.encode(text.normalize_source(x), out_type=str) for x in sentences]
    opts = dict(beam_size=1, max_decoding_length=MAX_LEN)
    theirs = ctranslate2.Translator(str(out / "model"), intra_threads=1).translate_batch(pieces, **opts)
    ours = ctranslate2.Translator(str(ct2), intra_threads=1).translate_batch(pieces, **opts)
    assert [r.hypotheses for r in theirs] == [r.hypotheses for r in ours] and any(r.hypotheses[0] for r in ours)
    settings = json.loads((out / "mt_preprocessing.json").read_text())
    assert settings["source"]["spm"] == settings["target"]["spm"] == "sentencepiece.model"
    readme = (out / "README.md").read_text()
    assert "libretranslate --load-only de,en" in readme and "ARGOS_CHUNK_TYPE=SPACY" in readme
    assert "**SentencePiece** `sentencepiece.model`" in readme and "source.spm" not in readme


def test_argos_refuses_separate_sentencepiece_models(models, tmp_path):
    with pytest.raises(UnsupportedModelError, match="separate source and target SentencePiece models"):
        export_model(models["post"], tmp_path / "argos", "argos")
    assert not (tmp_path / "argos").exists()


# --------------------------------------------------------------------------- engine: ctranslate2


@pytest.fixture()
def ct2_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MT_CT2_CACHE", str(tmp_path / "ct2cache"))
    return tmp_path / "ct2cache"


def _translator(model_dir: Path, **opts) -> Translator:
    return Translator.load(model_dir, DecodeOptions(**opts), threads=1, workers=1)


@pytest.mark.parametrize("name", ["pre", "post"])
def test_engine_ctranslate2_greedy_equals_the_torch_engine(name, models, sentences, ct2_cache):
    """Through mt's own text pipeline and batches, CTranslate2's greedy tokens are mt's
    (separate vocabularies included)."""
    opts = dict(beam=1, max_len_a=0.0, max_len_b=MAX_LEN, dtype="fp32")
    ct2 = _translator(models[name], engine="ctranslate2", **opts)
    assert ct2.model.describe() == "CTranslate2 float32" and not ct2.model.padding.invariant
    theirs = ct2.translate_batch(sentences)
    ours = Translator.load(models[name], DecodeOptions(**opts), threads=1, workers=1).translate_batch(sentences)
    _nontrivial([h[0].tokens for h in ours])
    _assert_same_greedy(models[name], sentences, [h[0].tokens for h in ours], [h[0].tokens for h in theirs])
    assert all(a[0].text == b[0].text for a, b in zip(ours, theirs) if a[0].tokens == b[0].tokens)


def test_engine_ctranslate2_beam_and_n_best(models, sentences, ct2_cache):
    opts = dict(beam=4, n_best=2, max_len_a=0.0, max_len_b=60, min_len=0, dtype="fp32")
    ours = _translator(models["beam_pre"], **opts).translate_batch(sentences)
    theirs = _translator(models["beam_pre"], engine="ctranslate2", **opts).translate_batch(sentences)
    assert all(len(h) == 2 and h[0].score >= h[1].score for h in theirs)
    ended = [i for i, (a, b) in enumerate(zip(ours, theirs)) if len(a[0].tokens) < 60 and len(b[0].tokens) < 60]
    assert len(ended) >= len(sentences) // 3
    _assert_same_beam(models["beam_pre"], [sentences[i] for i in ended], [ours[i][0].tokens for i in ended],
                      [theirs[i][0].tokens for i in ended])  # fmt: skip
    # where a hypothesis ended by itself (mt forces EOS at the maximum length, with its
    # log-prob; CTranslate2 cuts there) the scores are mt's: normalised and raw
    same = [(ours[i][0], theirs[i][0]) for i in ended if ours[i][0].tokens == theirs[i][0].tokens]
    assert len(same) >= len(ended) - len(sentences) // 20
    assert all(a.score == pytest.approx(b.score, abs=1e-4) and a.log_prob == pytest.approx(b.log_prob, abs=1e-3)
               for a, b in same)  # fmt: skip


def test_engine_ctranslate2_builds_the_search_keywords_once_per_settings(models, sentences, ct2_cache, monkeypatch):
    """Building them reads both vocabularies (~6 ms for 8k pieces): not once per batch."""
    import mt.export

    calls, real = [], mt.export.ctranslate2_translate_options
    monkeypatch.setattr(mt.export, "ctranslate2_translate_options", lambda *a: calls.append(1) or real(*a))
    t = _translator(models["pre"], engine="ctranslate2", max_tokens=40)
    calls.clear()  # the export itself wrote them into mt_preprocessing.json
    t.translate_batch(sentences)
    t.translate_batch(sentences, t.options.replace(beam=2))
    assert len(calls) == 2 and len(t._batches(list(range(len(sentences))), t.encode(sentences), 40)) > 4


def test_engine_ctranslate2_names_an_unwritable_cache(models, tmp_path, monkeypatch):
    from mt.errors import ConfigError

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MT_CT2_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(ConfigError, match=r"^\$MT_CT2_CACHE .*file/cache: cannot write"):
        _translator(models["pre"], engine="ctranslate2")


def test_engine_ctranslate2_exports_once_per_model_content(models, ct2_cache, tmp_path):
    _translator(models["pre"], engine="ctranslate2", int8=True)
    (export,) = ct2_cache.iterdir()
    stamp = (export / "model.bin").stat().st_mtime_ns
    t = _translator(models["pre"], engine="ctranslate2", dtype="fp32")
    assert list(ct2_cache.iterdir()) == [export] and (export / "model.bin").stat().st_mtime_ns == stamp
    assert t.model.path == export
    other = _random_model(tmp_path / "other", Translator.load(models["pre"]).text, seed=5, norm="pre")
    _translator(other, engine="ctranslate2")
    assert len(list(ct2_cache.iterdir())) == 2  # other weights: another export


@pytest.mark.parametrize("change, field", [(dict(shortlist=True), "shortlist"), (dict(sampling="topk"), "sampling"),
                                           (dict(length_norm="gnmt"), "length_norm"), (dict(unk_penalty=1.0), "unk_penalty")])
def test_engine_ctranslate2_refuses_what_it_cannot_do(change, field):
    from mt.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^{field}: .* is not available with engine ctranslate2 \(use engine torch\)$"):
        DecodeOptions(engine="ctranslate2", **change)
    DecodeOptions(**change)  # the torch engine takes it


def test_engine_ctranslate2_in_translate_and_evaluate(models, ct2_cache, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(synthetic_sentences(6, seed=4)) + "\n")
    out = tmp_path / "out.txt"
    assert main(["translate", "--model", str(models["pre"]), "--input", str(src), "--output", str(out),
                 "--engine", "ctranslate2", "--beam", "1", "--threads", "1"]) == 0  # fmt: skip
    expected = [h[0].text for h in _translator(models["pre"], engine="ctranslate2", beam=1).translate_batch(
        src.read_text().splitlines())]  # fmt: skip
    assert out.read_text().splitlines() == expected
    capsys.readouterr()
    assert main(["evaluate", "--model", str(models["pre"]), "--src", str(src), "--ref", str(src), "--engine",
                 "ctranslate2", "--int8", "--threads", "2", "--workers", "2"]) == 0  # fmt: skip
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["dtype"].startswith("int8") and record["batch_invariant"] is False
    assert record["threads"] == 2  # torch's own, not the 1 per worker CTranslate2 leaves in OpenMP


def test_engine_ctranslate2_serves(models, ct2_cache):
    from mt.modelio import load_model
    from serve.engine import RequestOptions, build_engine

    engine = build_engine("de-en", load_model(models["pre"]), {"engine": "ctranslate2", "dtype": "fp32"})
    hyps = engine.translate(["ka lo mi ne", ""], RequestOptions(beam=2, n_best=2))
    assert [len(h) for h in hyps] == [2, 1] and hyps[0][0].text and hyps[1][0].text == ""
    from mt.decode.search import DecodeCancelled

    with pytest.raises(DecodeCancelled):
        engine.translate(["ka lo mi ne"], RequestOptions(), should_stop=lambda: True)


# --------------------------------------------------------------------------- refusals


def test_pre_norm_to_marian_hf_is_refused(models, tmp_path):
    out = tmp_path / "hf"
    with pytest.raises(UnsupportedModelError, match=r"model\.norm: pre \(HF MarianMT is post-norm only\)"):
        export_model(models["pre"], out, "marian-hf")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary directory left either


def test_unrepresentable_features_are_named(models, tmp_path):
    with pytest.raises(UnsupportedModelError) as e:
        export_model(models["exotic"], tmp_path / "hf", "marian-hf")
    for field in ("model.norm: pre", "model.positions: learned", "model.layernorm_embedding: true"):
        assert field in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "hf").exists()


def test_out_dir_rules(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    export_model(models["pre"], out, "ctranslate2")  # an empty directory is fine
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty.*--force"):
        export_model(models["pre"], out, "ctranslate2")
    assert (out / "keep.txt").read_text() == "mine"
    export_model(models["pre"], out, "ctranslate2", force=True)
    assert not (out / "keep.txt").exists() and (out / "model.bin").is_file()
    with pytest.raises(ExportError, match="model directory"):
        export_model(models["pre"], models["pre"], "ctranslate2", force=True)
    assert (models["pre"] / "config.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_model(models["pre"], tmp_path / "file", "ctranslate2")


def test_bad_flags_and_damaged_models(models, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="--quantization: only for --to ctranslate2"):
        export_model(models["post"], out, "marian-hf", quantization="int8")
    with pytest.raises(ExportError, match="--quantization: must be one of"):
        export_model(models["pre"], out, "ctranslate2", quantization="int3")
    with pytest.raises(MissingFileError, match="nothing"):
        export_model(tmp_path / "nothing", out, "ctranslate2")
    bad = tmp_path / "bad"
    shutil.copytree(models["pre"], bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelDirError, match="model.safetensors"):
        export_model(bad, out, "ctranslate2")
    assert not out.exists()


def test_cli(models, tmp_path, capsys):
    out = tmp_path / "ct2"
    assert main(["export", str(models["post"]), str(out), "--to", "ctranslate2", "--quantization", "int8"]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "model.bin").is_file()
    hf = tmp_path / "hf"
    assert main(["export", str(models["pre"]), str(hf), "--to", "marian-hf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mt export: error:") and "model.norm: pre" in err[0]
    assert not hf.exists()
    assert main(["export", str(models["pre"]), str(out), "--to", "ctranslate2"]) == 2
    assert "--force" in capsys.readouterr().err


# --------------------------------------------------------------------------- normalisation


def test_readme_normalisation_snippet_equals_mt(models, tmp_path):
    """The README's mt-free ``normalize`` is mt's, on text each step changes."""
    out = export_model(models["post"], tmp_path / "hf", "marian-hf")
    readme = (out / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?def normalize.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    samples = ["Ｆull‑width　ＡＢＣ and ﬁ ligature", "„Anführung“ – « guillemets » ‘single’ …",
               "ctrl\x07chars\x85here\u2028and\ttabs  ", "Spaces before , punctuation ! ( x )",
               "spm\u2581space", "", "   ", "1,5 € und 3 %", "l'homme d' État"]  # fmt: skip
    for lang in ("de", "en", "fr"):
        for punct in (True, False):
            for form in ("NFKC", "NFC", "none"):
                for s in samples:
                    assert scope["normalize"](s, lang, punct, form) == normalize(s, lang, punct, form), (s, lang)
    settings = json.loads((out / "mt_preprocessing.json").read_text(encoding="utf-8"))
    assert settings["normalize"]["punct"] == {"de": True, "en": True}
    assert settings["normalize"]["unicode_form"] == "NFKC"
    assert settings["target"]["never_generated"] == ["<pad>", "<s>"]


# --------------------------------------------------------------------------- real data


def _multi30k() -> Path:
    root = Path(os.environ.get("MT_DATA_DIR", "")) / "multi30k"
    if not os.environ.get("MT_DATA_DIR") or not (root / "test2016.de").is_file():
        pytest.skip("Multi30k not found: set MT_DATA_DIR to a directory with multi30k/{train,test2016}.{de,en}")
    return root


def test_multi30k_round_trips(tmp_path):
    """SentencePiece on 3000 real lines per language (normalised as mt prepare does), random
    post- and pre-norm models; 100 test2016 sentences through CTranslate2 and HF MarianMT."""
    root = _multi30k()
    lines = {lang: (root / f"train.{lang}").read_text(encoding="utf-8").splitlines()[:3000] for lang in ("de", "en")}
    norm = {lang: [normalize(x, lang) for x in lines[lang]] for lang in lines}
    joint = _spm(tmp_path, norm["de"] + norm["en"], 1000, "joint")
    de, en = _spm(tmp_path, norm["de"], 700, "de"), _spm(tmp_path, norm["en"], 600, "en")
    text_joint = TextPipeline("de", "en", joint, num_threads=1)
    text_sep = TextPipeline("de", "en", de, en, num_threads=1)
    src = (root / "test2016.de").read_text(encoding="utf-8").splitlines()[:100]
    post = _random_model(tmp_path / "post", text_sep, seed=1, norm="post", activation="swish",
                         share_embeddings=False, final_logits_bias=True)  # fmt: skip
    pre = _random_model(tmp_path / "pre", text_joint, seed=2, norm="pre", activation="relu")
    for model_dir, text in ((post, text_sep), (pre, text_joint)):
        ours = _mt_tokens(model_dir, src, beam=1, max_len_a=0.0, max_len_b=MAX_LEN)
        _nontrivial(ours)
        out = export_model(model_dir, tmp_path / f"{model_dir.name}_ct2", "ctranslate2")
        _assert_same_greedy(model_dir, src, ours, _ct2_tokens(out, text, src, beam_size=1, max_decoding_length=MAX_LEN))
        if model_dir == post:
            hf = export_model(model_dir, tmp_path / "post_hf", "marian-hf")
            tokens, input_ids = _hf_greedy(hf, text, src, MAX_LEN)
            _assert_same_greedy(model_dir, src, ours, tokens)
            assert input_ids == [ids + [EOS] for ids in text.encode_source(src)]
