"""Write an mt model directory in another toolkit's format: ``mt export``.

Three targets, each a directory that the other toolkit loads on its own:

* ``ctranslate2``: a CTranslate2 ``TransformerSpec`` filled directly with mt's weights
  (``ctranslate2.specs``; no intermediate checkpoint), saved by the spec's own ``save``
  (``model.bin``, ``config.json``, the vocabularies), plus ``source.spm`` / ``target.spm``.
  Every mt architecture is representable: pre/post-norm, relu/gelu/swish, sinusoidal or
  learned positions (the position table is written out, so CTranslate2's own sinusoid,
  which differs, is never used), tied/untied output, shared/separate embeddings,
  ``layernorm_embedding``, ``final_logits_bias`` (the output projection's bias).
* ``marian-hf``: a Hugging Face MarianMT directory (``config.json``, ``model.safetensors``,
  ``generation_config.json``, ``source.spm``, ``target.spm``, ``vocab.json``
  [+ ``target_vocab.json``], ``tokenizer_config.json``), written without ``transformers``.
  HF MarianMT is post-norm with sinusoidal (sin | cos halves) positions and no embedding
  LayerNorm: other models are refused, naming the field (:func:`unsupported_features`).
* ``argos``: an Argos Translate package directory, what LibreTranslate serves: the
  CTranslate2 export in ``model/``, the one ``sentencepiece.model`` Argos uses for both sides
  (so a joint vocabulary is required) and ``metadata.json``. Argos runs its own text steps
  and search settings (no normalisation, its beam size and length penalty); the README says
  which, and how to install the package offline.

Token conventions carried over exactly (docs/CONTRACTS.md): model ids are kept (the
vocabularies are the SentencePiece pieces in id order, see
:meth:`mt.data.text.TextPipeline.source_vocabulary`), sources end in EOS (CTranslate2:
``add_source_eos``; MarianTokenizer appends EOS itself), the decoder starts with
``decoder_start_id`` (CTranslate2's ``decoder_start_token``; HF's
``decoder_start_token_id``), and the tokens mt never generates (pad, BOS, the decoder
start) are listed for the consumer's search (CTranslate2's ``suppress_sequences``, HF's
``bad_words_ids``).

Normalisation (:func:`mt.data.text.normalize`: NFKC, control characters, Moses punctuation,
whitespace) cannot be expressed as a SentencePiece or MarianTokenizer rule, so it is
exported as a documented step: ``mt_preprocessing.json`` (the settings) and ``README.md``
(the steps, with a self-contained Python function) in every export. See docs/export.md.

Nothing is written unless everything can be: the checks run first, and the directory is
built in a temporary sibling that replaces ``OUT_DIR`` only on success
(:class:`mt.fileio.atomic_dir`). Imports of torch, ctranslate2 and the model code are
inside the functions so that ``mt --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from mt.errors import UserError
from mt.fileio import atomic_dir

if TYPE_CHECKING:
    import argparse

    from torch import Tensor

    from mt.config import ModelConfig
    from mt.data.text import TextPipeline
    from mt.model import Transformer

TARGETS = ("ctranslate2", "marian-hf", "argos")
CT2_TARGETS = ("ctranslate2", "argos")  # the targets whose weights are a CTranslate2 model
PREPROCESSING_FILE = "mt_preprocessing.json"
# the names vocabularies get for ids beyond a side's SentencePiece model (separate source and
# target models share one embedding size, the larger); never produced by the tokenizer
UNUSED_PIECE = "<mt_unused_{}>"
CT2_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "swish": "SWISH"}  # mt name -> common_spec.Activation
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish"}  # mt name -> HF ACT2FN key
LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which mt.model uses everywhere


class ExportError(UserError, ValueError):
    """The export cannot be written as asked: output directory, flag, missing package."""


class UnsupportedModelError(ExportError):
    """The model uses something the target format cannot represent; names the field."""


# --------------------------------------------------------------------------- entry point


def export_model(model_dir: str | Path, out_dir: str | Path, to: str, *, quantization: Optional[str] = None,
                 force: bool = False) -> Path:
    """Write the mt model in ``model_dir`` to ``out_dir`` in format ``to`` (:data:`TARGETS`).

    ``quantization``: CTranslate2 weight type (``int8``, ``int8_float32``, ``float16``,
    ``bfloat16``, ... as ``ctranslate2.specs`` accepts); None keeps float32.
    ``force``: replace an existing non-empty ``out_dir``.
    Errors are :class:`mt.errors.UserError` subclasses, raised before anything is written.
    """
    from mt.modelio import load_model, stored_decode_options

    if to not in TARGETS:
        raise ExportError(f"--to: must be one of {', '.join(TARGETS)}; got {to!r}")
    out = Path(out_dir)
    _check_out_dir(out, Path(model_dir), force)
    if to in CT2_TARGETS:
        _check_quantization(quantization)
    elif quantization is not None:
        raise ExportError("--quantization: only for --to ctranslate2 or argos (HF MarianMT is written in float32)")
    loaded = load_model(model_dir)
    model, text = loaded.model, loaded.text
    problems = unsupported_features(model.cfg, text, to)
    if problems:
        raise UnsupportedModelError(f"{model_dir}: cannot export to {to}: " + "; ".join(problems))
    search = stored_decode_options(model_dir).group("search")
    try:
        build = atomic_dir(out)
    except OSError as e:
        raise ExportError(f"OUT_DIR {out}: cannot write ({e.strerror or e})") from None
    with build as tmp:
        if to == "ctranslate2":
            _write_ctranslate2(tmp, model, text, quantization)
        elif to == "argos":
            _write_argos(tmp, model, text, quantization)
        else:
            _write_marian_hf(tmp, model, text, search)
        _write_shared_files(tmp, model.cfg, text, to, search, quantization)
    return out


def unsupported_features(cfg: "ModelConfig", text: "TextPipeline", to: str) -> list[str]:
    """What in the model (``cfg``) or its text pipeline the target ``to`` cannot represent,
    one ``field: value (reason)`` string each; empty when the export is exact."""
    problems = _vocabulary_problems(cfg, text)
    if to == "argos":
        return problems + _argos_problems(text)
    if to != "marian-hf":
        return problems
    if cfg.norm != "post":
        problems.append("model.norm: pre (HF MarianMT is post-norm only)")
    if cfg.positions != "sinusoidal":
        problems.append(f"model.positions: {cfg.positions} (HF MarianMT has sinusoidal positions only)")
    if cfg.layernorm_embedding:
        problems.append("model.layernorm_embedding: true (HF MarianMT has no embedding LayerNorm)")
    if cfg.d_model % 2:
        problems.append(f"model.d_model: {cfg.d_model} is odd (HF's sinusoid layout differs from mt's for odd sizes)")
    if text.target_lang_tag:
        problems.append("text.json target_lang_tag: true (MarianTokenizer cannot prepend the <2xx> piece)")
    return problems


# --------------------------------------------------------------------------- checks


def _check_out_dir(out: Path, model_dir: Path, force: bool) -> None:
    """``out`` may be new, an empty directory, or (``force``) a non-empty one, but never the
    model directory or one that contains it (replacing it would delete the input)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"OUT_DIR {out}: exists and is not a directory")
    model_abs, out_abs = model_dir.resolve(), out.resolve()
    if out_abs == model_abs or out_abs in model_abs.parents:
        raise ExportError(f"OUT_DIR {out}: is (or contains) the model directory {model_dir}; choose another one")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"OUT_DIR {out}: exists and is not empty (use --force to replace it)")


