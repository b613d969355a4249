"""Decode speed of mt and the peer, OpenNMT-py 3.0.4, measured in the same run on the same weights.

The VM this project is measured on drifts ±20% in speed between sessions (bench/results.md),
so a peer number measured on another day cannot give a trustworthy speed ratio. This script
converts an mt model directory into an OpenNMT-py checkpoint, checks that the conversion is
exact (logits and greedy outputs agree), then times both systems on the same test set,
alternating them for ``--rounds`` rounds, and prints a markdown table with BLEU, chrF,
sentences/s per round and the mt/peer ratio per mode.

Install the peer outside the project venv (nothing there changes; ``torch`` is the venv's)::

    echo "torch==2.13.0" > /tmp/torch-constraint.txt    # the venv's torch: pip must not touch it
    export PIP_CONSTRAINT=/tmp/torch-constraint.txt
    .venv/bin/pip install --no-deps --target .bench-deps/onmt \\
        OpenNMT-py==3.0.4 pyonmttok==1.38.1 configargparse==1.9.0 rapidfuzz==3.14.6

(``.bench-deps/`` is git-ignored; local wheels of OpenNMT-py and pyonmttok may be named
instead of the first two requirements). Only what OpenNMT-py's
translation path imports is installed: ``configargparse`` (its option parser), ``pyonmttok``
(its vocabulary class) and ``rapidfuzz`` (imported by its transforms registry). Its other
requirements are either already in the venv (numpy, PyYAML, sacrebleu; ``ctranslate2``, whose
import in ``onmt.utils.loss`` is optional) or used only for training / serving (tensorboard,
flask, waitress).

Run (a few minutes on the 2-core reference VM; run nothing else meanwhile)::

    .venv/bin/python bench/peer_onmt.py --threads 2 --rounds 2
    .venv/bin/python bench/peer_onmt.py --mt-args= --mt-args=--int8 --mt-args=--shortlist

What each side does (model loading is never timed):

* peer: ``onmt_translate``'s code path (its option parser, ``build_translator``, its dynamic
  inference iterator and ``Translator._translate``; 3.0.4 has no public ``translate`` method)
  on the SentencePiece pieces of the source, ``-batch_size 32 -batch_type sents -beam_size B
  -n_best 1`` and its defaults otherwise (length penalty ``avg`` with alpha 1, max length 250,
  min length 0; it stops a sentence once its top hypothesis has ended *and* it has
  ``beam`` finished hypotheses, so it runs at least as many steps as mt's fairseq rule, but
  an ended hypothesis takes its beam slot with it). Greedy is
  ``-beam_size 1``, which 3.0.4 runs through its beam search. It reads the pieces from a file,
  as ``onmt_translate`` does; the subword encoding is not in its time.
* mt: what ``mt evaluate --threads 2 --max-tokens 1024 --beam B`` does: ``Translator.load``
  (the model directory's stored decoding defaults with the flags on top) and
  ``Translator.translate`` on the raw sentences (normalisation and SentencePiece included in
  its time; the script prints how long that part takes). ``--mt-args`` adds decoding flags of
  ``mt evaluate`` (e.g. ``--shortlist``, ``--int8``); each value is one variant,
  timed in the same rounds.

Both run in this one process with the same settings: ``torch.set_num_threads(--threads)``
and mt's malloc tuning (``mt.runtime.tune_malloc``, as the ``mt`` CLI applies it; set
``MT_NO_MALLOC_TUNING=1`` to leave glibc's defaults). mt flushes denormals to zero while it
decodes (``mt.runtime``); the peer runs as shipped: flush-to-zero did not make it faster on
this model (beam 5, 2 threads, alternating: 56-61 sent/s with it, 65-67 without).

The reference VM is shared: while another process (a test run) took about one of the two
cores, the peer's beam 5 ran 3-6x slower (its two OpenMP threads wait for each other at every
parallel region). Each timed run therefore records how much CPU other processes used
meanwhile, and the script warns about runs above ``--max-others``.

How the weights are converted (``convert``):

* vocabulary: OpenNMT-py's specials are named ``<blank> <unk> <s> </s>``; the checkpoint's
  vocabulary is the SentencePiece pieces in mt's id order with ids 0..3 renamed to those
  (mt: pad 0, unk 1, bos 2, eos 3), so no embedding row moves and the peer's pad/bos/eos
  ids equal mt's;
* the source: mt appends EOS to every source, OpenNMT-py appends nothing, so the peer's input
  lines end in ``</s>``; both decoders start from BOS;
* positions: mt's sinusoidal table has sin in the first half of the dimensions and cos in
  the second (same frequencies ``10000 ** (-2i / d)``), the peer's interleaves them. The
  whole residual stream is permuted (embedding columns; input columns of every layer that
  reads it; output rows of every layer that writes it; LayerNorm parameters), which is exact:
  attention heads live in the projected spaces, which are not permuted;
* ``add_qkvbias`` (mt's projections all have biases), the generator tied to the shared
  embeddings (its bias zero: mt has none), pre-norm with final encoder/decoder norms,
  ``sqrt(d_model)`` embedding scale (the peer always applies it), ReLU/GELU FFN;
* LayerNorm eps: the peer hard-codes 1e-6, mt uses torch's 1e-5; the loaded peer model's
  LayerNorms are set to mt's eps.

This is a benchmark script, not part of the package or its tests.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/peer_onmt.py` without installing mt
    sys.path.insert(0, str(REPO))

from mt.config import ModelConfig  # noqa: E402
from mt.data.batching import make_source  # noqa: E402
from mt.data.fetch import resolve_data_dir  # noqa: E402
from mt.data.text import TextPipeline  # noqa: E402
from mt.decode.options import DecodeOptions, from_args  # noqa: E402
from mt.decode.translator import Translator  # noqa: E402
from mt.evaluate import corpus_scores  # noqa: E402
from mt.model import Attention, FeedForward, Transformer, sinusoidal_table  # noqa: E402
from mt.modelio import load_model, stored_decode_options  # noqa: E402
from mt.runtime import tune_malloc  # noqa: E402

# OpenNMT-py's names for mt's ids 0..3 (pad, unk, bos, eos); onmt.constants.DefaultTokens
ONMT_SPECIALS = ("<blank>", "<unk>", "<s>", "</s>")
PEER = "OpenNMT-py 3.0.4"
WARMUP = 64  # sentences each system translates untimed in each mode before round 1


# --------------------------------------------------------------------------- conversion


def check_convertible(cfg: ModelConfig) -> None:
    """Raise if ``cfg`` uses something OpenNMT-py 3.0.4's transformer cannot express."""
    problems = []
    if cfg.norm != "pre":
        problems.append("norm must be 'pre' (3.0.4's transformer is pre-norm only)")
    if cfg.positions != "sinusoidal":
        problems.append("positions must be 'sinusoidal'")
    if not cfg.scale_embedding:
        problems.append("scale_embedding must be true (the peer always scales by sqrt(d_model))")
    if not (cfg.tie_output and cfg.share_embeddings):
        problems.append("tie_output and share_embeddings must be true")
    if cfg.layernorm_embedding or cfg.final_logits_bias:
        problems.append("layernorm_embedding / final_logits_bias are not supported")
    if cfg.activation not in ("relu", "gelu"):
        problems.append(f"activation {cfg.activation!r} (the peer has relu and gelu)")
    if cfg.decoder_start_id not in (None, cfg.bos_id):
        problems.append("the decoder must start from BOS")
    if (cfg.pad_id, cfg.unk_id, cfg.bos_id, cfg.eos_id) != (0, 1, 2, 3):
        problems.append("specials must be pad 0, unk 1, bos 2, eos 3")
    if problems:
        raise SystemExit("cannot convert this model to OpenNMT-py: " + "; ".join(problems))


