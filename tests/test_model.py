"""Transformer: incremental decoding equals the full pass, masks, presets, Marian layout."""

import pytest
import torch

from mt.config import ConfigError, ModelConfig, from_dict
from mt.decode.shapes import PaddingRule, keep_sentences
from mt.decoder_state import CACHE_CHUNK
from mt.model import Transformer, sinusoidal_table


def _model(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(preset="tiny", vocab_size=40, **kw)).eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 40, (3, 7), generator=g)
    src[1, 4:] = 0  # padding
    tgt = torch.randint(4, 40, (3, 6), generator=g)
    tgt[:, 0] = 2
    return src, tgt


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_step_by_step_equals_full_pass(norm, positions):
    model = _model(norm=norm, positions=positions)
    src, tgt = _batch()
    with torch.no_grad():
        full = model(src, tgt)
        state = model.start_state(model.encode(src), beam=1)
        steps = torch.stack([model.decode_step(tgt[:, i], state) for i in range(tgt.shape[1])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_beam_rows_share_cross_attention_without_copies():
    model = _model()
    src, tgt = _batch()
    with torch.no_grad():
        full = model(src, tgt)
        state = model.start_state(model.encode(src), beam=3)
        rows = tgt.repeat_interleave(3, 0)
        steps = torch.stack([model.decode_step(rows[:, i], state) for i in range(tgt.shape[1])], 1)
    assert state.layers[0].cross_k.shape[0] == 3  # one copy per sentence, not per beam
    torch.testing.assert_close(steps, full.repeat_interleave(3, 0), atol=1e-5, rtol=1e-5)


def test_select_sentences_and_reorder_follow_rows():
    model = _model()
    src, tgt = _batch()
    with torch.no_grad():
        full = model(src, tgt)
        state = model.start_state(model.encode(src), beam=2)
        rows = tgt.repeat_interleave(2, 0)
        model.decode_step(rows[:, 0], state)
        # swap the two beams of every sentence, then drop sentence 1
        state.reorder(torch.tensor([1, 0, 3, 2, 5, 4]))
        state.select_sentences(torch.tensor([0, 2]))
        keep = rows[[0, 1, 4, 5]]
        out = torch.stack([model.decode_step(keep[:, i], state) for i in range(1, tgt.shape[1])], 1)
    torch.testing.assert_close(out, full[[0, 0, 2, 2], 1:], atol=1e-5, rtol=1e-5)


def test_cache_follows_rows_through_growth_reorder_and_select():
    """The preallocated KV cache past one capacity chunk, through every reorder path (full
    gather, copying the few rows that change, identity) and select_sentences with rows."""
    model = _model()
    src, _ = _batch()  # 3 sentences
    beam, steps = 2, CACHE_CHUNK + 8
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(4, 40, (3 * beam, steps), generator=g)
    tokens[:, 0] = 2
    moves = {
        5: torch.tensor([1, 0, 3, 2, 5, 4]),  # every row moves: one gather
        12: torch.tensor([0, 0, 2, 3, 4, 5]),  # one row moves: copy_rows
        20: torch.arange(6),  # nothing moves
    }
    with torch.no_grad():
        state = model.start_state(model.encode(src), beam=beam)
        sent, hist = torch.arange(3), tokens[:, :0]
        for t in range(steps):
            if t in moves:
                state.reorder(moves[t])
                hist = hist[moves[t]]
            if t == CACHE_CHUNK - 2:  # drop sentence 1 and move rows within the kept ones
                keep, rows = torch.tensor([0, 2]), torch.tensor([1, 1, 4, 5])
                state.select_sentences(keep, rows=rows)
                sent, hist = sent[keep], hist[rows]
            step_tokens = tokens[: hist.shape[0], t]
            hist = torch.cat([hist, step_tokens[:, None]], dim=1)
            logits = model.decode_step(step_tokens, state)
        full = model(src[sent].repeat_interleave(beam, 0), hist)[:, -1]
    assert state.layers[0].kv.shape[3] == 2 * CACHE_CHUNK  # grew once
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)


def test_dropping_sentences_moves_only_the_tail_into_the_holes():
    """keep_sentences fills a dropped sentence's place from the end of the batch; the caches
    then copy just those rows (cross-attention in place, self-attention by copy_rows) and
    decoding goes on exactly as for a fresh batch of the kept sentences."""
    model = _model()
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, 40, (4, 6), generator=g)
    beam, steps = 2, 6
    tokens = torch.randint(4, 40, (4 * beam, steps), generator=g)
    tokens[:, 0] = 2
    keep = keep_sentences(torch.tensor([True, False, True, True]), beam, PaddingRule(rows=1))
    assert keep.tolist() == [0, 3, 2]  # sentence 3 takes sentence 1's place; 0 and 2 stay
    rows = (keep[:, None] * beam + torch.arange(beam)).view(-1)
    with torch.no_grad():
        state = model.start_state(model.encode(src), beam=beam)
        cross_k = state.layers[0].cross_k
        for t in range(3):
            model.decode_step(tokens[:, t], state)
        kv = state.layers[0].kv
        state.select_sentences(keep)
        # both compacted in place (a gather would have swapped in the spare buffer)
        assert state.layers[0].cross_k.data_ptr() == cross_k.data_ptr() and state.layers[0].kv is kv
        assert state.layers[0].rows == 3 * beam
        for t in range(3, steps):
            logits = model.decode_step(tokens[rows, t], state)
        full = model(src[keep].repeat_interleave(beam, 0), tokens[rows])[:, -1]
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_encoder_states():
    model = _model()
    src = torch.tensor([[5, 6, 7, 3]])
    padded = torch.tensor([[5, 6, 7, 3, 0, 0]])
    with torch.no_grad():
        a = model.encode(src).memory
        b = model.encode(padded).memory[:, :4]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = _model()
    src, tgt = _batch()
    changed = tgt.clone()
    changed[:, -1] = 7
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])


def test_weight_tying_and_sharing():
    model = _model()
    assert model.src_embed.weight is model.tgt_embed.weight
    untied = _model(share_embeddings=False, tie_output=False)
    assert untied.src_embed.weight is not untied.tgt_embed.weight
    assert untied.num_parameters() > model.num_parameters()


def test_sinusoidal_marian_layout():
    table = sinusoidal_table(10, 8)
    assert torch.allclose(table[0, :4], torch.zeros(4))  # sin(0)
    assert torch.allclose(table[0, 4:], torch.ones(4))  # cos(0)
    assert torch.isclose(table[3, 0], torch.sin(torch.tensor(3.0)))


def test_too_long_input_is_a_clear_error():
    model = _model(max_positions=8)
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(torch.full((1, 9), 5))


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"preset": "small", "n_heads": 3}, "n_heads"),
        ({"preset": "huge"}, "preset"),
        ({"preset": "small", "dropout": 1.5}, "dropout"),
        ({"preset": "small", "d_model": "wide"}, "d_model"),
        ({"preset": "small", "heads": 4}, "heads"),
    ],
)
def test_bad_model_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(ModelConfig, bad, "model")
