"""Model directories: ``config.json`` + ``model.safetensors`` + the text pipeline files.

A model directory is everything needed to translate — no pickle, so loading a directory
from someone else executes no code::

    model_dir/
      config.json         {"format": "mt-model", "version": 1, "model": ModelConfig, "meta": {...}}
      model.safetensors   weights (tied tensors stored once)
      text.json, spm*.model   normalisation settings + SentencePiece model(s) (mt.data.text)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from mt.config import ConfigError, ModelConfig, from_dict, to_dict
from mt.data.text import TextPipeline
from mt.fileio import replace_dir
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


def atomic_dir(final: Path):
    """Context manager yielding a temp dir that replaces ``final`` on success."""

    class _Ctx:
        def __enter__(self) -> Path:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))
            return self.tmp

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            replace_dir(self.tmp, final)

    return _Ctx()


def save_model(out_dir: str | Path, model: Transformer, text: TextPipeline, meta: dict[str, Any] | None = None) -> Path:
    """Write a model directory atomically (the old one, if any, is replaced only on success)."""
    out = Path(out_dir)
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
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        text.save(tmp)
    return out


def read_model_config(model_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """``(ModelConfig, meta)`` from ``model_dir/config.json``, with errors naming the file."""
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an mt model config (format={raw.get('format')!r})")
    if raw.get("version", 0) > VERSION:
        raise ConfigError(f"{path}: written by a newer mt (version {raw['version']} > {VERSION})")
    try:
        cfg = from_dict(ModelConfig, raw["model"], "model")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg, raw.get("meta", {})


def check_model_dir(model_dir: str | Path) -> Path:
    """Raise ``FileNotFoundError`` naming the first missing file of a model directory."""
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: model directory not found")
    for name in REQUIRED_FILES:
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name}: missing from the model directory")
    return d


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_model` (or the Marian importer)."""
    d = check_model_dir(model_dir)
    cfg, meta = read_model_config(d)
    model = Transformer(cfg)
    try:
        missing, unexpected = st_load_model(model, str(d / "model.safetensors"), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{d / 'model.safetensors'}: cannot load weights: {e}") from None
    # tied weights are stored once; anything else missing is a real mismatch
    missing = [k for k in missing if not _is_tied_alias(model, k)]
    if missing or unexpected:
        raise ValueError(
            f"{d / 'model.safetensors'}: weights do not match config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    text = TextPipeline.load(d)
    if text.vocab_size != cfg.vocab_size:
        raise ValueError(f"{d}: SentencePiece vocabulary ({text.vocab_size}) != model.vocab_size ({cfg.vocab_size})")
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