def interleave_permutation(dim: int) -> Tensor:
    """``perm`` with ``peer_x = mt_x[..., perm]``: the peer's dimension ``2i`` holds
    ``sin(pos * f_i)`` (mt's dimension ``i``), ``2i + 1`` holds ``cos(pos * f_i)`` (mt's
    ``dim/2 + i``)."""
    half = dim // 2
    perm = torch.empty(dim, dtype=torch.long)
    perm[0::2] = torch.arange(half)
    perm[1::2] = torch.arange(half) + half
    return perm


def onmt_vocab(text: TextPipeline) -> list[str]:
    """The checkpoint vocabulary: SentencePiece pieces in mt's id order, specials renamed."""
    if not text.joint:
        raise SystemExit("only a joint SentencePiece vocabulary is supported (share_embeddings)")
    pieces = [text.id_to_piece(i) for i in range(text.vocab_size)]
    pieces[: len(ONMT_SPECIALS)] = ONMT_SPECIALS
    if len(set(pieces)) != len(pieces):
        raise SystemExit("the renamed vocabulary has duplicate pieces")
    return pieces


def onmt_model_opt(cfg: ModelConfig) -> argparse.Namespace:
    """The checkpoint's ``opt``: OpenNMT-py's own defaults for the model and training
    options (what ``build_base_model`` reads), with mt's architecture filled in."""
    import onmt.opts as opts
    from onmt.utils.parse import ArgumentParser

    opt = ArgumentParser.defaults(opts.model_opts, opts._add_train_general_opts)
    opt.model_task = "seq2seq"
    opt.encoder_type = opt.decoder_type = "transformer"
    opt.enc_layers, opt.dec_layers = cfg.enc_layers, cfg.dec_layers
    opt.hidden_size = opt.enc_hid_size = opt.dec_hid_size = cfg.d_model
    opt.word_vec_size = opt.src_word_vec_size = opt.tgt_word_vec_size = cfg.d_model
    opt.heads = cfg.n_heads
    opt.transformer_ff = cfg.ffn_dim
    opt.pos_ffn_activation_fn = cfg.activation
    opt.position_encoding = True
    opt.position_encoding_type = "SinusoidalInterleaved"  # the frequencies mt uses (checked)
    opt.self_attn_type = "scaled-dot"
    opt.max_relative_positions = 0
    opt.add_qkvbias = True  # biases on q/k/v and the output projection, as mt has
    opt.share_vocab = opt.share_embeddings = opt.share_decoder_embeddings = True
    opt.copy_attn = False
    opt.dropout = [cfg.dropout]  # inference runs in eval mode: dropout values do not matter
    opt.attention_dropout = [cfg.attn_dropout]
    opt.model_dtype = "fp32"
    return opt