def _check_quantization(quantization: Optional[str]) -> None:
    """``quantization`` is a weight type this ctranslate2 accepts (also: ctranslate2 is installed)."""
    from mt.extras import require

    accepted = require("ctranslate2.specs.model_spec", "mt export --to ctranslate2").ACCEPTED_MODEL_TYPES
    if quantization is not None and quantization not in accepted:
        raise ExportError(f"--quantization: must be one of {', '.join(accepted)}; got {quantization!r}")


def _vocabulary_problems(cfg: "ModelConfig", text: "TextPipeline") -> list[str]:
    """Both vocabularies need distinct pieces (the targets map pieces to ids), and the
    special pieces CTranslate2 has once for both sides (eos, unk) must agree."""
    problems = []
    src, tgt = text.source_vocabulary(), text.target_vocabulary()
    for side, pieces in (("source", src), ("target", tgt)):
        seen: dict[str, int] = {}
        for i, piece in enumerate(pieces):
            if piece in seen:
                problems.append(f"{side} vocabulary: piece {piece!r} has ids {seen[piece]} and {i}")
                break
            seen[piece] = i
    for name in ("eos_id", "unk_id"):
        i = getattr(cfg, name)
        if i < min(len(src), len(tgt)) and src[i] != tgt[i]:
            problems.append(f"model.{name}: source piece {src[i]!r} differs from target piece {tgt[i]!r}")
    return problems


# --------------------------------------------------------------------------- vocabularies


def model_vocabularies(cfg: "ModelConfig", text: "TextPipeline") -> tuple[list[str], list[str]]:
    """``(source, target)``: the piece of every model id ``0..vocab_size-1`` on each side.
    Ids beyond a side's SentencePiece model (separate models of different sizes) get
    :data:`UNUSED_PIECE` names, so every embedding row has a distinct piece."""
    return _padded(text.source_vocabulary(), cfg.vocab_size), _padded(text.target_vocabulary(), cfg.vocab_size)


def _padded(pieces: list[str], size: int) -> list[str]:
    out, taken = list(pieces), set(pieces)
    for i in range(len(out), size):
        name = UNUSED_PIECE.format(i)
        while name in taken:  # never collide with a real piece
            name = "<" + name + ">"
        out.append(name)
    return out


def special_pieces(cfg: "ModelConfig", text: "TextPipeline") -> dict[str, Any]:
    """The pieces of mt's special ids, and the target pieces mt never generates."""
    src, tgt = model_vocabularies(cfg, text)
    start = cfg.start_id
    # as mt.decode.search.constrain_; a model whose BOS is its EOS (none of mt's) must still end
    never = {cfg.pad_id, cfg.bos_id, start} - {cfg.eos_id}
    return {
        "pad": tgt[cfg.pad_id], "unk": tgt[cfg.unk_id], "bos": tgt[cfg.bos_id], "eos": tgt[cfg.eos_id],
        "source_eos": src[cfg.eos_id], "decoder_start": tgt[start], "decoder_start_id": start,
        "never_generated_ids": sorted(never), "never_generated": [tgt[i] for i in sorted(never)],
    }  # fmt: skip


