"""Pre- and post-processing hooks for OpenNMT-py 3.0.4's REST server (``onmt_server``) serving
an mt model converted by ``bench/peer_onmt.py``, so that the peer server sees exactly mt's
input: mt's normalisation and SentencePiece pieces, plus the EOS mt appends to every source.

``bench/peer_server.py`` names these functions in the server's ``conf.json``
(``"preprocess": ["onmt_server_hooks.encode"]``, ``"postprocess": [...decode]``); the server
imports this module by name, so ``bench/`` is on its ``PYTHONPATH``. ``MT_PEER_MODEL`` names
the mt model directory whose SentencePiece models are used.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from torch import nn


@functools.lru_cache(maxsize=1)
def _text() -> Any:
    from mt.data.text import TextPipeline

    return TextPipeline.load(os.environ["MT_PEER_MODEL"])


_EPS_SET: set[int] = set()  # id() of the peer models whose LayerNorm eps is mt's already


def _match_layer_norm_eps(server_model: Any) -> None:
    """The peer hard-codes LayerNorm eps 1e-6; the converted model was trained with mt's
    (``MT_PEER_EPS``), as ``bench/peer_onmt.py`` sets it after loading. Once per model."""
    model = server_model.translator.model
    if id(model) in _EPS_SET:
        return
    eps = float(os.environ["MT_PEER_EPS"])
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
    _EPS_SET.add(id(model))


def encode(sequence: dict[str, Any], server_model: Any) -> dict[str, Any]:
    """``sequence["seg"]``: raw sentences -> mt's pieces, space-separated, ending in ``</s>``."""
    _match_layer_norm_eps(server_model)
    text = _text()
    ids = text.encode_source(sequence["seg"])
    sequence["seg"] = [" ".join([*map(text.id_to_piece, row), "</s>"]) for row in ids]
    return sequence


def decode(sequence: dict[str, Any], server_model: Any) -> str:
    """The peer's pieces -> text, as mt detokenises (its SentencePiece model)."""
    text = _text()
    pieces = " ".join(sequence["seg"]).split()
    return text.decode_target([[text.piece_to_id(p) for p in pieces]])[0]
