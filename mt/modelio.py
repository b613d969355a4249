"""Model directories: ``config.json`` + ``model.safetensors`` + the text pipeline files.

A model directory is everything needed to translate — no pickle, so loading a directory
from someone else executes no code::

    model_dir/
      config.json         {"format": "mt-model", "version": 1, "model": ModelConfig, "meta": {...}}
      model.safetensors   weights (tied tensors stored once)
      text.json, spm*.model   normalisation settings + SentencePiece model(s) (mt.data.text)
      vocab*.json         imported models only: the piece of every model id (`mt import marian`)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from mt.config import ConfigError, DecodeOptions, ModelConfig, from_dict, to_dict
from mt.data.text import TextPipeline
from mt.errors import MissingFileError, ModelDirError
from mt.fileio import atomic_dir, read_json_object
from mt.model import Transformer

FORMAT = "mt-model"
VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "text.json")


@dataclass
class LoadedModel:
    """A model ready for decoding: the network (eval mode), its text pipeline, and metadata."""

    model: Transformer
    text: TextPipeline
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def save_model(out_dir: str | Path, model: Transformer, text: TextPipeline, meta: dict[str, Any] | None = None,
               decode: DecodeOptions | None = None) -> Path:
    """Write a model directory atomically (the old one, if any, is replaced only on success).
    ``decode``: the decoding settings the model was trained (validated) with; their
    ``search`` group is stored as the directory's decoding defaults."""
    out = Path(out_dir)
    _check_replaceable(out)
    meta = dict(meta or {})
    meta.setdefault("src_lang", text.src_lang)
    meta.setdefault("tgt_lang", text.tgt_lang)
    meta.setdefault("parameters", model.num_parameters())
    with atomic_dir(out) as tmp:
        # copy to CPU fp32 so a model trained on GPU / in bf16 loads anywhere
        state_model = model
        if next(model.parameters()).device.type != "cpu":
            state_model = Transformer(model.cfg)
            state_model.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        st_save_model(state_model, str(tmp / "model.safetensors"))
        config = {"format": FORMAT, "version": VERSION, "model": to_dict(model.cfg), "meta": meta}
        if decode is not None:
            config["decode"] = decode.group("search")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        text.save(tmp)
    return out


def _check_replaceable(out: Path) -> None:
    """Only an earlier model directory (or nothing, or an empty directory) may be replaced: a
    mistyped ``--out`` must not delete a user's directory."""
    if out.is_file() or out.is_symlink():
        raise ConfigError(f"{out}: exists and is not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ConfigError(f"{out}: exists and is not a model directory (no config.json); "
                          "refusing to replace it: choose another output path or remove it")  # fmt: skip


