"""Import a Hugging Face MarianMT model (``MarianMTModel`` or its ``save_pretrained`` dir)
into :class:`mt.model.Transformer`.

Config mapping (HF ``MarianConfig`` → :class:`mt.config.ModelConfig`):

=================================  ===========================================
``d_model``, ``*_layers``,         same sizes; encoder and decoder must match
``*_attention_heads``, ``*_ffn_dim``
``activation_function``            ``swish``/``silu`` → ``swish``; ``gelu``; ``relu``
(post-norm, no final LayerNorm)    ``norm="post"``
sinusoidal positions, sin | cos    ``positions="sinusoidal"`` (same sin/cos-halves layout)
``scale_embedding``                ``scale_embedding`` (× √d_model)
``final_logits_bias``              ``final_logits_bias=True``
``share_encoder_decoder_embeddings`` ``share_embeddings``; the LM head must be tied
``pad/eos/decoder_start_token_id`` ``pad_id``/``eos_id``/``decoder_start_id`` (start = pad);
                                   Marian has no BOS: ``bos_id = pad_id``; ``unk_id = 1``
``max_position_embeddings``        ``max_positions``
=================================  ===========================================

Marian's token ids are kept as they are (so they are *not* mt's 0..3 = pad, unk, bos,
eos convention): use the imported model with Marian's own tokenizer. ``transformers`` is
needed only here (an optional dependency: ``pip install mt[test]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mt.config import ModelConfig
from mt.model import Transformer

ACTIVATIONS = {"swish": "swish", "silu": "swish", "gelu": "gelu", "relu": "relu"}


def marian_config(hf_cfg: Any) -> ModelConfig:
    """The :class:`ModelConfig` equivalent to a HF ``MarianConfig``."""
    c = hf_cfg
    if (c.encoder_attention_heads, c.encoder_ffn_dim) != (c.decoder_attention_heads, c.decoder_ffn_dim):
        raise ValueError("mt needs equal encoder/decoder heads and ffn sizes")
    if c.activation_function not in ACTIVATIONS:
        raise ValueError(f"unsupported Marian activation {c.activation_function!r}")
    if getattr(c, "normalize_before", False) or getattr(c, "add_final_layer_norm", False):
        raise ValueError("only post-norm Marian models (the default) are supported")
    return ModelConfig(
        preset=None,
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        n_heads=c.encoder_attention_heads,
        enc_layers=c.encoder_layers,
        dec_layers=c.decoder_layers,
        ffn_dim=c.encoder_ffn_dim,
        dropout=0.0,
        activation=ACTIVATIONS[c.activation_function],
        norm="post",
        positions="sinusoidal",
        max_positions=c.max_position_embeddings,
        scale_embedding=bool(c.scale_embedding),
        tie_output=True,
        share_embeddings=bool(getattr(c, "share_encoder_decoder_embeddings", True)),
        layernorm_embedding=False,
        final_logits_bias=True,
        pad_id=c.pad_token_id,
        unk_id=1,
        bos_id=c.pad_token_id,
        eos_id=c.eos_token_id,
        decoder_start_id=c.decoder_start_token_id,
    )


def _state_dict(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename and fuse HF Marian weights into mt's ``Transformer`` names."""
    s = {k.removeprefix("model."): v for k, v in hf_state.items()}
    out: dict[str, torch.Tensor] = {
        "src_embed.weight": s["encoder.embed_tokens.weight"],
        "tgt_embed.weight": s["decoder.embed_tokens.weight"],  # the same tensor when shared
    }
    out["final_logits_bias"] = s["final_logits_bias"].reshape(-1)

    def fused(prefix: str, parts: str) -> dict[str, torch.Tensor]:
        return {
            "weight": torch.cat([s[f"{prefix}.{p}_proj.weight"] for p in parts]),
            "bias": torch.cat([s[f"{prefix}.{p}_proj.bias"] for p in parts]),
        }

    def copy(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = s[f"{src}.weight"]
        out[f"{dst}.bias"] = s[f"{src}.bias"]

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


def import_marian(hf_model_or_dir: Any) -> Transformer:
    """A ``MarianMTModel`` (or a local directory written by its ``save_pretrained``) as an
    eval-mode fp32 :class:`Transformer` computing the same function."""
    if isinstance(hf_model_or_dir, (str, Path)):
        from transformers import MarianMTModel  # optional dependency, only for importing

        hf = MarianMTModel.from_pretrained(str(hf_model_or_dir), local_files_only=True)
    else:
        hf = hf_model_or_dir
    cfg = marian_config(hf.config)
    hf_state = hf.state_dict()
    lm_head = hf_state.get("lm_head.weight")
    dec_embed = hf_state.get("model.decoder.embed_tokens.weight")
    if lm_head is not None and dec_embed is not None and not torch.equal(lm_head, dec_embed):
        raise ValueError("untied Marian LM heads are not supported (tie_output)")
    model = Transformer(cfg)
    model.load_state_dict({k: v.float() for k, v in _state_dict(hf_state, cfg).items()}, strict=True)
    return model.eval()
