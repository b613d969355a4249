"""Training checkpoints: everything needed to continue a run bit-exactly, without pickle.

Layout (one directory per checkpoint, created under a temporary name and renamed, so a
run killed mid-write never leaves a checkpoint that looks complete)::

    run_dir/checkpoints/step_00001200/
      model.safetensors    model weights (tied tensors stored once, aliases in state.json)
      optim.safetensors    optimizer state tensors, flattened to "<param index>.<name>"
      ema.safetensors      the weights' moving average by parameter name (train.ema_decay only)
      state.json           step/epoch, scheduler, sampler position, RNG states, trainer
                           state (best metric, early-stopping counter, ...), optimizer
                           hyper-parameters, and the size + sha256 of each .safetensors file

Nothing here unpickles: tensors come from safetensors, everything else from JSON, so a
checkpoint from elsewhere cannot run code. ``load_checkpoint`` verifies sizes and hashes
before reading tensors and says which file is damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mt.errors import UserError
from mt.fileio import atomic_dir
from mt.fileio import sha256_file as _sha256

FORMAT = "mt-checkpoint"
VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the current run."""


# --------------------------------------------------------------------------- helpers


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """safetensors needs contiguous CPU tensors that share no memory."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def dedupe_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier key (tied embeddings).

    Returns ``(unique tensors, {alias: canonical key})``.
    """
    unique: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() and ident in seen:
            aliases[key] = seen[ident]
        else:
            seen[ident] = key
            unique[key] = t
    return unique, aliases


def _flatten_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param>.<name>"``) and JSON."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt_state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in opt_state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global), torch CPU and CUDA generator states as JSON data."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------- save / load


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: tensors (CPU) plus the JSON state."""

    path: Path
    step: int
    model_state: dict[str, Tensor]
    optimizer_state: Optional[dict[str, Any]]
    state: dict[str, Any] = field(default_factory=dict)
    ema: Optional[tuple[dict[str, Tensor], dict[str, Any]]] = None  # WeightEMA.state_dict()


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (temporaries are ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    state: dict[str, Any],
    keep_last: int = 5,
    ema: Optional[tuple[dict[str, Tensor], dict[str, Any]]] = None,
) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` atomically, then prune to ``keep_last``.

    ``state`` is JSON data from the trainer (scheduler, sampler, counters, config). RNG
    states are added here, so call this at the point the run should continue from. ``ema``
    is :meth:`mt.train.ema.WeightEMA.state_dict`, kept beside the raw weights.
    """
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    # re-saving the same step (e.g. the final save right after a periodic one) replaces it
    with atomic_dir(final) as tmp:
        model_tensors, aliases = dedupe_state(model.state_dict())
        _save_tensors(model_tensors, tmp / "model.safetensors")
        files = ["model.safetensors"]
        meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "step": step, "aliases": aliases}
        if optimizer is not None:
            opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
            _save_tensors(opt_tensors, tmp / "optim.safetensors")
            files.append("optim.safetensors")
            meta["optimizer"] = opt_meta
        if ema is not None:
            _save_tensors(ema[0], tmp / "ema.safetensors")
            files.append("ema.safetensors")
            meta["ema"] = ema[1]
        meta["rng"] = rng_state()
        meta["trainer"] = state
        # sizes + hashes let resume tell a damaged file from a good one before parsing it
        meta["files"] = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in files}
        with open(tmp / "state.json", "w", encoding="utf-8") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete half-written checkpoint directories left by a killed run."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            # ``.old-``: a replaced checkpoint that atomic_dir had not deleted yet
            if p.name.startswith(".step_") and (".tmp" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)


def _read_state(path: Path) -> dict[str, Any]:
    state_path = path / "state.json"
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: missing; {path} is not a complete checkpoint")
    try:
        meta = json.loads(state_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{state_path}: corrupt ({e}); delete {path} to resume from an older checkpoint") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{state_path}: not an mt checkpoint")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{state_path}: written by a newer mt (version {meta['version']})")
    return meta


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file's size and sha256 against ``state.json``; return the parsed state.

    Raises ``CheckpointError`` naming the damaged file.
    """
    path = Path(path)
    meta = _read_state(path)
    hint = f"delete {path} to resume from an older checkpoint"
    for name, info in meta["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from checkpoint; {hint}")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes, expected {info['bytes']} (truncated?); {hint}")
        if _sha256(f) != info["sha256"]:
            raise CheckpointError(f"{f}: checksum mismatch (corrupt); {hint}")
    return meta


def _load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None


def load_checkpoint(path: str | Path, with_optimizer: bool = True) -> Checkpoint:
    """Read and verify one checkpoint directory (tensors on CPU)."""
    path = Path(path)
    meta = verify_checkpoint(path)
    model_state = _load_tensors(path / "model.safetensors")
    for alias, canonical in meta.get("aliases", {}).items():
        model_state[alias] = model_state[canonical]
    optimizer_state = None
    if with_optimizer and "optimizer" in meta:
        optimizer_state = _unflatten_optimizer(_load_tensors(path / "optim.safetensors"), meta["optimizer"])
    ema = (_load_tensors(path / "ema.safetensors"), meta["ema"]) if with_optimizer and "ema" in meta else None
    return Checkpoint(path=path, step=int(meta["step"]), model_state=model_state, optimizer_state=optimizer_state,
                      state=meta, ema=ema)  # fmt: skip


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# --------------------------------------------------------------------------- averaging


def _model_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and ``trainer`` state of a checkpoint dir, or weights and meta of a model dir."""
    if (path / "state.json").is_file():
        ckpt = load_checkpoint(path, with_optimizer=False)
        return ckpt.model_state, ckpt.state.get("trainer", {})
    if (path / "config.json").is_file():
        from mt.modelio import load_model

        loaded = load_model(path)
        return loaded.model.state_dict(), {"model_dir": str(path)}
    raise CheckpointError(f"{path}: neither a checkpoint (state.json) nor a model directory (config.json)")


