"""The MarianMT weight conversion (``mt.marian.convert_model``): a randomly initialised small
MarianMT (built locally, nothing downloaded) gives the same logits and the same greedy tokens
in mt as in HF's generate. The whole directory import (``mt import marian``: tokenizer,
vocabulary, model directory) is tested in test_marian_import.py."""

import pytest
import torch

from mt.config import DecodeOptions
from mt.decode.search import greedy_search
from _decode_support import plain

transformers = pytest.importorskip("transformers")

PAD, EOS, VOCAB = 99, 0, 100


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    cfg = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, activation_function="swish",
        scale_embedding=True, init_std=0.15, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():  # non-zero biases and a likelier EOS, so both end conditions occur
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, EOS] += 2.0
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("marian") / "hf"
    model.save_pretrained(path)
    return path


def _sources():
    g = torch.Generator().manual_seed(3)
    lens = torch.randint(2, 20, (12,), generator=g).tolist()
    ids = [torch.randint(2, PAD, (n,), generator=g).tolist() for n in lens]
    src = torch.full((len(ids), max(lens) + 1), PAD)
    for i, x in enumerate(ids):
        src[i, : len(x) + 1] = torch.tensor(x + [EOS])
    return src


def test_import_logits_match(hf_dir):
    from mt.marian import convert_model

    hf = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    ours = convert_model(hf)
    assert ours.cfg.norm == "post" and ours.cfg.activation == "swish" and ours.decoder_start_id == PAD
    src = _sources()
    tgt_in = torch.cat([torch.full((src.shape[0], 1), PAD), torch.randint(1, PAD, (src.shape[0], 7))], dim=1)
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=src.ne(PAD), decoder_input_ids=tgt_in).logits
        got = ours(src, tgt_in)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()


def test_greedy_matches_hf_generate(hf_dir):
    from mt.marian import convert_model

    hf = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    ours = convert_model(hf)
    src = _sources()
    n_new = 25
    with torch.no_grad():
        ref = hf.generate(
            input_ids=src, attention_mask=src.ne(PAD), num_beams=1, do_sample=False, max_new_tokens=n_new,
            min_length=0, bad_words_ids=[[PAD]], forced_eos_token_id=EOS, decoder_start_token_id=PAD,
            eos_token_id=EOS, pad_token_id=PAD, no_repeat_ngram_size=0, repetition_penalty=1.0,
        )  # fmt: skip
    # HF forces EOS as the n_new-th new token; mt forces it after max_len tokens
    opts = DecodeOptions(beam=1, min_len=0, max_len_a=0.0, max_len_b=n_new - 1)
    hyps = greedy_search(plain(ours), src, opts)
    ended_early = 0
    for row, h in zip(ref.tolist(), hyps):
        toks = row[1:]  # drop the decoder start
        toks = toks[: toks.index(EOS)] if EOS in toks else toks
        assert h[0].tokens == toks
        ended_early += len(toks) < n_new - 1
    assert 0 < ended_early < len(hyps)  # both ways of ending were exercised
