"""``mt import marian SRC_DIR OUT_DIR``: a Hugging Face MarianMT directory (an OPUS-MT model)
as an ordinary mt model directory, which ``mt translate`` / ``evaluate`` / ``score`` / ``serve``,
back-translation and fine-tuning (``data.spm_from`` + ``train.init_from``) all accept.

Read from ``SRC_DIR``: ``config.json``, the weights (``model.safetensors``, else
``pytorch_model.bin`` loaded with ``torch.load(weights_only=True)``: no code runs),
``source.spm`` / ``target.spm``, ``vocab.json`` (and ``target_vocab.json`` for separate
vocabularies), and the optional ``tokenizer_config.json`` (languages, special tokens) and
``generation_config.json`` (beam size). ``transformers`` is not needed.

Config mapping (HF ``MarianConfig`` → :class:`mt.config.ModelConfig`):

=================================  ===========================================
``d_model``, ``*_layers``,         same sizes; encoder and decoder must match
``*_attention_heads``, ``*_ffn_dim``
``activation_function``            ``swish``/``silu`` → ``swish``; ``gelu``; ``relu``
(post-norm, no final LayerNorm)    ``norm="post"``
sinusoidal positions, sin | cos    ``positions="sinusoidal"`` (same sin/cos-halves layout)
``scale_embedding``                ``scale_embedding`` (× √d_model)
``final_logits_bias``              ``final_logits_bias=True``
``share_encoder_decoder_embeddings`` ``share_embeddings``
``tie_word_embeddings``            ``tie_output`` (else ``lm_head`` → ``output_proj``)
``pad/eos/decoder_start_token_id`` ``pad_id``/``eos_id``/``decoder_start_id`` (start = pad);
                                   Marian has no BOS: ``bos_id = pad_id``; ``unk_id``: ``<unk>``'s id
``max_position_embeddings``        ``max_positions``
=================================  ===========================================

Token ids stay Marian's: ``vocab.json`` becomes the directory's explicit vocabulary
(:class:`mt.data.text.Vocabulary`), so text → SentencePiece pieces → Marian ids, exactly as
``MarianTokenizer`` does (see docs/marian.md). Only light modules are imported at module level:
the CLI builds its parser from :func:`add_import_parser` without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from mt.config import DecodeOptions, ModelConfig, to_dict
from mt.errors import ConfigError, MissingFileError, ModelDirError, UserError
from mt.fileio import read_json_object

if TYPE_CHECKING:
    import torch

    from mt.data.text import Vocabulary
    from mt.model import Transformer

ACTIVATIONS = {"swish": "swish", "silu": "swish", "gelu": "gelu", "relu": "relu"}
REQUIRED_FILES = ("config.json", "source.spm", "target.spm", "vocab.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# MarianConfig's defaults (transformers), used for keys an older config.json lacks, as HF does
MARIAN_DEFAULTS: dict[str, Any] = dict(
    vocab_size=58101, decoder_vocab_size=None, max_position_embeddings=1024, encoder_layers=12,
    encoder_ffn_dim=4096, encoder_attention_heads=16, decoder_layers=12, decoder_ffn_dim=4096,
    decoder_attention_heads=16, activation_function="gelu", d_model=1024, decoder_start_token_id=58100,
    scale_embedding=False, pad_token_id=58100, eos_token_id=0, share_encoder_decoder_embeddings=True,
    tie_word_embeddings=True,
)  # fmt: skip
SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "eos": "</s>"}  # MarianTokenizer's defaults


# --------------------------------------------------------------------------- configuration


def _int_field(c: Mapping[str, Any], key: str, where: str, low: int = 1) -> int:
    value = c.get(key, MARIAN_DEFAULTS.get(key))
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}: {key}: expected an integer >= {low}, got {value!r}")
    return value


def marian_config(hf_cfg: Mapping[str, Any] | Any, unk_id: int = 1, where: str = "config.json") -> ModelConfig:
    """The :class:`ModelConfig` equivalent to a MarianMT ``config.json`` (a mapping, or a HF
    ``MarianConfig``); :class:`ConfigError` naming ``where`` and the field for anything mt's
    Transformer cannot compute the same way."""
    c = hf_cfg if isinstance(hf_cfg, Mapping) else hf_cfg.to_dict()
    if c.get("model_type") != "marian":
        raise ConfigError(f"{where}: model_type: expected 'marian' (a MarianMT model), got {c.get('model_type')!r}")
    size = {k: _int_field(c, k, where) for k in (
        "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
        "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "max_position_embeddings")}  # fmt: skip
    ids = {k: _int_field(c, k, where, low=0) for k in ("pad_token_id", "eos_token_id", "decoder_start_token_id")}
    for part in ("attention_heads", "ffn_dim"):
        if size[f"encoder_{part}"] != size[f"decoder_{part}"]:
            raise ConfigError(f"{where}: decoder_{part}: mt needs the encoder's value ({size[f'encoder_{part}']}), "
                              f"got {size[f'decoder_{part}']}")  # fmt: skip
    activation = c.get("activation_function", MARIAN_DEFAULTS["activation_function"])
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError(f"{where}: activation_function: {activation!r} is not supported ({', '.join(ACTIVATIONS)})")
    for key in ("normalize_before", "add_final_layer_norm"):
        if c.get(key):
            raise ConfigError(f"{where}: {key}: only post-norm Marian models (the default) are supported")
    shared = bool(c.get("share_encoder_decoder_embeddings", True))
    dec_vocab = c.get("decoder_vocab_size") or size["vocab_size"]
    if dec_vocab != size["vocab_size"]:
        raise ConfigError(f"{where}: decoder_vocab_size: {dec_vocab} differs from vocab_size {size['vocab_size']} "
                          "(separate vocabularies of different sizes are not supported)")  # fmt: skip
    cfg = ModelConfig(
        preset=None,
        vocab_size=size["vocab_size"],
        d_model=size["d_model"],
        n_heads=size["encoder_attention_heads"],
        enc_layers=size["encoder_layers"],
        dec_layers=size["decoder_layers"],
        ffn_dim=size["encoder_ffn_dim"],
        dropout=0.0,
        activation=ACTIVATIONS[activation],  # type: ignore[arg-type]
        norm="post",
        positions="sinusoidal",
        max_positions=size["max_position_embeddings"],
        scale_embedding=bool(c.get("scale_embedding", False)),
        tie_output=bool(c.get("tie_word_embeddings", True)),
        share_embeddings=shared,
        layernorm_embedding=False,
        final_logits_bias=True,
        pad_id=ids["pad_token_id"],
        unk_id=unk_id,
        bos_id=ids["pad_token_id"],
        eos_id=ids["eos_token_id"],
        decoder_start_id=ids["decoder_start_token_id"],
    )
    try:
        cfg.validate("model")  # sizes bounded, ids inside the vocabulary
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


# --------------------------------------------------------------------------- weights


def _read_weights(src: Path) -> tuple[Path, dict[str, "torch.Tensor"]]:
    """``(file, {name: tensor})`` from ``model.safetensors``, else ``pytorch_model.bin``
    (``weights_only``: a pickle that would run code is refused)."""
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st, pt = (src / name for name in WEIGHT_FILES)
    if st.is_file():
        try:
            return st, load_file(str(st))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelDirError(f"{st}: not a readable safetensors file (truncated or damaged?): {e}") from None
    if not pt.is_file():
        raise MissingFileError(f"{st}: not found (nor {pt.name}): the weights are missing")
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise ModelDirError(f"{pt}: cannot load it as plain tensors (weights_only): {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelDirError(f"{pt}: expected a mapping of tensor names to tensors")
    return pt, state


def _state_dict(hf_state: Mapping[str, "torch.Tensor"], cfg: ModelConfig, where: Path) -> dict[str, "torch.Tensor"]:
    """Rename and fuse HF Marian weights (``model.`` prefix optional) into mt's
    ``Transformer`` names; a missing tensor raises :class:`ModelDirError` naming ``where``."""
    import torch

    s = {k.removeprefix("model."): v for k, v in hf_state.items()}

    def get(*names: str) -> torch.Tensor:
        for name in names:
            if name in s:
                return s[name].float()
        raise ModelDirError(f"{where}: tensor {names[0]} is missing (is this a MarianMT checkpoint?)")

    src_embed = get("encoder.embed_tokens.weight", "shared.weight")
    out: dict[str, torch.Tensor] = {
        "src_embed.weight": src_embed,  # the same parameter as tgt_embed when shared
        "tgt_embed.weight": src_embed if cfg.share_embeddings else get("decoder.embed_tokens.weight"),
    }
    if not cfg.tie_output:
        out["output_proj.weight"] = get("lm_head.weight")
    # absent in some checkpoints; transformers then starts it at zero too
    out["final_logits_bias"] = s.get("final_logits_bias", torch.zeros(cfg.vocab_size)).float().reshape(-1)

    def fused(prefix: str, parts: str) -> dict[str, torch.Tensor]:
        return {
            "weight": torch.cat([get(f"{prefix}.{p}_proj.weight") for p in parts]),
            "bias": torch.cat([get(f"{prefix}.{p}_proj.bias") for p in parts]),
        }

    def copy(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}.weight")
        out[f"{dst}.bias"] = get(f"{src}.bias")

    for i in range(cfg.enc_layers):
        e, m = f"encoder.layers.{i}", f"encoder_layers.{i}"
        for name, t in fused(f"{e}.self_attn", "qkv").items():
            out[f"{m}.self_attn.qkv_proj.{name}"] = t
        copy(f"{m}.self_attn.out_proj", f"{e}.self_attn.out_proj")
        copy(f"{m}.attn_block.norm", f"{e}.self_attn_layer_norm")
        copy(f"{m}.ffn.fc1", f"{e}.fc1")
        copy(f"{m}.ffn.fc2", f"{e}.fc2")
        copy(f"{m}.ffn_block.norm", f"{e}.final_layer_norm")
    for i in range(cfg.dec_layers):
        d, m = f"decoder.layers.{i}", f"decoder_layers.{i}"
        for name, t in fused(f"{d}.self_attn", "qkv").items():
            out[f"{m}.self_attn.qkv_proj.{name}"] = t
        copy(f"{m}.self_attn.out_proj", f"{d}.self_attn.out_proj")
        copy(f"{m}.self_block.norm", f"{d}.self_attn_layer_norm")
        copy(f"{m}.cross_attn.q_proj", f"{d}.encoder_attn.q_proj")
        for name, t in fused(f"{d}.encoder_attn", "kv").items():
            out[f"{m}.cross_attn.kv_proj.{name}"] = t
        copy(f"{m}.cross_attn.out_proj", f"{d}.encoder_attn.out_proj")
        copy(f"{m}.cross_block.norm", f"{d}.encoder_attn_layer_norm")
        copy(f"{m}.ffn.fc1", f"{d}.fc1")
        copy(f"{m}.ffn.fc2", f"{d}.fc2")
        copy(f"{m}.ffn_block.norm", f"{d}.final_layer_norm")
    return out


def build_transformer(cfg: ModelConfig, hf_state: Mapping[str, "torch.Tensor"], where: Path) -> "Transformer":
    """An eval-mode fp32 :class:`Transformer` holding the Marian weights ``hf_state``."""
    from mt.model import Transformer

    model = Transformer(cfg)
    try:
        model.load_state_dict(_state_dict(hf_state, cfg, where), strict=True)
    except RuntimeError as e:  # shapes that do not fit config.json
        raise ModelDirError(f"{where}: weights do not match config.json: {e}") from None
    return model.eval()


def convert_model(hf_model: Any) -> "Transformer":
    """An in-memory ``transformers.MarianMTModel`` as an eval-mode fp32 :class:`Transformer`
    computing the same function (Marian's own ids; no text pipeline: see :func:`import_marian`)."""
    cfg = marian_config(hf_model.config)
    return build_transformer(cfg, hf_model.state_dict(), Path("<MarianMTModel>"))


# --------------------------------------------------------------------------- tokenizer


def _special_piece(tok_cfg: Mapping[str, Any], name: str, where: Path) -> str:
    """``<name>_token`` of ``tokenizer_config.json`` (a string or ``{"content": ...}``)."""
    value = tok_cfg.get(f"{name}_token", SPECIAL_TOKENS[name])
    if isinstance(value, Mapping):
        value = value.get("content")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name}_token: expected a token string, got {value!r}")
    return value