def convert_state(model: Transformer, perm: Tensor) -> dict[str, Tensor]:
    """mt's weights under the peer's parameter names, residual stream permuted by ``perm``."""
    sd: dict[str, Tensor] = {}

    def reads_residual(name: str, weight: Tensor, bias: Tensor) -> None:
        sd[f"{name}.weight"] = weight[:, perm]
        sd[f"{name}.bias"] = bias.clone()

    def writes_residual(name: str, layer: nn.Linear) -> None:
        sd[f"{name}.weight"] = layer.weight[perm, :]
        sd[f"{name}.bias"] = layer.bias[perm]

    def norm(name: str, layer: nn.LayerNorm) -> None:
        sd[f"{name}.weight"] = layer.weight[perm]
        sd[f"{name}.bias"] = layer.bias[perm]

    def ffn(prefix: str, block: FeedForward) -> None:
        reads_residual(f"{prefix}.w_1", block.fc1.weight, block.fc1.bias)
        writes_residual(f"{prefix}.w_2", block.fc2)

    def self_attention(prefix: str, attn: Attention) -> None:
        # mt's fused projection computes [q | k | v] along its output dimension
        weights, biases = attn.qkv_proj.weight.chunk(3, 0), attn.qkv_proj.bias.chunk(3, 0)
        for part, w, b in zip(("query", "keys", "values"), weights, biases):
            reads_residual(f"{prefix}.linear_{part}", w, b)
        writes_residual(f"{prefix}.final_linear", attn.out_proj)

    emb = model.src_embed.weight[:, perm]
    sd["encoder.embeddings.make_embedding.emb_luts.0.weight"] = emb
    sd["decoder.embeddings.make_embedding.emb_luts.0.weight"] = emb
    for i, layer in enumerate(model.encoder_layers):
        p = f"encoder.transformer.{i}"
        norm(f"{p}.layer_norm", layer.attn_block.norm)
        self_attention(f"{p}.self_attn", layer.self_attn)
        norm(f"{p}.feed_forward.layer_norm", layer.ffn_block.norm)
        ffn(f"{p}.feed_forward", layer.ffn)
    norm("encoder.layer_norm", model.encoder_norm)
    for i, layer in enumerate(model.decoder_layers):
        p = f"decoder.transformer_layers.{i}"
        norm(f"{p}.layer_norm_1", layer.self_block.norm)
        self_attention(f"{p}.self_attn", layer.self_attn)
        norm(f"{p}.layer_norm_2", layer.cross_block.norm)
        cross = layer.cross_attn
        reads_residual(f"{p}.context_attn.linear_query", cross.q_proj.weight, cross.q_proj.bias)
        # keys and values read the encoder output, which lives in the same (permuted) space
        for part, w, b in zip(("keys", "values"), cross.kv_proj.weight.chunk(2, 0), cross.kv_proj.bias.chunk(2, 0)):
            reads_residual(f"{p}.context_attn.linear_{part}", w, b)
        writes_residual(f"{p}.context_attn.final_linear", cross.out_proj)
        norm(f"{p}.feed_forward.layer_norm", layer.ffn_block.norm)
        ffn(f"{p}.feed_forward", layer.ffn)
    norm("decoder.layer_norm", model.decoder_norm)
    return {k: v.detach().float().contiguous().clone() for k, v in sd.items()}