# --------------------------------------------------------------------------- CTranslate2


def _write_ctranslate2(tmp: Path, model: "Transformer", text: "TextPipeline", quantization: Optional[str]) -> None:
    """``model.bin``, ``config.json`` and the vocabularies, by the spec's own ``save``."""
    spec = ctranslate2_spec(model, text)
    try:
        spec.validate()
        spec.optimize(quantization=quantization)
    except ValueError as e:  # a spec mt filled wrongly: a bug here, not a user error
        raise RuntimeError(f"mt.export filled the CTranslate2 spec incompletely: {e}") from e
    spec.save(str(tmp))


def ctranslate2_spec(model: "Transformer", text: "TextPipeline") -> Any:
    """A ``ctranslate2.specs.TransformerSpec`` computing what ``model`` computes, with its
    vocabularies and special tokens registered (not yet validated or quantised)."""
    from ctranslate2.specs import TransformerSpec, common_spec

    cfg = model.cfg
    spec = TransformerSpec.from_config(
        (cfg.enc_layers, cfg.dec_layers), cfg.n_heads, pre_norm=cfg.norm == "pre",
        activation=getattr(common_spec.Activation, CT2_ACTIVATIONS[cfg.activation]),
        layernorm_embedding=cfg.layernorm_embedding,
    )  # fmt: skip
    _ct2_encoder(spec.encoder, model)
    _ct2_decoder(spec.decoder, model)
    src, tgt = model_vocabularies(cfg, text)
    spec.register_source_vocabulary(src)
    spec.register_target_vocabulary(tgt)
    sp = special_pieces(cfg, text)
    config = spec.config
    config.unk_token, config.bos_token, config.eos_token = sp["unk"], sp["bos"], sp["eos"]
    config.decoder_start_token = sp["decoder_start"]
    config.add_source_bos, config.add_source_eos = False, True  # mt sources are ids + [eos]
    config.layer_norm_epsilon = LAYER_NORM_EPS
    return spec


def _weight(t: "Tensor") -> "Tensor":
    """An fp32 copy: CTranslate2's quantisation works in place on the arrays it is given."""
    return t.detach().float().contiguous().clone()


def _ct2_linear(spec: Any, layer: Any) -> None:
    spec.weight = _weight(layer.weight)
    if layer.bias is not None:
        spec.bias = _weight(layer.bias)


def _ct2_norm(spec: Any, norm: Any) -> None:
    spec.gamma, spec.beta = _weight(norm.weight), _weight(norm.bias)


def _positions(model: "Transformer", side: str) -> "Tensor":
    """The ``(max_positions, d_model)`` table mt adds on ``side`` (``src``/``tgt``)."""
    if model.cfg.positions == "learned":
        return _weight((model.src_pos if side == "src" else model.tgt_pos).weight)
    return _weight(model.pos_table)


def _ct2_embedding(spec: Any, model: "Transformer", side: str) -> None:
    """Token embedding, position table, scale and embedding LayerNorm of one side."""
    emb = model.src_embed if side == "src" else model.tgt_embed
    (spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings).weight = _weight(emb.weight)
    spec.position_encodings.encodings = _positions(model, side)
    spec.scale_embeddings = bool(model.cfg.scale_embedding)  # True: sqrt(d_model), as mt
    if model.cfg.layernorm_embedding:
        _ct2_norm(spec.layernorm_embedding, model.src_embed_norm if side == "src" else model.tgt_embed_norm)


def _ct2_encoder(spec: Any, model: "Transformer") -> None:
    _ct2_embedding(spec, model, "src")
    for layer_spec, layer in zip(spec.layer, model.encoder_layers):
        _ct2_self_attention(layer_spec.self_attention, layer.self_attn, layer.attn_block.norm)
        _ct2_ffn(layer_spec.ffn, layer)
    if model.cfg.norm == "pre":
        _ct2_norm(spec.layer_norm, model.encoder_norm)


def _ct2_decoder(spec: Any, model: "Transformer") -> None:
    _ct2_embedding(spec, model, "tgt")
    for layer_spec, layer in zip(spec.layer, model.decoder_layers):
        _ct2_self_attention(layer_spec.self_attention, layer.self_attn, layer.self_block.norm)
        # cross-attention: linear[0] queries, linear[1] the fused (2d, d) k|v, as mt's kv_proj
        _ct2_linear(layer_spec.attention.linear[0], layer.cross_attn.q_proj)
        _ct2_linear(layer_spec.attention.linear[1], layer.cross_attn.kv_proj)
        _ct2_linear(layer_spec.attention.linear[2], layer.cross_attn.out_proj)
        _ct2_norm(layer_spec.attention.layer_norm, layer.cross_block.norm)
        _ct2_ffn(layer_spec.ffn, layer)
    if model.cfg.norm == "pre":
        _ct2_norm(spec.layer_norm, model.decoder_norm)
    spec.projection.weight = _weight(_output_weight(model))
    if model.cfg.final_logits_bias:
        spec.projection.bias = _weight(model.final_logits_bias)