def average_state_dicts(states: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of float tensors (accumulated in float64); integer tensors from the last."""
    total: dict[str, Tensor] = {}
    n = 0
    for state in states:
        n += 1
        for key, t in state.items():
            if not t.is_floating_point():
                total[key] = t.clone()
            elif key in total:
                total[key] += t.double()
            else:
                total[key] = t.double().clone()
    if n == 0:
        raise CheckpointError("nothing to average")
    return {k: (v / n).float() if v.is_floating_point() else v for k, v in total.items()}


def _identity(path: Path) -> tuple[dict[str, Any], Optional[tuple[str, ...]]]:
    """``(architecture, vocabulary)`` of a checkpoint or model directory: the resolved model
    configuration, and the languages and SentencePiece model(s) (None when not found)."""
    from mt.config import ModelConfig, from_dict, to_dict
    from mt.data.text import TextPipeline

    if (path / "state.json").is_file():
        trainer = _read_state(path).get("trainer", {})
        raw, text_dir = trainer.get("model_config"), trainer.get("data_path")
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path / 'state.json'}: trainer.model_config: missing; not a training checkpoint")
        where = f"{path / 'state.json'}: model_config"
    elif (path / "config.json").is_file():
        from mt.modelio import read_model_config

        raw, text_dir, where = to_dict(read_model_config(path)[0]), str(path), "model"
    else:
        raise CheckpointError(f"{path}: neither a checkpoint (state.json) nor a model directory (config.json)")
    arch = to_dict(from_dict(ModelConfig, raw, where).resolved())
    vocab = None
    if text_dir and (Path(text_dir) / "text.json").is_file():
        text = TextPipeline.load(text_dir, num_threads=1)
        protos = (text.src_sp.serialized_model_proto(), text.tgt_sp.serialized_model_proto())
        vocab = (text.src_lang, text.tgt_lang, *(hashlib.sha256(p).hexdigest() for p in protos))
    return arch, vocab


def _check_same_model(first: Path, a: tuple, other: Path, b: tuple) -> None:
    """Refuse to average ``other`` with ``first`` unless architecture and vocabulary agree."""
    if a[0] != b[0]:
        key = next(k for k in a[0] if a[0][k] != b[0].get(k))
        raise CheckpointError(
            f"cannot average {first} and {other}: different models "
            f"(model.{key} = {a[0][key]!r} vs {b[0].get(key)!r})"
        )
    if a[1] is not None and b[1] is not None and a[1] != b[1]:
        what = "languages" if a[1][:2] != b[1][:2] else "SentencePiece vocabularies"
        raise CheckpointError(f"cannot average {first} and {other}: different {what}")


def average_checkpoints(
    run_dir: str | Path, out: str | Path, last: int = 5, inputs: Optional[list[str]] = None
) -> Path:
    """Average the weights of the ``last`` newest checkpoints of ``run_dir`` (or of the
    checkpoint/model directories ``inputs``) into the model directory ``out``."""
    from mt.config import ConfigError, ModelConfig, from_dict
    from mt.data.text import TextPipeline
    from mt.model import Transformer
    from mt.modelio import load_model, save_model

    run_dir = Path(run_dir)
    if last < 1:
        raise ConfigError(f"--last must be >= 1, got {last}")
    paths = [Path(p) for p in inputs] if inputs else list_checkpoints(run_dir)[-last:]
    if not paths:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no checkpoints to average")
    # same architecture and vocabulary, or the mean is meaningless: checked before loading
    first = _identity(paths[0])
    for p in paths[1:]:
        _check_same_model(paths[0], first, p, _identity(p))
    states, infos = [], []
    for p in paths:
        weights, info = _model_weights(p)
        states.append(weights)
        infos.append(info)
    keys = set(states[0])
    for p, s in zip(paths, states):
        if set(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise CheckpointError(f"{p}: weights do not match {paths[0]} (different model?)")
    averaged = average_state_dicts(states)

    info = infos[-1]
    if "model_dir" in info:  # averaging model directories: config and text come from the last one
        template = load_model(info["model_dir"])
        model, text = template.model, template.text
    else:
        cfg = from_dict(ModelConfig, info["model_config"], "model")
        model = Transformer(cfg)
        data_dir = Path(info.get("data_path", run_dir / "data"))
        if not (data_dir / "text.json").is_file():
            data_dir = paths[-1].parent.parent / "data"  # run_dir/checkpoints/step_x → run_dir/data
        text = TextPipeline.load(data_dir)
    model.load_state_dict(averaged)
    meta = {"averaged": [str(p) for p in paths], "steps": [i.get("step") for i in infos]}
    return save_model(out, model, text, meta, decode=_decode_defaults(info, run_dir))


def _decode_defaults(info: dict, run_dir: Path):
    """The decoding defaults an averaged model keeps: the last model directory's, else the
    training run's ``decode`` section (``run_dir/config.yaml``), else none."""
    import yaml

    from mt.config import DecodeOptions, from_dict
    from mt.modelio import stored_decode_options

    if "model_dir" in info:
        return stored_decode_options(info["model_dir"])
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        return None
    section = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("decode") or {}
    return from_dict(DecodeOptions, section, f"{config}: decode")