def convert(model: Transformer, text: TextPipeline, path: Path) -> None:
    """Write an OpenNMT-py 3.0.4 checkpoint of ``model`` to ``path``.

    The peer's own (freshly built) model supplies the list of parameter names and shapes, so
    a missing or misnamed tensor is an error here rather than a silently random weight, and
    its own positional-encoding buffers (whose presence also keeps 3.0.4's loader from
    switching to its "SinusoidalConcat" layout, see ``load_test_model``).
    """
    from onmt.inputters.inputter import dict_to_vocabs, vocabs_to_dict
    from onmt.model_builder import build_base_model

    cfg = model.cfg
    check_convertible(cfg)
    perm = interleave_permutation(cfg.d_model)
    opt = onmt_model_opt(cfg)
    vocabs = dict_to_vocabs({"src": onmt_vocab(text), "tgt": onmt_vocab(text), "data_task": "seq2seq"})
    for name, want in zip(ONMT_SPECIALS, (cfg.pad_id, cfg.unk_id, cfg.bos_id, cfg.eos_id)):
        if vocabs["tgt"][name] != want:
            raise SystemExit(f"peer vocabulary: {name} has id {vocabs['tgt'][name]}, mt's is {want}")

    skeleton = build_base_model(opt, vocabs, gpu=False)
    reference = {k: v for k, v in skeleton.state_dict().items() if not k.startswith("generator.")}
    state = convert_state(model, perm)
    for k, v in reference.items():
        if k.endswith(".pe.pe"):
            state[k] = v.clone()  # the peer's own sinusoids
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    wrong = [k for k in reference if k in state and state[k].shape != reference[k].shape]
    if missing or extra or wrong:
        raise SystemExit(f"conversion does not fit the peer's model: missing {missing[:4]}, "
                         f"extra {extra[:4]}, wrong shapes {wrong[:4]}")

    # mt's table under the permutation must be the peer's table: same layout, same frequencies
    n = 256
    theirs = state["encoder.embeddings.make_embedding.pe.pe"][:n, 0]
    ours = sinusoidal_table(n, cfg.d_model)[:, perm]
    if not torch.allclose(theirs, ours, atol=1e-4):
        raise SystemExit(f"positional encodings differ (max {float((theirs - ours).abs().max()):.2e})")

    generator = {"weight": state["decoder.embeddings.make_embedding.emb_luts.0.weight"],
                 "bias": torch.zeros(cfg.vocab_size)}  # fmt: skip
    checkpoint = {"model": state, "generator": generator, "vocab": vocabs_to_dict(vocabs), "opt": opt}
    torch.save(checkpoint, path)