def _vocabulary(src: Path, tok_cfg: Mapping[str, Any], hf_cfg: Mapping[str, Any]) -> "Vocabulary":
    """Marian's piece ↔ id mapping: ``vocab.json`` (+ ``target_vocab.json`` when the vocabularies
    are separate), the special ids checked against ``config.json``."""
    from mt.data.text import Vocabulary, read_vocab

    tok_path, cfg_path = src / "tokenizer_config.json", src / "config.json"
    separate = bool(tok_cfg.get("separate_vocabs", (src / "target_vocab.json").is_file()))
    sides = [(src / "vocab.json", read_vocab(src / "vocab.json"))]
    if separate:
        sides.append((src / "target_vocab.json", read_vocab(src / "target_vocab.json")))
    expected = hf_cfg.get("vocab_size", MARIAN_DEFAULTS["vocab_size"])
    ids: dict[str, int] = {}
    for path, pieces in sides:
        if len(pieces) != expected:
            raise ModelDirError(f"{path}: has {len(pieces)} entries but {cfg_path} has vocab_size {expected!r}")
        for name in ("pad", "unk", "eos"):
            piece = _special_piece(tok_cfg, name, tok_path)
            if piece not in pieces:
                raise ModelDirError(f"{path}: has no {piece!r} entry (the {name} token)")
            i = pieces.index(piece)
            if ids.setdefault(name, i) != i:  # mt has one set of special ids for both sides
                raise ModelDirError(f"{path}: {piece!r} has id {i}, but {ids[name]} in vocab.json")
    for name in ("pad", "eos"):
        stated = hf_cfg.get(f"{name}_token_id", MARIAN_DEFAULTS[f"{name}_token_id"])
        if stated != ids[name]:
            raise ConfigError(f"{cfg_path}: {name}_token_id: {stated!r}, but vocab.json has the {name} token at {ids[name]}")
    return Vocabulary(sides[0][1], sides[-1][1], ids["pad"], ids["unk"], ids["eos"])