def _ct2_self_attention(spec: Any, attn: Any, norm: Any) -> None:
    # mt's fused (3d, d) q|k|v projection is CTranslate2's linear[0] as is
    _ct2_linear(spec.linear[0], attn.qkv_proj)
    _ct2_linear(spec.linear[1], attn.out_proj)
    _ct2_norm(spec.layer_norm, norm)


def _ct2_ffn(spec: Any, layer: Any) -> None:
    _ct2_linear(spec.linear_0, layer.ffn.fc1)
    _ct2_linear(spec.linear_1, layer.ffn.fc2)
    _ct2_norm(spec.layer_norm, layer.ffn_block.norm)


def _output_weight(model: "Transformer") -> "Tensor":
    """``(vocab, d_model)``: the output projection (the target embedding when tied)."""
    proj = getattr(model, "output_proj", None)
    return (proj if proj is not None else model.tgt_embed).weight


def ctranslate2_translate_options(cfg: "ModelConfig", text: "TextPipeline", search: dict[str, Any]) -> dict[str, Any]:
    """The ``Translator.translate_batch`` keywords that reproduce mt's search settings
    ``search`` (a ``DecodeOptions.group("search")``) except the per-sentence maximum length,
    which the caller sets (``max_decoding_length``, see the export's README)."""
    sp = special_pieces(cfg, text)
    return {
        "beam_size": search["beam"],
        # mt counts EOS in the length (fairseq); so does CTranslate2's hypothesis length.
        # CTranslate2 has no GNMT penalty: avg with the same alpha is the nearest
        "length_penalty": 0.0 if search["length_norm"] == "none" else search["alpha"],
        "min_decoding_length": search["min_len"],
        "suppress_sequences": [[p] for p in sp["never_generated"]],
        "no_repeat_ngram_size": search["no_repeat_ngram"],
        "disable_unk": search["unk_penalty"] > 0,  # the nearest to a finite penalty
        "max_input_length": 0,  # mt never truncates sources (max_positions bounds them)
        "num_hypotheses": search["n_best"],
    }


def ctranslate2_notes(search: dict[str, Any]) -> list[str]:
    """Where :func:`ctranslate2_translate_options` can only approximate mt's settings."""
    notes = []
    if search["length_norm"] == "gnmt":
        notes.append("length_norm gnmt: CTranslate2 has only score / length ** alpha (avg); avg is used")
    if search["length_norm"] == "none" or search["alpha"] == 0:
        notes.append("no length penalty: CTranslate2 then stops a sentence when its best beam ends, "
                     "mt when `beam` hypotheses have ended")  # fmt: skip
    if search["unk_penalty"]:
        notes.append(f"unk_penalty {search['unk_penalty']}: CTranslate2 can only forbid <unk> (disable_unk)")
    if search["sampling"] != "none":
        notes.append(f"sampling {search['sampling']}: not translated into CTranslate2 options (beam search is)")
    return notes


# --------------------------------------------------------------------------- Argos Translate


def _argos_problems(text: "TextPipeline") -> list[str]:
    """What an Argos package cannot hold: it has one SentencePiece model for both sides and
    no source prefix."""
    problems = []
    if not text.same_spm:
        problems.append("text.json: separate source and target SentencePiece models (an Argos package has one "
                        "sentencepiece.model for both sides)")  # fmt: skip
    if text.tag_id is not None:
        problems.append("text.json target_lang_tag: true (Argos cannot prepend the language piece to the source)")
    return problems


def _write_argos(tmp: Path, model: "Transformer", text: "TextPipeline", quantization: Optional[str]) -> None:
    """``model/`` (the CTranslate2 export), ``sentencepiece.model`` and ``metadata.json``."""
    (tmp / "model").mkdir()
    _write_ctranslate2(tmp / "model", model, text, quantization)
    (tmp / "sentencepiece.model").write_bytes(text.src_sp.serialized_model_proto())
    _write_json(tmp / "metadata.json", argos_metadata(text))


def argos_metadata(text: "TextPipeline") -> dict[str, Any]:
    """The package's ``metadata.json``: a translation package from ``src_lang`` to ``tgt_lang``
    (the names are the codes: mt does not know the languages' names)."""
    return {"package_version": "1.0", "argos_version": "1.9", "type": "translate",
            "from_code": text.src_lang, "from_name": text.src_lang, "to_code": text.tgt_lang, "to_name": text.tgt_lang,
            "links": [], "source": "mt export"}  # fmt: skip


# --------------------------------------------------------------------------- HF MarianMT