def read_model_config(model_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """``(ModelConfig, meta)`` from ``model_dir/config.json``, with errors naming the file and
    the field; the architecture is validated (:meth:`ModelConfig.validate`: bounded sizes,
    heads dividing ``d_model``, special ids inside the vocabulary) before anything is allocated."""
    path = Path(model_dir) / "config.json"
    raw = read_json_object(path)
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: format: not an mt model config (format={raw.get('format')!r})")
    version = raw.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(f"{path}: version: expected an integer, got {version!r}")
    if version > VERSION:
        raise ConfigError(f"{path}: written by a newer mt (version {version} > {VERSION})")
    if "model" not in raw:
        raise ConfigError(f"{path}: model: missing (the architecture settings)")
    if not isinstance(raw["model"], dict):
        raise ConfigError(f"{path}: model: expected a mapping, got {type(raw['model']).__name__}")
    try:
        cfg = from_dict(ModelConfig, raw["model"], "model")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if cfg.vocab_size < 1:
        raise ConfigError(f"{path}: model.vocab_size: must be >= 1 in a model directory, got {cfg.vocab_size}")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: meta: expected a mapping, got {type(meta).__name__}")
    return cfg, meta


def check_model_dir(model_dir: str | Path) -> Path:
    """Raise :class:`MissingFileError` (a ``FileNotFoundError``) naming the model
    directory or its first missing file."""
    d = Path(model_dir)
    if not d.is_dir():
        what = "not a directory" if d.exists() else "model directory not found"
        raise MissingFileError(f"{d}: {what}")
    for name in REQUIRED_FILES:
        if not (d / name).is_file():
            raise MissingFileError(f"{d / name}: missing from the model directory")
    return d


def _stored_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes of a safetensors file, from its header (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelDirError(f"{path}: not a readable safetensors file (truncated or damaged?): {e}") from None


def _check_stored_size(path: Path, shapes: dict[str, list[int]], cfg: ModelConfig) -> None:
    """Refuse a ``config.json`` whose architecture is far larger than the weights stored next
    to it, before the model is allocated (a ``d_model`` typo must not allocate 100 GB)."""
    r = cfg.resolved()
    emb = shapes.get("src_embed.weight")
    if emb is not None and emb != [r.vocab_size, r.d_model]:
        raise ModelDirError(
            f"{path}: src_embed.weight is {'x'.join(map(str, emb))} but config.json has "
            f"model.vocab_size={r.vocab_size}, model.d_model={r.d_model}"
        )
    stored = sum(math.prod(s) for s in shapes.values())
    expected = r.estimated_parameters()
    if expected > 1.1 * stored + 10_000:
        raise ModelDirError(
            f"{path}: holds {stored:,} weights but config.json's model (d_model={r.d_model}, "
            f"ffn_dim={r.ffn_dim}, enc_layers={r.enc_layers}, dec_layers={r.dec_layers}) needs {expected:,}"
        )


def _check_shapes(path: Path, model: Transformer, shapes: dict[str, list[int]]) -> None:
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    # tied weights are stored once; anything else missing is a real mismatch
    missing = [k for k in expected if k not in shapes and not _is_tied_alias(model, k)]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {shapes[k]} != {expected[k]}" for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        found = [f"missing {missing[:3]}"] if missing else []
        found += [f"unexpected {unexpected[:3]}"] if unexpected else []
        found += [f"shapes {'; '.join(wrong[:3])}"] if wrong else []
        raise ModelDirError(f"{path}: weights do not match config.json ({', '.join(found)})")


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_model` (or the Marian importer).

    Everything is checked before the weights are allocated: the files exist, ``config.json``
    is valid (:func:`read_model_config`), the text pipeline loads and matches its vocabulary,
    and the safetensors header's tensor shapes fit the configuration. Errors are
    :class:`mt.errors.UserError` subclasses naming the file (and field)."""
    d = check_model_dir(model_dir)
    cfg, meta = read_model_config(d)
    text = TextPipeline.load(d)
    if text.vocab_size != cfg.vocab_size:
        raise ModelDirError(
            f"{d / 'config.json'}: model.vocab_size is {cfg.vocab_size} but the SentencePiece "
            f"vocabulary of {d / 'text.json'} has {text.vocab_size} pieces"
        )
    weights = d / "model.safetensors"
    shapes = _stored_shapes(weights)
    _check_stored_size(weights, shapes, cfg)
    model = Transformer(cfg)
    _check_shapes(weights, model, shapes)
    try:
        st_load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ModelDirError(f"{weights}: cannot load weights: {e}") from None
    model.to(device).eval()
    return LoadedModel(model=model, text=text, meta=meta, path=d)


def _is_tied_alias(model: Transformer, key: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    return any(other is not key and p is params[key] for other, p in params.items() if other != key)


def model_summary(loaded: LoadedModel) -> dict[str, Any]:
    cfg = loaded.model.cfg
    return {
        "path": str(loaded.path) if loaded.path else None,
        "src_lang": loaded.meta.get("src_lang"),
        "tgt_lang": loaded.meta.get("tgt_lang"),
        "parameters": loaded.model.num_parameters(),
        "config": dataclasses.asdict(cfg),
    }


def stored_decode_options(model_dir: str | Path) -> DecodeOptions:
    """The decoding defaults stored in ``model_dir/config.json`` (its ``decode`` key, written
    by :func:`save_model`; ``DecodeOptions()`` for a directory without one), errors naming
    the file and field."""
    path = Path(model_dir) / "config.json"
    stored = read_json_object(path).get("decode", {})  # errors name the file
    if not isinstance(stored, dict):
        raise ConfigError(f"{path}: decode: expected a mapping of decoding settings")
    try:
        return from_dict(DecodeOptions, stored, "decode")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