def _language(flag_value: Optional[str], flag: str, tok_cfg: Mapping[str, Any], key: str, tok_path: Path) -> str:
    """A language from its flag, else from ``tokenizer_config.json``; a clear error if neither says."""
    from mt.data.text import is_language_code

    value, where = (flag_value, flag) if flag_value is not None else (tok_cfg.get(key), f"{tok_path}: {key}")
    if value is None:
        why = f"{tok_path} has no {key}" if tok_path.is_file() else f"{tok_path} not found"
        raise ConfigError(f"{flag}: required ({why})")
    if not is_language_code(value):
        raise ConfigError(f"{where}: expected a language code like 'de', got {value!r} (pass {flag})")
    return value


def _default_beam(src: Path, hf_cfg: Mapping[str, Any]) -> DecodeOptions:
    """mt's decoding defaults with the model's beam size (``generation_config.json``, else ``config.json``)."""
    gen = read_json_object(src / "generation_config.json") if (src / "generation_config.json").is_file() else {}
    beam = gen.get("num_beams", hf_cfg.get("num_beams"))
    if isinstance(beam, int) and not isinstance(beam, bool) and 1 <= beam <= 1024:
        return DecodeOptions(beam=beam)
    return DecodeOptions()


# --------------------------------------------------------------------------- the command