def _write_marian_hf(tmp: Path, model: "Transformer", text: "TextPipeline", search: dict[str, Any]) -> None:
    """``config.json``, ``generation_config.json``, ``model.safetensors`` and the tokenizer files."""
    from safetensors.torch import save_file

    cfg = model.cfg
    _write_json(tmp / "config.json", marian_hf_config(cfg))
    _write_json(tmp / "generation_config.json", marian_generation_config(cfg, text, search))
    save_file(marian_hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    src, tgt = model_vocabularies(cfg, text)
    separate = src != tgt
    _write_json(tmp / "vocab.json", {piece: i for i, piece in enumerate(src)})
    if separate:
        _write_json(tmp / "target_vocab.json", {piece: i for i, piece in enumerate(tgt)})
    sp = special_pieces(cfg, text)
    _write_json(tmp / "tokenizer_config.json", {
        "tokenizer_class": "MarianTokenizer", "source_lang": text.src_lang, "target_lang": text.tgt_lang,
        "unk_token": sp["unk"], "eos_token": sp["eos"], "pad_token": sp["pad"],
        "model_max_length": cfg.max_positions, "separate_vocabs": separate,
    })  # fmt: skip


def marian_hf_config(cfg: "ModelConfig") -> dict[str, Any]:
    """HF ``MarianConfig`` fields (``config.json``) for a post-norm sinusoidal mt model."""
    return {
        "architectures": ["MarianMTModel"], "model_type": "marian", "is_encoder_decoder": True,
        "vocab_size": cfg.vocab_size, "decoder_vocab_size": cfg.vocab_size, "d_model": cfg.d_model,
        "encoder_layers": cfg.enc_layers, "decoder_layers": cfg.dec_layers,
        "encoder_attention_heads": cfg.n_heads, "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.ffn_dim, "decoder_ffn_dim": cfg.ffn_dim,
        "activation_function": HF_ACTIVATIONS[cfg.activation], "max_position_embeddings": cfg.max_positions,
        "scale_embedding": bool(cfg.scale_embedding),
        "share_encoder_decoder_embeddings": bool(cfg.share_embeddings), "tie_word_embeddings": bool(cfg.tie_output),
        "pad_token_id": cfg.pad_id, "eos_token_id": cfg.eos_id, "forced_eos_token_id": cfg.eos_id,
        "decoder_start_token_id": cfg.start_id, "bos_token_id": None,
        "dropout": cfg.dropout, "attention_dropout": cfg.attn_dropout, "activation_dropout": cfg.act_dropout,
        "use_cache": True, "dtype": "float32",
    }  # fmt: skip


def marian_generation_config(cfg: "ModelConfig", text: "TextPipeline", search: dict[str, Any]) -> dict[str, Any]:
    """``generation_config.json``: mt's constraints (pad/BOS/start never generated, EOS forced
    at the maximum length, ``min_len``) and, approximately, its stored beam settings."""
    sp = special_pieces(cfg, text)
    gen: dict[str, Any] = {
        "decoder_start_token_id": sp["decoder_start_id"], "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id,
        "forced_eos_token_id": cfg.eos_id, "bad_words_ids": [[i] for i in sp["never_generated_ids"]],
        "min_new_tokens": search["min_len"], "max_length": cfg.max_positions,
        "num_beams": search["beam"], "early_stopping": True,  # mt stops with `beam` finished hypotheses
    }  # fmt: skip
    if search["length_norm"] in ("avg", "none"):  # HF has no GNMT penalty: its default then
        gen["length_penalty"] = search["alpha"] if search["length_norm"] == "avg" else 0.0
    if search["no_repeat_ngram"]:
        gen["no_repeat_ngram_size"] = search["no_repeat_ngram"]
    return gen


def marian_hf_state_dict(model: "Transformer") -> dict[str, "Tensor"]:
    """mt weights under HF MarianMT names (the inverse of :mod:`mt.marian`'s mapping): the
    fused projections are split, tied tensors stored once (HF ties them on load)."""
    cfg = model.cfg
    out: dict[str, Tensor] = {
        "model.encoder.embed_tokens.weight": _weight(model.src_embed.weight),
        "model.decoder.embed_tokens.weight": _weight(model.tgt_embed.weight),
    }
    if cfg.share_embeddings:
        # HF ties encoder and decoder embeddings to `shared` only while the LM head is tied
        # too; with an untied head it loads the three names separately: store all three
        out["model.shared.weight"] = _weight(model.src_embed.weight)
    if not cfg.tie_output:
        out["lm_head.weight"] = _weight(model.output_proj.weight)
    bias = model.final_logits_bias if cfg.final_logits_bias else _output_weight(model).new_zeros(cfg.vocab_size)
    out["final_logits_bias"] = _weight(bias).reshape(1, -1)
    for i, layer in enumerate(model.encoder_layers):
        p = f"model.encoder.layers.{i}"
        out.update(_hf_split(f"{p}.self_attn", "qkv", layer.self_attn.qkv_proj))
        out.update(_hf_copy(f"{p}.self_attn.out_proj", layer.self_attn.out_proj))
        out.update(_hf_copy(f"{p}.self_attn_layer_norm", layer.attn_block.norm))
        out.update(_hf_ffn(p, layer))
    for i, layer in enumerate(model.decoder_layers):
        p = f"model.decoder.layers.{i}"
        out.update(_hf_split(f"{p}.self_attn", "qkv", layer.self_attn.qkv_proj))
        out.update(_hf_copy(f"{p}.self_attn.out_proj", layer.self_attn.out_proj))
        out.update(_hf_copy(f"{p}.self_attn_layer_norm", layer.self_block.norm))
        out.update(_hf_copy(f"{p}.encoder_attn.q_proj", layer.cross_attn.q_proj))
        out.update(_hf_split(f"{p}.encoder_attn", "kv", layer.cross_attn.kv_proj))
        out.update(_hf_copy(f"{p}.encoder_attn.out_proj", layer.cross_attn.out_proj))
        out.update(_hf_copy(f"{p}.encoder_attn_layer_norm", layer.cross_block.norm))
        out.update(_hf_ffn(p, layer))
    return out


def _hf_copy(name: str, module: Any) -> dict[str, "Tensor"]:
    return {f"{name}.weight": _weight(module.weight), f"{name}.bias": _weight(module.bias)}


def _hf_split(prefix: str, parts: str, fused: Any) -> dict[str, "Tensor"]:
    """mt's fused projection (rows ``q|k|v`` or ``k|v``) as HF's separate ``{p}_proj``."""
    out = {}
    for kind in ("weight", "bias"):
        for part, t in zip(parts, getattr(fused, kind).chunk(len(parts), dim=0)):
            out[f"{prefix}.{part}_proj.{kind}"] = _weight(t)
    return out


def _hf_ffn(prefix: str, layer: Any) -> dict[str, "Tensor"]:
    return {**_hf_copy(f"{prefix}.fc1", layer.ffn.fc1), **_hf_copy(f"{prefix}.fc2", layer.ffn.fc2),
            **_hf_copy(f"{prefix}.final_layer_norm", layer.ffn_block.norm)}  # fmt: skip


# --------------------------------------------------------------------------- both targets


def preprocessing_settings(cfg: "ModelConfig", text: "TextPipeline", to: str, search: dict[str, Any],
                           quantization: Optional[str] = None) -> dict[str, Any]:
    """What ``mt_preprocessing.json`` holds: the text steps a consumer must apply before
    SentencePiece (the arguments of :func:`mt.data.text.normalize`), the special pieces, and
    mt's stored search settings with their equivalent in the target toolkit."""
    from mt.data.text import LANG_TOKEN_RE

    sp = special_pieces(cfg, text)
    tag = [text.source_vocabulary()[text.tag_id]] if text.tag_id is not None else []
    src_spm, tgt_spm = ("sentencepiece.model",) * 2 if to == "argos" else ("source.spm", "target.spm")
    settings: dict[str, Any] = {
        "format": "mt-preprocessing", "version": 1, "exported_to": to,
        "source_lang": text.src_lang, "target_lang": text.tgt_lang,
        "normalize": {
            "function": "mt.data.text.normalize(text, lang, punct, unicode_form)",
            "unicode_form": text.unicode_form,
            "punct": {text.src_lang: text.punct[text.src_lang], text.tgt_lang: text.punct[text.tgt_lang]},
            "steps": NORMALIZE_STEPS,
        },
        "source": {"spm": src_spm, "prefix_pieces": tag, "append": sp["source_eos"],
                   "language_tokens": any(LANG_TOKEN_RE.fullmatch(p) for p in text.source_vocabulary())},
        "target": {"spm": tgt_spm, "decoder_start": sp["decoder_start"], "eos": sp["eos"],
                   "never_generated": sp["never_generated"]},
        "mt_decode": search,
    }  # fmt: skip
    if to in CT2_TARGETS:
        settings["ctranslate2"] = {"quantization": quantization or "float32",
                                   "translate_batch": ctranslate2_translate_options(cfg, text, search),
                                   "approximations": ctranslate2_notes(search)}
    return settings


NORMALIZE_STEPS = [
    "unicodedata.normalize(unicode_form, text) unless unicode_form is 'none'",
    "remove C0/C1 control characters except whitespace (regex [\\x00-\\x08\\x0e-\\x1f\\x7f-\\x84\\x86-\\x9f])",
    "collapse whitespace runs to one space and strip",
    "if punct[lang]: sacremoses.MosesPunctNormalizer(lang=lang).normalize(text)",
    "replace U+2581 (SentencePiece's space) with '_'",
    "collapse whitespace runs to one space and strip",
]


def _write_shared_files(tmp: Path, cfg: "ModelConfig", text: "TextPipeline", to: str, search: dict[str, Any],
                        quantization: Optional[str]) -> None:
    """The SentencePiece models (an Argos package has its own), ``mt_preprocessing.json`` and
    the export's ``README.md``."""
    if to != "argos":
        (tmp / "source.spm").write_bytes(text.src_sp.serialized_model_proto())
        (tmp / "target.spm").write_bytes(text.tgt_sp.serialized_model_proto())
    settings = preprocessing_settings(cfg, text, to, search, quantization)
    _write_json(tmp / PREPROCESSING_FILE, settings)
    (tmp / "README.md").write_text(export_readme(settings), encoding="utf-8")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# The exact normalisation without mt (tests/test_export.py runs this snippet against
# mt.data.text.normalize): keep it in step with that function.
NORMALIZE_SNIPPET = '''\
import functools
import re
import unicodedata

from sacremoses import MosesPunctNormalizer

CONTROL = re.compile("[\\\\x00-\\\\x08\\\\x0e-\\\\x1f\\\\x7f-\\\\x84\\\\x86-\\\\x9f]")


@functools.lru_cache(maxsize=None)
def moses(lang: str) -> MosesPunctNormalizer:
    return MosesPunctNormalizer(lang=lang)


def normalize(text: str, lang: str, punct: bool = True, unicode_form: str = "NFKC") -> str:
    \"\"\"mt's normalisation (mt.data.text.normalize), step for step.\"\"\"
    if unicode_form != "none":
        text = unicodedata.normalize(unicode_form, text)
    text = " ".join(CONTROL.sub("", text).split())
    if punct:
        text = moses(lang).normalize(text)
    return " ".join(text.replace("\\u2581", "_").split())
'''


def _normalize_call(settings: dict[str, Any], var: str) -> str:
    """``normalize(x, 'de', True, 'NFKC')``: the source-side call with this export's settings."""
    norm, lang = settings["normalize"], settings["source_lang"]
    return f"normalize({var}, {lang!r}, {norm['punct'][lang]}, {norm['unicode_form']!r})"


def export_readme(settings: dict[str, Any]) -> str:
    """The ``README.md`` of an export: the preprocessing steps, the mt-free normalisation,
    how to translate with the target toolkit and where it differs from mt."""
    src, tgt = settings["source"], settings["target"]
    to, s, t = settings["exported_to"], settings["source_lang"], settings["target_lang"]
    eos_by = "CTranslate2's `add_source_eos`" if to in CT2_TARGETS else "MarianTokenizer"
    lines = [
        f"# mt model exported to {to} ({s} → {t})", "",
        "Written by `mt export`. It translates as mt does, token for token, only if the text is",
        f"prepared as mt prepares it (all settings are in `{PREPROCESSING_FILE}`):", "",
        f"1. **normalise** every source sentence: `{_normalize_call(settings, 'text')}`",
        "   (the function is below); mt's own SentencePiece models are trained on normalised text",
        "   with the identity rule, so SentencePiece does not normalise anything itself;",
        f"2. **SentencePiece** `{src['spm']}` → pieces"
        + (f", then prepend `{' '.join(src['prefix_pieces'])}`" if src["prefix_pieces"] else "")
        + (" (a leading target-language token such as `>>fra<<` is one piece of its own, not"
           " SentencePiece's)" if src["language_tokens"] else "") + ";",
        f"3. `{src['append']}` is appended to every source (done for you by {eos_by});",
        f"4. the decoder starts with `{tgt['decoder_start']}`; "
        f"`{', '.join(tgt['never_generated'])}` are never generated;",
        f"5. output pieces → text with `{tgt['spm']}` (pieces named `<mt_unused_N>`, if any, are ids",
        "   beyond the target SentencePiece model, which mt decodes as unknown).", "",
        "## Normalisation without mt", "",
        "With mt installed: `from mt.data.text import normalize`. Without it (Python + sacremoses),",
        "this function gives the same result for every string:", "",
        "```python", NORMALIZE_SNIPPET.rstrip("\n"), "```", "",
    ]  # fmt: skip
    usage = {"ctranslate2": _usage_ctranslate2, "argos": _usage_argos, "marian-hf": _usage_marian_hf}[to]
    lines += usage(settings)
    return "\n".join(lines) + "\n"


def _usage_ctranslate2(settings: dict[str, Any]) -> list[str]:
    ct2, dec, src = settings["ctranslate2"], settings["mt_decode"], settings["source"]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in ct2["translate_batch"].items())
    prefix = f"{src['prefix_pieces']!r} + " if src["prefix_pieces"] else ""
    lines = [
        "## Translating with CTranslate2", "",
        "```python", "import ctranslate2", "import sentencepiece as spm", "",
        "translator = ctranslate2.Translator(EXPORT_DIR)",
        "sp_src = spm.SentencePieceProcessor(model_file=f'{EXPORT_DIR}/source.spm')",
        "sp_tgt = spm.SentencePieceProcessor(model_file=f'{EXPORT_DIR}/target.spm')",
        f"pieces = [{prefix}sp_src.encode({_normalize_call(settings, 'x')}, out_type=str) for x in sentences]",
        f"# mt's maximum output length, per sentence: min(floor({dec['max_len_a']} * len(pieces) + "
        f"{dec['max_len_b']}), max_positions - 1)",
        f"results = translator.translate_batch(pieces, max_decoding_length=MAX_LEN, {kwargs})",
        "texts = [sp_tgt.decode(r.hypotheses[0]) for r in results]", "```", "",
        "The keywords are mt's stored search settings. Greedy search (`beam_size=1`) gives mt's",
        "tokens exactly. Beam search is the same algorithm (2 × beam candidates, an EOS among the",
        "first `beam` ends a hypothesis, a sentence stops with `beam` ended hypotheses, score /",
        "length ** alpha with EOS counted) but not bit-identical: CTranslate2 masks the suppressed",
        "tokens (and EOS before `min_decoding_length`) before the softmax, mt after it, which shifts",
        "scores by the masked probability (negligible for a trained model); and at the maximum length",
        "mt forces EOS where CTranslate2 keeps the hypothesis as it is. `max_decoding_length` is one",
        "value per call; mt's is per sentence (translate sentences of one length together for the same",
        "limits).",
    ]  # fmt: skip
    if ct2["approximations"]:
        lines += ["", "Approximated here:", *[f"* {note}" for note in ct2["approximations"]]]
    return lines