def allow_namespace_unpickling() -> None:
    """3.0.4's loader calls ``torch.load`` without ``weights_only``; torch >= 2.6 then refuses
    the ``argparse.Namespace`` a checkpoint's ``opt`` is. Allow exactly that class."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace])


# --------------------------------------------------------------------------- the two systems


def layer_norm_eps(model: Transformer) -> float:
    """mt's LayerNorm eps (one value for the whole model)."""
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) != 1:
        raise SystemExit(f"mt model has LayerNorms with different eps {sorted(eps)}")
    return eps.pop()


class Peer:
    """OpenNMT-py's ``onmt_translate`` for one beam size, split into loading (``__init__``)
    and translating (:meth:`run`), so that only the latter is timed."""

    def __init__(self, checkpoint: Path, src_file: Path, beam: int, batch_size: int, eps: float) -> None:
        import onmt.opts as opts
        from onmt.translate.translator import build_translator
        from onmt.utils.logging import init_logger
        from onmt.utils.parse import ArgumentParser

        parser = ArgumentParser(description="translate.py")
        opts.config_opts(parser)
        opts.translate_opts(parser, dynamic=True)
        argv = ["-model", str(checkpoint), "-src", str(src_file), "-output", os.devnull, "-batch_size", str(batch_size),
                "-batch_type", "sents", "-beam_size", str(beam), "-n_best", "1"]  # fmt: skip
        opt = parser.parse_args(argv)
        # the validation steps of onmt.bin.translate.translate
        ArgumentParser.validate_translate_opts(opt)
        ArgumentParser._get_all_transform_translate(opt)
        ArgumentParser._validate_transforms_opts(opt)
        ArgumentParser.validate_translate_opts_dynamic(opt)
        logger = init_logger(opt.log_file, log_level=30)  # warnings only
        self.opt = opt
        self.out = open(os.devnull, "w", encoding="utf-8")  # it writes every translation to a file
        self.translator = build_translator(opt, logger=logger, report_score=False, out_file=self.out)
        for module in self.translator.model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = eps  # the peer hard-codes 1e-6
        self.settings = {"beam_size": opt.beam_size, "batch_size": opt.batch_size, "batch_type": opt.batch_type,
                         "length_penalty": opt.length_penalty, "alpha": opt.alpha, "max_length": opt.max_length,
                         "min_length": opt.min_length}  # fmt: skip

    @property
    def model(self) -> nn.Module:
        return self.translator.model

    def run(self, src_file: Optional[Path] = None) -> list[str]:
        """Translate ``-src`` (or ``src_file``): the best hypothesis per line, space-separated pieces."""
        from onmt.constants import CorpusTask
        from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
        from onmt.inputters.inputter import IterOnDevice
        from onmt.transforms import TransformPipe, get_transforms_cls

        opt = self.opt if src_file is None else argparse.Namespace(**{**vars(self.opt), "src": str(src_file)})
        transforms_cls = get_transforms_cls(opt._all_transform)
        infer_iter = build_dynamic_dataset_iter(opt, transforms_cls, self.translator.vocabs, task=CorpusTask.INFER,
                                                copy=self.translator.copy_attn)  # fmt: skip
        transform = TransformPipe.build_from(
            [infer_iter.transforms[n] for n in opt.transforms if n in infer_iter.transforms]
        )
        infer_iter = IterOnDevice(infer_iter, opt.gpu)
        _, predictions = self.translator._translate(infer_iter, transform=transform)
        return [nbest[0] for nbest in predictions]


def mt_arg_parser() -> argparse.ArgumentParser:
    """``mt evaluate``'s decoding flags (the CLI's own definitions)."""
    from mt.cli import _add_decode_options

    parser = argparse.ArgumentParser(prog="--mt-args", add_help=False)
    _add_decode_options(parser)
    return parser


@dataclass
class MtVariant:
    """One mt configuration: ``label`` for the table, the parsed CLI flags, the loaded translator."""

    label: str
    args: argparse.Namespace
    translator: Translator

    @classmethod
    def load(cls, model_dir: str, extra: str, threads: int) -> "MtVariant":
        argv = ["--device", "cpu", "--threads", str(threads), "--max-tokens", "1024", *shlex.split(extra)]
        args = mt_arg_parser().parse_args(argv)
        # exactly mt evaluate's calls: the stored defaults, the flags on top
        opts = from_args(args, stored_decode_options(model_dir))
        translator = Translator.load(model_dir, opts, args.workers, args.threads)
        return cls(f"mt {extra}".strip(), args, translator)

    def options(self, beam: int) -> DecodeOptions:
        return self.translator.options.replace(beam=beam)

    def run(self, src: list[str], beam: int) -> list[list[int]]:
        return [hyps[0].tokens for hyps in self.translator.translate_batch(src, self.options(beam))]