def _check_out_dir(out: Path) -> None:
    """``OUT_DIR`` is new, empty, or an mt model directory: replacing it must not delete
    anything else (a typo such as ``mt import marian x ~``)."""
    from mt.modelio import FORMAT

    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"OUT_DIR {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    try:
        is_model = read_json_object(out / "config.json").get("format") == FORMAT
    except UserError:  # no config.json, or not JSON
        is_model = False
    if not is_model:
        raise ConfigError(f"OUT_DIR {out}: exists and is not an mt model directory (choose a new directory)")


def import_marian(src_dir: str | Path, out_dir: str | Path, src_lang: Optional[str] = None,
                  tgt_lang: Optional[str] = None) -> Path:
    """Convert the MarianMT directory ``src_dir`` into the mt model directory ``out_dir``
    (written atomically by :func:`mt.modelio.save_model`; on any error nothing is written).

    Languages: ``src_lang``/``tgt_lang``, else ``tokenizer_config.json``'s ``source_lang`` /
    ``target_lang``. Text is not normalised by mt (no Unicode form, no Moses punctuation):
    the SentencePiece models carry Marian's own normaliser. Errors are
    :class:`mt.errors.UserError` subclasses naming the file and field."""
    from mt.data.text import TextPipeline
    from mt.modelio import save_model

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise MissingFileError(f"{src}: {'not a directory' if src.exists() else 'MarianMT directory not found'}")
    for name in REQUIRED_FILES:
        if not (src / name).is_file():
            raise MissingFileError(f"{src / name}: missing from the MarianMT directory")
    _check_out_dir(out)
    hf_cfg = read_json_object(src / "config.json")
    cfg = marian_config(hf_cfg, where=str(src / "config.json"))  # first: is it a MarianMT model at all?
    tok_path = src / "tokenizer_config.json"
    tok_cfg = read_json_object(tok_path) if tok_path.is_file() else {}
    langs = (_language(src_lang, "--src-lang", tok_cfg, "source_lang", tok_path),
             _language(tgt_lang, "--tgt-lang", tok_cfg, "target_lang", tok_path))  # fmt: skip
    vocab = _vocabulary(src, tok_cfg, hf_cfg)
    cfg = dataclasses.replace(cfg, unk_id=vocab.unk_id)
    text = TextPipeline(*langs, src / "source.spm", src / "target.spm", normalize_punct=False,
                        unicode_form="none", vocab=vocab)  # fmt: skip
    weights, hf_state = _read_weights(src)  # last: the largest file, once everything else is right
    model = build_transformer(cfg, hf_state, weights)
    meta = {"imported": {"format": "marian", "from": str(src.resolve()), "weights": weights.name}}
    return save_model(out, model, text, meta, decode=_default_beam(src, hf_cfg))