def _usage_argos(settings: dict[str, Any]) -> list[str]:
    s, t = settings["source_lang"], settings["target_lang"]
    return [
        "## Serving with LibreTranslate (Argos Translate)", "",
        "This directory is an Argos Translate package: `model/` is the CTranslate2 export,",
        "`sentencepiece.model` encodes both sides. Install it by copying the directory into Argos'",
        "package directory (or zip it as `NAME.argosmodel` for `argostranslate.package.install_from_path`):", "",
        "```bash", f"mkdir -p ~/.local/share/argos-translate/packages && cp -r EXPORT_DIR ~/.local/share/argos-translate/packages/{s}_{t}",
        f"libretranslate --load-only {s},{t}", "```", "",
        "What Argos does differently from mt, so outputs are close but not identical:", "",
        "* it does not normalise the text (step 1 above) and it splits sentences itself. Its default",
        "  splitter (MiniSBD) downloads a model per language on first use. Offline, add a spaCy",
        f"  pipeline as `spacy/` (`python -c \"import spacy; spacy.blank('{s}').to_disk('EXPORT_DIR/spacy')\"`)",
        "  and set `ARGOS_CHUNK_TYPE=SPACY`; also write `[]` to `~/.local/share/argos-translate/index.json`,",
        "  or its start-up keeps retrying the online package index;",
        "* its search settings are its own: beam `ARGOS_BEAM_SIZE` (default 4), length penalty 0.2, unknown",
        "  pieces replaced by source pieces, no limit tied to the source length; the CTranslate2",
        "  compute type is `ARGOS_COMPUTE_TYPE` (default `auto`: int8 on most CPUs).",
    ]  # fmt: skip