# --------------------------------------------------------------------------- checks


@torch.no_grad()
def logit_difference(
    mt_model: Transformer, peer_model: nn.Module, src_ids: list[list[int]], tgt_ids: list[list[int]]
) -> float:
    """Largest |mt logit - peer logit| over the real target positions of a teacher-forced batch."""
    cfg = mt_model.cfg
    src = make_source(src_ids, cfg.pad_id, cfg.eos_id)
    tgt_in = make_source([[cfg.bos_id, *t] for t in tgt_ids], cfg.pad_id, cfg.eos_id)[:, :-1]  # BOS + t, no EOS
    ours = mt_model(src, tgt_in)
    src_len = src.ne(cfg.pad_id).sum(1)
    enc_out, _, src_len = peer_model.encoder(src[:, :, None], src_len)
    peer_model.decoder.init_state(src[:, :, None], enc_out, None)
    dec_out, _ = peer_model.decoder(tgt_in[:, :, None], enc_out, src_len=src_len)
    theirs = peer_model.generator(dec_out)
    real = tgt_in.ne(cfg.pad_id)
    return float((ours - theirs).abs()[real].max())


# --------------------------------------------------------------------------- timing


@dataclass
class Record:
    """One system in one mode: seconds per round and the first round's output."""

    system: str
    beam: int
    seconds: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # other processes' CPU share per round
    tokens: Optional[list[list[int]]] = None
    changed: bool = False  # an output differed between rounds

    def add(self, seconds: float, others: float, tokens: list[list[int]]) -> None:
        self.seconds.append(seconds)
        self.others.append(others)
        if self.tokens is None:
            self.tokens = tokens
        elif tokens != self.tokens:
            self.changed = True


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of this machine have been busy since boot (``/proc/stat``;
    steal included: time the hypervisor gave to someone else)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """``(seconds, others, fn(*args))``; ``others``: the share of the machine's CPUs that
    other processes used meanwhile. The reference VM is shared and has 2 cores, and the
    peer's OpenMP threads slow down many times over when someone else takes a core, so a
    run that was not alone is flagged rather than silently averaged in."""
    gc.collect()  # not inside anyone's time
    busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    others = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
    return seconds, max(0.0, others) / (seconds * (os.cpu_count() or 1)), out