def finetune_config(model_dir: str | Path, cfg: ModelConfig) -> dict[str, Any]:
    """The experiment-config sections that fine-tune the imported ``model_dir``: its
    vocabulary and weights, its architecture (``train.init_from`` needs the same one; set
    ``model.dropout`` as for any training run), and no extra normalisation of the text."""
    d = str(model_dir)
    model = {k: v for k, v in to_dict(cfg).items() if "dropout" not in k}
    return {
        "data": {"spm_from": d, "clean": {"normalize_punct": False, "unicode_form": "none"}},
        "model": {**model, "dropout": 0.1},
        "train": {"init_from": d},
    }


def import_cli(args: argparse.Namespace) -> int:
    """``mt import marian``: convert, then print what was written and how to fine-tune it."""
    import yaml

    from mt.modelio import read_model_config

    out = import_marian(args.src_dir, args.out_dir, args.src_lang, args.tgt_lang)
    cfg, meta = read_model_config(out)
    print(f"mt import marian: wrote {out} ({meta['src_lang']}-{meta['tgt_lang']}, "
          f"{meta['parameters']:,} parameters, vocabulary {cfg.vocab_size})")  # fmt: skip
    print("to fine-tune it, use these sections in an experiment config (see docs/marian.md):")
    print(yaml.safe_dump(finetune_config(out.resolve(), cfg), sort_keys=False, allow_unicode=True), end="")
    return 0


def add_import_parser(subparsers: Any) -> None:
    """``mt import marian SRC_DIR OUT_DIR [--src-lang L] [--tgt-lang L]`` on the CLI's subcommands."""
    p = subparsers.add_parser("import", help="convert a model of another toolkit into an mt model directory")
    formats = p.add_subparsers(dest="import_format", metavar="FORMAT")
    m = formats.add_parser("marian", help="a Hugging Face MarianMT (OPUS-MT) directory, e.g. from save_pretrained")
    m.add_argument("src_dir", metavar="SRC_DIR", help="MarianMT directory (config.json, weights, *.spm, vocab.json)")
    m.add_argument("out_dir", metavar="OUT_DIR", help="mt model directory to write (new, or an mt model to replace)")
    m.add_argument("--src-lang", default=None, help="source language (default: tokenizer_config.json's source_lang)")
    m.add_argument("--tgt-lang", default=None, help="target language (default: tokenizer_config.json's target_lang)")
    m.set_defaults(func=import_cli)