def _usage_marian_hf(settings: dict[str, Any]) -> list[str]:
    return [
        "## Translating with Hugging Face transformers", "",
        "```python", "from transformers import MarianMTModel, MarianTokenizer", "",
        "tok, model = MarianTokenizer.from_pretrained(EXPORT_DIR), MarianMTModel.from_pretrained(EXPORT_DIR)",
        f"batch = tok([{_normalize_call(settings, 'x')} for x in sentences], return_tensors='pt', padding=True)",
        "out = model.generate(**batch, num_beams=1, max_new_tokens=MAX_LEN + 1)  # MAX_LEN tokens, then EOS",
        "texts = tok.batch_decode(out, skip_special_tokens=True)", "```", "",
        "`generation_config.json` holds mt's constraints (`bad_words_ids`: the tokens mt never",
        "generates; `forced_eos_token_id`; `min_new_tokens`), so greedy `generate` gives mt's tokens",
        "exactly. MarianTokenizer sets up a Moses normaliser but does not apply it: normalise first.",
        "HF's beam search differs from mt's in details (length penalty, stopping); the stored beam",
        "settings are written as the nearest HF ones.",
    ]  # fmt: skip


# --------------------------------------------------------------------------- CLI


def add_export_parser(subparsers: Any) -> None:
    """``mt export MODEL_DIR OUT_DIR --to {ctranslate2,marian-hf,argos} [--quantization TYPE] [--force]``
    on the CLI's subcommands."""
    p = subparsers.add_parser("export", help="write a model directory in another toolkit's format "
                              "(CTranslate2, Hugging Face MarianMT, an Argos Translate package for LibreTranslate)")  # fmt: skip
    p.add_argument("model_dir", metavar="MODEL_DIR", help="mt model directory")
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (must be new or empty unless --force)")
    p.add_argument("--to", required=True, choices=TARGETS, help="target format")
    p.add_argument("--quantization", default=None, metavar="TYPE",
                   help="ctranslate2 and argos: weight type (int8, int8_float32, int8_float16, int8_bfloat16, int16, "
                   "float16, bfloat16, float32); default float32")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    p.set_defaults(func=export_cli)


def export_cli(args: "argparse.Namespace") -> int:
    """``mt export``: write the export, print where and what."""
    out = export_model(args.model_dir, args.out_dir, args.to, quantization=args.quantization, force=args.force)
    files = sorted(f.name for f in out.iterdir())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    kind = args.to + (f" {args.quantization}" if args.quantization else "")
    print(f"wrote {out} ({kind}, {size / 2**20:.1f} MiB): {', '.join(files)}")
    return 0


__all__ = [
    "ExportError", "UnsupportedModelError", "TARGETS", "export_model", "argos_metadata", "unsupported_features",
    "model_vocabularies", "special_pieces", "ctranslate2_spec", "ctranslate2_translate_options", "ctranslate2_notes",
    "marian_hf_config", "marian_generation_config", "marian_hf_state_dict", "preprocessing_settings",
    "export_readme", "add_export_parser", "export_cli",
]  # fmt: skip