def mode_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def markdown_table(records: list[Record], text: TextPipeline, refs: list[str], n_sent: int, rounds: int) -> str:
    rounds_head = [f"sent/s r{r + 1}" for r in range(rounds)]
    head = ["system", "mode", "BLEU", "chrF", *rounds_head, "sent/s mean", "mt/peer (per round)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    peer = {r.beam: r for r in records if r.system == PEER}
    for r in sorted(records, key=lambda r: (-r.beam, r.system != PEER)):
        scores = corpus_scores(text.decode_target(r.tokens), refs)
        speeds = [n_sent / s for s in r.seconds]
        ratio = ""
        if r.system != PEER and r.beam in peer:
            theirs = [n_sent / s for s in peer[r.beam].seconds]
            per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(speeds, theirs))
            ratio = f"{statistics.mean(speeds) / statistics.mean(theirs):.2f} ({per_round})"
        cells = [r.system + (" ⚠ output changed between rounds" if r.changed else ""), mode_name(r.beam),
                 f"{scores['bleu']:.2f}", f"{scores['chrf']:.2f}", *[f"{s:.1f}" for s in speeds],
                 f"{statistics.mean(speeds):.1f}", ratio]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "runs/multi30k_de_en_cpu45/model_avg"), help="mt model directory")
    data = resolve_data_dir() / "multi30k"
    p.add_argument("--src", default=str(data / "test2016.de"), help="source sentences (default: $MT_DATA_DIR/multi30k)")
    p.add_argument("--ref", default=str(data / "test2016.en"), help="reference translations (raw text)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both systems (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds; each system runs once per mode and round (2)")
    p.add_argument("--beams", default="5,1", help="beam sizes to time, 1 = greedy (default 5,1)")
    p.add_argument("--batch-size", type=int, default=32, help="the peer's -batch_size in sentences (default 32)")
    p.add_argument("--mt-args", action="append", default=None, metavar="FLAGS",
                   help="extra `mt evaluate` decoding flags for one mt variant, written with '=' (--mt-args=--int8, "
                   "--mt-args='--beam 4 --alpha 0.6'); repeatable; --mt-args= is the defaults (default: just that)")  # fmt: skip
    p.add_argument("--onmt-path", default=str(REPO / ".bench-deps/onmt"),
                   help="where the peer is installed (pip --target); put first on sys.path")
    p.add_argument("--keep-checkpoint", default=None, metavar="PATH",
                   help="write the converted peer checkpoint here (kept) instead of a temporary directory")
    p.add_argument("--max-others", type=float, default=0.05,
                   help="warn about runs during which other processes used more than this share of the CPUs (0.05)")
    p.add_argument("--min-agreement", type=float, default=0.97,
                   help="stop if fewer greedy outputs than this fraction agree (the conversion would be wrong)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if not Path(args.onmt_path, "onmt").is_dir():
        raise SystemExit(f"{args.onmt_path}: OpenNMT-py not installed there (see this script's docstring)")
    sys.path.insert(0, str(Path(args.onmt_path).resolve()))
    # 3.0.4 decorates its (unused here) CUDA autograd functions with an API newer torch deprecates
    warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.custom_(fwd|bwd)", category=FutureWarning)
    allow_namespace_unpickling()
    tune_malloc()  # as the mt CLI does; process-wide, so the peer runs with it too
    torch.set_num_threads(args.threads)
    beams = [int(b) for b in args.beams.split(",") if b.strip()]
    variants_args = args.mt_args if args.mt_args is not None else [""]

    with open(args.src, encoding="utf-8") as f:
        src = [line.rstrip("\n") for line in f]
    with open(args.ref, encoding="utf-8") as f:
        refs = [line.rstrip("\n") for line in f]
    if len(src) != len(refs):
        raise SystemExit(f"{args.src} has {len(src)} lines, {args.ref} has {len(refs)}")

    loaded = load_model(args.model)
    mt_model, text = loaded.model, loaded.text
    eps = layer_norm_eps(mt_model)
    src_ids = text.encode_source(src)  # the first call also builds the Moses normaliser
    t0 = time.perf_counter()
    text.encode_source(src)
    encode_s = time.perf_counter() - t0
    onmt_ids = {tok: i for i, tok in enumerate(onmt_vocab(text))}
    eos_piece = ONMT_SPECIALS[mt_model.cfg.eos_id]

    with tempfile.TemporaryDirectory(prefix="peer_onmt.") as tmp:
        ckpt = Path(args.keep_checkpoint) if args.keep_checkpoint else Path(tmp) / "model.pt"
        convert(mt_model, text, ckpt)
        print(f"converted {args.model} -> {ckpt} ({ckpt.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
        # the peer's input: mt's subwords as pieces, with the EOS mt appends to every source
        lines = [" ".join([*map(text.id_to_piece, ids), eos_piece]) + "\n" for ids in src_ids]
        src_file, warmup_file = Path(tmp) / "src.pieces", Path(tmp) / "warmup.pieces"
        src_file.write_text("".join(lines), encoding="utf-8")
        warmup_file.write_text("".join(lines[:WARMUP]), encoding="utf-8")

        def peer_tokens(lines: list[str]) -> list[list[int]]:
            return [[onmt_ids[p] for p in line.split()] for line in lines]

        peers = {b: Peer(ckpt, src_file, b, args.batch_size, eps) for b in beams}
        variants = [MtVariant.load(args.model, extra, args.threads) for extra in variants_args]
        torch.set_num_threads(args.threads)

        def run_peer(beam: int) -> list[list[int]]:
            torch.set_num_threads(args.threads)  # mt's workers restore it too; be explicit
            return peer_tokens(peers[beam].run())

        # ---- fidelity (untimed; also warms both systems up)
        any_peer = next(iter(peers.values()))
        diff = logit_difference(mt_model, any_peer.model, src_ids[:16], text.encode_target(refs[:16]))
        print(f"teacher-forced logits, 16 sentences: max |mt - peer| = {diff:.2e}", file=sys.stderr)
        greedy_peer = Peer(ckpt, src_file, 1, args.batch_size, eps) if 1 not in peers else peers[1]
        peer_greedy = peer_tokens(greedy_peer.run())
        # mt greedy with the peer's length limits (min 0, max_length steps) so only numerics can differ
        check = Translator.load(args.model, threads=args.threads, device="cpu", dtype="fp32")  # exact conversion: fp32
        # (DecodeOptions' defaults otherwise, not the model's stored ones: a stored no_repeat_ngram
        # or unk_penalty would change the search itself)
        limits = DecodeOptions(beam=1, min_len=greedy_peer.settings["min_length"], max_len_a=0.0,
                               max_len_b=greedy_peer.settings["max_length"], max_tokens=1024)  # fmt: skip
        mt_greedy = [h[0].tokens for h in check.translate_batch(src, limits)]
        same = sum(a == b for a, b in zip(mt_greedy, peer_greedy))
        print(f"greedy agreement (peer's length limits): {same}/{len(src)} identical token sequences", file=sys.stderr)
        if same < args.min_agreement * len(src):
            raise SystemExit("greedy outputs disagree: the conversion is wrong")
        for beam in beams:  # the first batches of each system and mode, untimed
            peers[beam].run(warmup_file)
            for v in variants:
                v.run(src[:WARMUP], beam)
        torch.set_num_threads(args.threads)

        # ---- timing: alternate the systems, reversing their order every other round
        records: dict[tuple[str, int], Record] = {}
        systems = [PEER, *[v.label for v in variants]]
        by_label = {v.label: v for v in variants}
        for r in range(args.rounds):
            order = systems if r % 2 == 0 else systems[::-1]
            for beam in beams:
                for name in order:
                    if name == PEER:
                        seconds, others, tokens = timed(run_peer, beam)
                    else:
                        seconds, others, tokens = timed(by_label[name].run, src, beam)
                    records.setdefault((name, beam), Record(name, beam)).add(seconds, others, tokens)
                    print(f"round {r + 1} {mode_name(beam):>7} {name:<24} {seconds:7.2f} s {len(src) / seconds:7.1f} sent/s"
                          f"  (other processes: {others:.0%} of the CPUs)", file=sys.stderr)  # fmt: skip

        for beam in beams:
            default = records.get((variants[0].label, beam))
            if default is not None and default.tokens is not None:
                agree = sum(a == b for a, b in zip(default.tokens, records[(PEER, beam)].tokens))
                print(f"{mode_name(beam)}: {agree}/{len(src)} outputs identical between {variants[0].label} and the peer "
                      "(each with its own defaults)", file=sys.stderr)  # fmt: skip

    settings = any_peer.settings
    print()
    print(f"{len(src)} sentences ({args.src}), {args.threads} threads, {args.rounds} rounds alternating; "
          f"peer: {PEER}, batch {settings['batch_size']} {settings['batch_type']}, length penalty "
          f"{settings['length_penalty']} alpha {settings['alpha']}, max length {settings['max_length']}, "
          f"mt: `mt evaluate --threads {args.threads} --max-tokens 1024` "
          f"defaults (its time includes normalisation + SentencePiece, {encode_s:.2f} s here).")  # fmt: skip
    print()
    print(markdown_table(list(records.values()), text, refs, len(src), args.rounds))
    print()
    print(f"greedy agreement with the peer's length limits: {same}/{len(src)}; "
          f"teacher-forced max |logit difference| {diff:.2e}")
    shared = [f"{r.system} {mode_name(r.beam)} round {i + 1} ({o:.0%})" for r in records.values()
              for i, o in enumerate(r.others) if o > args.max_others]  # fmt: skip
    if shared:
        print(f"WARNING: other processes used more than {args.max_others:.0%} of the CPUs during: " + "; ".join(shared)
              + ". Those times are not comparable; rerun when the machine is idle.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
