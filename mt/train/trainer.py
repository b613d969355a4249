"""``mt train``: the training loop.

One optimizer update ("step") = ``update_freq`` token-budget batches on each of the
``world_size`` processes. Per update::

    batches ← next update_freq batches of this rank (TokenBatchSampler, resumable)
    N       ← target tokens of the whole update, summed over ranks
    for each batch: loss_sum = label-smoothed CE summed over tokens; backward(loss_sum / N)
    clip grad norm → AdamW → LR schedule

Normalising by the global token count (not per batch, not per rank) makes 2 ranks ×
``update_freq=1`` compute the same update as 1 rank × ``update_freq=2``.

Every ``valid_every`` updates: valid loss/perplexity and BLEU/chrF of greedy (or beam)
decoding of a valid subset with the real decoder; the best model (``best_metric``) is
written to ``run_dir/model_best``, early stopping after ``patience`` validations without
improvement. Every ``save_every`` updates a resumable checkpoint (``checkpoint.py``). At the
end ``run_dir/model_last``. Records go to ``run_dir/metrics.jsonl`` and
``run_dir/learning_curve.png``.

Exact resume: the checkpoint holds the model, optimizer, schedule, the sampler's position
and every RNG state, written after validation at that step; a resumed run replays the
uninterrupted one bit for bit on CPU (with a fixed thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from mt.config import ConfigError, ExperimentConfig, ModelConfig, to_dict
from mt.data.batching import Batch, CorpusMix, TokenBatchSampler, collate
from mt.data.binarize import IndexedDataset
from mt.data.prepare import valid_parts
from mt.data.sources import interleave_order
from mt.data.text import TextPipeline
from mt.fileio import exclusive_dir
from mt.model import Transformer
from mt.runtime import NO_NATIVE_BF16, PRECISION_PIN_ENV, bound_kernel_caches, heap_mib, native_bf16, pinned_precision, rss_mib, tune_malloc
from mt.train import checkpoint as ckpt
from mt.train.distributed import DistEnv, all_reduce_sum, barrier, broadcast_flag, cleanup, init_distributed
from mt.train.ema import WeightEMA
from mt.train.loss import label_smoothed_nll, perplexity, per_token
from mt.train.metrics import MetricsLog, hardware_peak_tflops, plot_learning_curves
from mt.train.schedule import LRSchedule

# more training pairs than this share longer than model.max_positions is a config mistake, not noise
MAX_SKIPPED_SHARE = 0.01


# --------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """The prepared data directory, opened (``CONTRACTS.md``: prepared data layout)."""

    text: TextPipeline
    train_src: IndexedDataset
    train_tgt: IndexedDataset
    valid_src: Optional[IndexedDataset]
    valid_tgt: Optional[IndexedDataset]
    valid_src_lines: list[str]  # raw valid text, for BLEU
    valid_ref_lines: list[str]
    mix: Optional[CorpusMix] = None  # several training corpora: examples of each per epoch
    valid_parts: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (name, pairs) of an interleaved valid set


def load_prepared(cfg: ExperimentConfig) -> PreparedData:
    """Open ``cfg.data_path``; a missing directory tells the user to run ``mt prepare``."""
    d = cfg.data_path
    hint = f"run `mt prepare {cfg.source_file or 'CONFIG'}` first"
    if not (d / "text.json").is_file():
        raise FileNotFoundError(f"{d}: prepared data not found (no text.json); {hint}")
    s, t = cfg.data.src_lang, cfg.data.tgt_lang
    if not (d / f"train.{s}.idx").is_file() or not (d / f"train.{t}.idx").is_file():
        raise FileNotFoundError(f"{d}: binarised training data train.{s}/train.{t} missing; {hint}")
    text = TextPipeline.load(d, num_threads=1)
    train_src, train_tgt = IndexedDataset(d / f"train.{s}"), IndexedDataset(d / f"train.{t}")
    if len(train_src) != len(train_tgt):
        raise ValueError(f"{d}: train.{s} has {len(train_src)} sentences but train.{t} has {len(train_tgt)}")
    valid_src = valid_tgt = None
    src_lines: list[str] = []
    ref_lines: list[str] = []
    if (d / f"valid.{s}.idx").is_file() and (d / f"valid.{t}.idx").is_file():
        valid_src, valid_tgt = IndexedDataset(d / f"valid.{s}"), IndexedDataset(d / f"valid.{t}")
        if len(valid_src) == 0:
            valid_src = valid_tgt = None
    if (d / f"valid.{s}.txt").is_file() and (d / f"valid.{t}.txt").is_file():
        src_lines = (d / f"valid.{s}.txt").read_text(encoding="utf-8").splitlines()
        ref_lines = (d / f"valid.{t}.txt").read_text(encoding="utf-8").splitlines()
    mix = CorpusMix.from_manifest(d)
    if mix is not None and mix.total != len(train_src):
        raise ValueError(f"{d}: manifest.json lists {mix.total} training pairs, train.{s} has {len(train_src)}; {hint}")
    return PreparedData(text, train_src, train_tgt, valid_src, valid_tgt, src_lines, ref_lines, mix, valid_parts(d))


class BatchStream:
    """Endless stream of this rank's collated batches across epochs.

    The sampler advances its position as it yields, so ``sampler.state_dict()`` at an
    update boundary is exactly where a resumed run must continue.
    """

    def __init__(self, sampler: TokenBatchSampler, src: IndexedDataset, tgt: IndexedDataset, model_cfg: ModelConfig, start_id: int) -> None:
        self.sampler, self.src, self.tgt = sampler, src, tgt
        self.pad, self.eos, self.start = model_cfg.pad_id, model_cfg.eos_id, start_id
        self._it: Optional[Iterator[np.ndarray]] = None

    @property
    def epochs_done(self) -> int:
        """Completed epochs (the last one counts as soon as its final batch was taken)."""
        s = self.sampler
        return s.epoch + (1 if s.position >= len(s.batches()) else 0)

    def next(self) -> Batch:
        for _ in range(2):
            if self._it is None:
                self._it = iter(self.sampler)
            idx = next(self._it, None)
            if idx is not None:
                return collate([self.src[i] for i in idx], [self.tgt[i] for i in idx], self.pad, self.start, self.eos)
            self._it = None  # epoch finished; the sampler moved to the next one
        raise RuntimeError("the batch sampler yielded an empty epoch for this rank (corpus too small?)")


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """Counters that go into the checkpoint's JSON next to sampler and schedule."""

    step: int = 0
    best: Optional[float] = None  # best value of train.best_metric
    best_step: int = 0
    bad_validations: int = 0  # since the last improvement (early stopping)
    last_valid_step: int = 0
    elapsed: float = 0.0  # seconds of wall clock used by all sessions of this run
    tokens: int = 0  # target tokens trained on (all ranks)
    stop_reason: Optional[str] = None


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric == "loss" else value > best


# --------------------------------------------------------------------------- setup helpers


def build_optimizer(model: nn.Module, tc, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not biases, LayerNorms). Uses the fused kernel
    where torch has one for the device (one pass over all parameters instead of ~10)."""
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps)
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu"), **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def resolve_model_config(cfg: ExperimentConfig, text: TextPipeline) -> ModelConfig:
    """The run's model config with ``vocab_size`` from SentencePiece, checked against data."""
    mc = cfg.model.resolved()
    if mc.vocab_size == 0:
        mc = dataclasses.replace(mc, vocab_size=text.vocab_size)
    elif mc.vocab_size < text.vocab_size:
        raise ConfigError(f"model.vocab_size: {mc.vocab_size} is smaller than the SentencePiece vocabulary ({text.vocab_size})")
    if mc.share_embeddings and not text.joint:
        raise ConfigError("model.share_embeddings needs a joint SentencePiece model (data.spm.joint: true)")
    return mc


def _check_lengths(sampler: TokenBatchSampler, mc: ModelConfig, where: Path, quiet: bool = False) -> None:
    """Refuse a corpus the model is too short for; a few overlong pairs (a stray JSON line in
    monolingual text, one giant subword sequence) are left out with a note instead."""
    n, skipped = len(sampler.src_sizes), sampler.skipped
    if skipped > MAX_SKIPPED_SHARE * n:
        raise ConfigError(
            f"model.max_positions: {skipped} of {n} training pairs in {where} are longer than max_positions "
            f"({mc.max_positions} tokens with EOS); raise it or lower data.clean.max_tokens"
        )
    if skipped and not quiet:
        longest = int(max(sampler.src_sizes.max(), sampler.tgt_sizes.max())) + 1
        print(f"mt train: leaving out {skipped} of {n} training pairs longer than model.max_positions="
              f"{mc.max_positions} tokens (the longest has {longest})", file=sys.stderr)  # fmt: skip


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _autocast(device: torch.device, bf16: bool) -> Iterator[None]:
    """bf16 autocast (or nothing). On CPU also routes attention to SDPA's "math" kernel:
    for the short sentences of NMT batches the CPU flash-attention kernel's bf16 backward
    is ~5x slower than plain matmul + softmax (measured: 94 vs 26 ms fwd+bwd for 150
    sentences x 8 heads x 20 tokens on one core)."""
    with contextlib.ExitStack() as stack:
        if device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        if bf16:
            stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        yield


def training_precision(requested: str, device: torch.device) -> tuple[bool, str]:
    """``train.precision`` as (bf16 autocast?, why). ``auto``: bf16 on CUDA and on a CPU with
    native bf16 matrix instructions (there bf16 training matched fp32 per update and ran ~1.8x
    faster: docs/ablations.md), fp32 on other CPUs, where bf16 is emulated and runs many times
    slower; ``$MT_DTYPE_AUTO`` pins it. An explicit ``bf16`` on such a CPU is kept, with a warning."""
    found = native_bf16() if device.type == "cpu" else []
    emulated = device.type == "cpu" and not found
    if requested != "auto":
        slow = f"; {NO_NATIVE_BF16}: bf16 is emulated and far slower than fp32, set train.precision to auto or fp32"
        return requested == "bf16", f"train.precision {requested}" + (slow if requested == "bf16" and emulated else "")
    pinned = pinned_precision()
    if pinned:
        return pinned == "bf16", f"auto: {pinned}, pinned by {PRECISION_PIN_ENV}"
    if device.type == "cpu":
        return (False, f"auto: fp32, {NO_NATIVE_BF16}") if emulated else (True, f"auto: bf16, native on this CPU ({found[0]})")
    return device.type == "cuda", f"auto: {'bf16' if device.type == 'cuda' else 'fp32'} on {device.type}"


def optimizer_update(
    model: nn.Module,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    n_tgt_global: float,
    label_smoothing: float,
    pad_id: int,
    device: torch.device,
    bf16: bool,
    clip_norm: float,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward/backward every batch, clip, AdamW step. ``net`` is ``model`` or its DDP /
    compiled wrapper. Returns device scalars ``(loss_sum, nll_sum, grad_norm)`` without a
    host sync (the caller decides when to read them).

    The loss of each batch is a token *sum*; it is scaled by ``world_size / n_tgt_global``
    because DDP averages gradients over ranks, so the result is the gradient of (all
    ranks' summed loss) / (all ranks' target tokens).
    """
    scale = world_size / n_tgt_global
    loss_sum = torch.zeros((), device=device)
    nll_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        batch = batch.to(device)
        defer_sync = world_size > 1 and i < len(batches) - 1  # all-reduce only after the last
        with net.no_sync() if defer_sync else contextlib.nullcontext():
            with _autocast(device, bf16):
                logits = net(batch.src, batch.tgt_in)  # (B, T, V)
            out = label_smoothed_nll(logits, batch.tgt_out, label_smoothing, pad_id, batch.n_tgt_tokens)
            (out.loss * scale).backward()
        loss_sum += out.loss.detach()
        nll_sum += out.nll
    if clip_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm, foreach=True).detach()
    else:
        grad_norm = torch.zeros((), device=device)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, nll_sum, grad_norm


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Owns the model, optimizer, data stream and run directory for one ``mt train``."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = False) -> None:
        self.cfg = cfg
        tc = self.tc = cfg.train
        self.env: DistEnv = init_distributed(tc.device)
        self.device = self.env.device
        if self.device.type == "cpu":
            tune_malloc()  # reuse freed activation memory instead of page-faulting it back
            bound_kernel_caches()  # before the first matmul: the caches fragment the heap
            if tc.threads:
                torch.set_num_threads(tc.threads)
        self.bf16, self.precision_reason = training_precision(tc.precision, self.device)
        self.metric_used = tc.best_metric  # until a validation falls back to loss (no BLEU available)
        self.run_dir = cfg.run_path
        self.data = load_prepared(cfg)
        self.model_cfg = resolve_model_config(cfg, self.data.text)

        existing = ckpt.latest_checkpoint(self.run_dir)
        if existing is not None and not resume:
            raise ConfigError(
                f"{self.run_dir}: already has checkpoints (latest {existing.name}); "
                "continue with `mt train --resume`, or choose a new run_dir"
            )
        if resume and existing is None:
            raise FileNotFoundError(f"{ckpt.checkpoint_dir(self.run_dir)}: no checkpoint to resume from")

        _seed_everything(tc.seed)  # same initial weights on every rank
        self.model = Transformer(self.model_cfg).to(self.device)
        self.optimizer = build_optimizer(self.model, tc, self.device)
        self.schedule = LRSchedule(self.optimizer, tc.schedule, tc.warmup_steps, tc.max_steps, tc.min_lr, tc.decay_start)
        self.sampler = TokenBatchSampler(
            self.data.train_src.sizes, self.data.train_tgt.sizes, tc.max_tokens,
            seed=tc.seed, shuffle=True, rank=self.env.rank, world_size=self.env.world_size, mix=self.data.mix,
            max_len=self.model_cfg.max_positions,
        )  # fmt: skip
        _check_lengths(self.sampler, self.model_cfg, cfg.data_path, quiet=not self.env.is_main)
        self.stream = BatchStream(self.sampler, self.data.train_src, self.data.train_tgt, self.model_cfg, self.model.decoder_start_id)
        self.state = TrainState()
        restored_ema = None
        if resume:
            restored_ema = self._restore(existing)
        elif tc.init_from:
            self._init_weights(tc.init_from)
        self.ema = self._weight_average(restored_ema)

        self.ddp_model: nn.Module = self.model
        if tc.compile:
            self.ddp_model = torch.compile(self.ddp_model)
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.ddp_model, device_ids=ids)
        self.metrics: Optional[MetricsLog] = None
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.run_dir)
            self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", truncate_after_step=self.state.step if resume else 0)
            self._write_config()

    # ---- checkpoints

    def _restore(self, path: Path) -> Optional[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """Continue from checkpoint ``path``; returns its weight average, if it kept one."""
        c = ckpt.load_checkpoint(path)
        trainer_state = c.state["trainer"]
        if trainer_state.get("model_config") != to_dict(self.model_cfg):
            raise ckpt.CheckpointError(f"{path}: the model section of the config changed since this checkpoint")
        try:
            self.model.load_state_dict(c.model_state)
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"{path}: weights do not fit the configured model ({e})") from None
        self.optimizer.load_state_dict(c.optimizer_state)
        self.schedule.load_state_dict(trainer_state["schedule"])
        self.sampler.load_state_dict(trainer_state["sampler"])
        known = {f.name for f in dataclasses.fields(TrainState)}
        self.state = TrainState(**{k: v for k, v in trainer_state["state"].items() if k in known})
        self.state.stop_reason = None
        # each rank's dropout stream advanced differently (different batch shapes)
        per_rank = trainer_state.get("rng_ranks")
        ckpt.set_rng_state(per_rank[self.env.rank] if per_rank and self.env.distributed else c.state["rng"])
        if self.env.is_main:
            print(f"mt train: resumed from {path} (step {self.state.step}, epoch {self.sampler.epoch})", file=sys.stderr)
        return c.ema

    def _init_weights(self, model_dir: str) -> None:
        """Start from the weights of a model directory (``train.init_from``); optimizer,
        schedule and sampler start fresh, as for any new run."""
        from mt.modelio import load_model

        loaded = load_model(model_dir)
        # dropout may differ between runs; everything that shapes the weights must not
        arch = lambda c: {k: v for k, v in to_dict(c).items() if "dropout" not in k}  # noqa: E731
        if arch(loaded.model.cfg) != arch(self.model_cfg):
            raise ConfigError(f"train.init_from: {model_dir} has a different model architecture or vocabulary than this run")
        self.model.load_state_dict(loaded.model.state_dict())
        if self.env.is_main:
            print(f"mt train: initialised weights from {model_dir}", file=sys.stderr)

    def _weight_average(self, restored: Optional[tuple[dict[str, torch.Tensor], dict[str, Any]]]) -> Optional[WeightEMA]:
        """``train.ema_decay``'s average, continued from the checkpoint's when it has one."""
        if self.tc.ema_decay <= 0:
            return None
        ema = WeightEMA(self.model, self.tc.ema_decay)
        if restored is not None:
            try:
                ema.load_state_dict(*restored)
            except KeyError as e:
                raise ckpt.CheckpointError(f"the checkpoint's weight average does not fit the model ({e})") from None
        elif self.state.step > 0 and self.env.is_main:
            print(f"mt train: train.ema_decay is new to this run; its average starts at step {self.state.step}", file=sys.stderr)
        return ema

    def _averaged(self) -> contextlib.AbstractContextManager:
        """The weights that validation and the saved models use: the average when there is one."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "state": dataclasses.asdict(self.state),
            "schedule": self.schedule.state_dict(),
            "sampler": self.sampler.state_dict(),
            "model_config": to_dict(self.model_cfg),
            "data_path": str(self.cfg.data_path.resolve()),
            "step": self.state.step,
        }

    def save_checkpoint(self) -> None:
        """Rank 0 writes model/optimizer (identical on all ranks) plus every rank's RNG."""
        state = self._trainer_state()
        if self.env.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.env.world_size
            dist.all_gather_object(gathered, ckpt.rng_state())
            state["rng_ranks"] = gathered
        if self.env.is_main:
            ema = self.ema.state_dict() if self.ema is not None else None
            ckpt.save_checkpoint(self.run_dir, self.state.step, self.model, self.optimizer, state, self.tc.keep_last, ema)
        barrier(self.env)

    def _save_model(self, name: str, extra: dict[str, Any]) -> None:
        from mt.modelio import save_model

        meta = {"step": self.state.step, "epoch": self.sampler.epoch, "run_dir": str(self.run_dir), **extra}
        save_model(self.run_dir / name, self.model, self.data.text, meta, decode=self.cfg.decode)

    def _write_config(self) -> None:
        import yaml

        snapshot = to_dict(self.cfg)
        snapshot["model"] = to_dict(self.model_cfg)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(snapshot, sort_keys=False), encoding="utf-8")

    # ---- one update

    def train_step(self) -> dict[str, Any]:
        """One optimizer update over ``update_freq`` batches. Returns device-side sums
        (no host sync) plus host-side token counts."""
        tc, env = self.tc, self.env
        batches = [self.stream.next() for _ in range(tc.update_freq)]
        local = [sum(b.n_tgt_tokens for b in batches), sum(b.n_src_tokens for b in batches), sum(len(b.src) for b in batches)]
        n_tgt, n_src, sentences = all_reduce_sum([float(x) for x in local], env)
        lr = self.schedule.get_last_lr()[0]
        loss_sum, nll_sum, grad_norm = optimizer_update(
            self.model, self.ddp_model, self.optimizer, batches, n_tgt, tc.label_smoothing,
            self.model_cfg.pad_id, self.device, self.bf16, tc.clip_norm, env.world_size,
        )  # fmt: skip
        if self.ema is not None:
            self.ema.update(self.model)
        self.schedule.step()
        self.state.step += 1
        self.state.tokens += int(n_tgt)
        return {
            "loss_sum": loss_sum, "nll_sum": nll_sum, "grad_norm": grad_norm, "lr": lr,
            "n_tgt": int(n_tgt), "n_src": int(n_src), "sentences": int(sentences),
        }  # fmt: skip

    # ---- validation

    @torch.no_grad()
    def valid_loss(self) -> dict[str, float]:
        data, mc = self.data, self.model_cfg
        if data.valid_src is None:
            return {}
        self.model.eval()
        # valid is not length-filtered by `mt prepare`; skip what the model cannot encode
        sampler = TokenBatchSampler(
            data.valid_src.sizes, data.valid_tgt.sizes, self.tc.max_tokens, shuffle=False, max_len=mc.max_positions
        )
        if sampler.skipped == len(sampler.src_sizes):
            return {}
        loss = nll = 0.0
        n = 0
        for idx in sampler.batches(0):
            b = collate([data.valid_src[i] for i in idx], [data.valid_tgt[i] for i in idx], mc.pad_id, self.model.decoder_start_id, mc.eos_id)
            b = b.to(self.device)
            with _autocast(self.device, self.bf16):
                logits = self.model(b.src, b.tgt_in)
            out = label_smoothed_nll(logits, b.tgt_out, self.tc.label_smoothing, mc.pad_id, b.n_tgt_tokens)
            loss += float(out.loss)
            nll += float(out.nll)
            n += b.n_tgt_tokens
        nll_tok = per_token(nll, n)
        return {"loss": per_token(loss, n), "nll": nll_tok, "ppl": perplexity(nll_tok), "tokens": n}

    @torch.no_grad()
    def valid_bleu(self) -> dict[str, Any]:
        """Decode the first ``valid_bleu_sentences`` valid sentences with the real decoder."""
        data, tc = self.data, self.tc
        if not tc.valid_bleu or not data.valid_src_lines:
            return {}
        from mt.decode.translator import Translator
        from mt.decode.variant import prepare
        from mt.evaluate import corpus_scores

        k = tc.valid_bleu_sentences or len(data.valid_src_lines)
        src, refs = data.valid_src_lines[:k], data.valid_ref_lines[:k]
        self.model.eval()
        # the config's decoding settings at the validation beam (n_best 1: one output scored)
        opts = self.cfg.decode.replace(beam=tc.valid_beam, n_best=1, sampling="none")
        # unpacked, fp32 (bf16 autocast on CUDA below), unprobed: an inference copy of the
        # weights being trained, thrown away after this validation
        dm = prepare(self.model, self.device, pack=False, probe=False)
        translator = Translator(dm, data.text, options=opts)
        with _autocast(self.device, self.bf16 and self.device.type == "cuda"):
            hyps = [nbest[0].text if nbest else "" for nbest in translator.translate_batch(src, opts)]
        tok = self.cfg.data.bleu_tokenize_for(self.cfg.data.tgt_lang)
        scores = corpus_scores(hyps, refs, tokenize=tok)
        record = {"bleu": scores["bleu"], "chrf": scores["chrf"], "bleu_sentences": len(src), "example": hyps[0] if hyps else ""}
        if data.valid_parts:
            record["parts"] = scores_by_part(hyps, refs, data.valid_parts, tok)
        return record

    def validate(self) -> dict[str, Any]:
        """Rank 0 validates (others wait); returns the record and updates best/patience."""
        t0 = time.perf_counter()
        record: dict[str, Any] = {"kind": "valid", "step": self.state.step, "epoch": self.sampler.epoch}
        if self.env.is_main:
            with self._averaged():
                self._validate_main(record)
        self.state.last_valid_step = self.state.step
        stop = self.env.is_main and self.tc.patience > 0 and self.state.bad_validations >= self.tc.patience
        if broadcast_flag(stop, self.env):
            self.state.stop_reason = f"early stopping: no improvement in {self.tc.patience} validations"
        record["seconds"] = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.write(record)
            try:
                plot_learning_curves(self.metrics.path, self.run_dir / "learning_curve.png")
            except Exception as e:  # a plotting problem must never kill a long run
                print(f"mt train: learning-curve plot failed: {e}", file=sys.stderr)
        return record

    def _validate_main(self, record: dict[str, Any]) -> None:
        """Rank 0's part of :meth:`validate`: scores into ``record``, best/patience, ``model_best``."""
        record.update(self.valid_loss())
        record.update(self.valid_bleu())
        metric = self.tc.best_metric
        value = record.get(metric)
        if value is None and metric != "loss":  # no BLEU available: fall back to loss
            metric, value = "loss", record.get("loss")
        if value is None:
            return
        if _improved(metric, value, self.state.best):
            self.state.best, self.state.best_step, self.state.bad_validations = value, self.state.step, 0
            self._save_model("model_best", {"best_metric": metric, "best": value})
        else:
            self.state.bad_validations += 1
        record.update(best=self.state.best, best_step=self.state.best_step, best_metric=metric)
        self.metric_used = metric

    # ---- main loop

    def _progress(self):
        from tqdm import tqdm

        mode = self.tc.progress
        enabled = self.env.is_main and (mode == "on" or (mode == "auto" and sys.stderr.isatty()))
        return tqdm(total=self.tc.max_steps, initial=self.state.step, disable=not enabled, unit="step", dynamic_ncols=True)

    def run(self) -> TrainState:
        tc, env, st = self.tc, self.env, self.state
        peak, peak_source = (None, "")
        if env.is_main:
            peak, peak_source = hardware_peak_tflops(self.device, self.bf16, tc.peak_tflops)
        start = time.perf_counter() - st.elapsed  # wall clock of earlier sessions counts
        budget = tc.max_time_minutes * 60.0 if tc.max_time_minutes else math.inf
        valid_s = save_s = 0.0  # measured; the budget keeps room for a final validation + save
        bar = self._progress()
        ema_note = f"validating and saving a moving average of the weights (ema_decay {tc.ema_decay}); " if self.ema else ""
        if env.is_main:
            print(
                f"mt train: {self.model.num_parameters() / 1e6:.1f}M parameters, device {self.device}, "
                f"{'bf16 autocast' if self.bf16 else 'fp32'} ({self.precision_reason}), {torch.get_num_threads()} threads, "
                f"world size {env.world_size}, {len(self.sampler)} batches/epoch/rank; "
                f"{ema_note}MFU peak: "
                f"{f'{peak:.2f} TFLOP/s' if peak else 'unknown'} {peak_source}",
                file=sys.stderr,
            )
        self.model.train()
        window = _Window()
        while True:
            st.elapsed = time.perf_counter() - start
            if st.step >= tc.max_steps:
                st.stop_reason = st.stop_reason or f"max_steps={tc.max_steps} reached"
            elif self.stream.epochs_done >= tc.max_epochs:
                st.stop_reason = st.stop_reason or f"max_epochs={tc.max_epochs} reached"
            elif budget < math.inf and broadcast_flag(st.elapsed + valid_s + save_s >= budget, env):
                st.stop_reason = f"time budget of {tc.max_time_minutes} minutes reached"  # rank 0's clock
            if st.stop_reason:
                break

            out = self.train_step()
            window.add(out)
            bar.update(1)
            if st.step % tc.log_every == 0:
                rec = self._log_train(window, peak, peak_source)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", tgt_tok_s=f"{rec['tgt_tokens_per_s']:.0f}")
                if bar.disable and env.is_main:
                    print(_train_line(rec), file=sys.stderr, flush=True)
                window = _Window()
            if st.step % tc.valid_every == 0:
                t0 = time.perf_counter()
                rec = self.validate()
                valid_s = max(valid_s, time.perf_counter() - t0)
                if env.is_main:
                    bar.write(_valid_line(rec), file=sys.stderr)
                self.model.train()
                window.restart()  # validation time is not training throughput
            if st.step % tc.save_every == 0 or st.stop_reason:
                t0 = time.perf_counter()
                st.elapsed = time.perf_counter() - start
                self.save_checkpoint()
                save_s = max(save_s, 2 * (time.perf_counter() - t0))  # checkpoint + model_last
                window.restart()

        bar.close()
        # final validation (unless this step was just validated), checkpoint and model_last
        if st.last_valid_step != st.step:
            rec = self.validate()
            if env.is_main:
                print(_valid_line(rec), file=sys.stderr)
        st.elapsed = time.perf_counter() - start
        last = ckpt.latest_checkpoint(self.run_dir)
        # rank 0 (the writer) decides for all: save_checkpoint is a collective, and a node
        # without a shared run_dir (or with a stale NFS listing) would see no checkpoint
        if broadcast_flag(last is None or last.name != f"step_{st.step:08d}", env):
            self.save_checkpoint()
        if env.is_main:
            with self._averaged():
                self._save_model("model_last", {"stop_reason": st.stop_reason})
            summary = {"kind": "summary", "step": st.step, "epoch": self.sampler.epoch, "stop_reason": st.stop_reason,
                       "best": st.best, "best_step": st.best_step, "elapsed": st.elapsed, "tokens": st.tokens,
                       "precision": "bf16" if self.bf16 else "fp32", "precision_reason": self.precision_reason}  # fmt: skip
            self.metrics.write(summary)
            self.metrics.close()
            print(f"mt train: {st.stop_reason}; best {self.metric_used} {st.best} at step {st.best_step}; "
                  f"models in {self.run_dir}/model_best and model_last", file=sys.stderr)  # fmt: skip
        barrier(env)
        return st

    def _log_train(self, w: "_Window", peak: Optional[float], peak_source: str) -> dict[str, Any]:
        """Sync the window's device sums (the only per-log host sync) and write a record."""
        loss_sum, nll_sum = all_reduce_sum([float(w.loss_sum), float(w.nll_sum)], self.env)
        dt = max(time.perf_counter() - w.t0, 1e-9)
        tgt_s = w.n_tgt / dt
        rec: dict[str, Any] = {
            "kind": "train", "step": self.state.step, "epoch": self.sampler.epoch,
            "loss": per_token(loss_sum, w.n_tgt), "nll": per_token(nll_sum, w.n_tgt),
            "lr": w.lr, "grad_norm": float(w.grad_norm) if w.grad_norm is not None else None,
            "tokens_per_s": (w.n_tgt + w.n_src) / dt, "tgt_tokens_per_s": tgt_s,
            "elapsed": round(self.state.elapsed, 2), "precision": "bf16" if self.bf16 else "fp32",
        }  # fmt: skip
        rec["ppl"] = perplexity(rec["nll"])
        rec.update(_memory_fields())
        if peak and w.sentences:
            flops = self.model.flops_per_token(w.n_src / w.sentences, w.n_tgt / w.sentences)
            rec["mfu"] = tgt_s * flops / (peak * 1e12 * self.env.world_size)
            rec["peak_tflops"], rec["peak_source"] = peak, peak_source
        if self.metrics is not None:
            self.metrics.write(rec)
        return rec


def _memory_fields() -> dict[str, float]:
    """The process's RSS and glibc's in-use / kept-free heap, MiB (absent where unknown):
    free memory that keeps growing is fragmentation, in-use that keeps growing is a leak."""
    out: dict[str, float] = {}
    rss = rss_mib()
    if rss is not None:
        out["rss_mib"] = rss
    heap = heap_mib()
    if heap is not None:
        out["heap_in_use_mib"], out["heap_free_mib"] = heap["in_use"], heap["free"]
    return out


class _Window:
    """Accumulates device-side loss sums between log points without syncing."""

    def __init__(self) -> None:
        self.loss_sum: Any = 0.0
        self.nll_sum: Any = 0.0
        self.grad_norm = None
        self.lr = 0.0
        self.n_tgt = self.n_src = self.sentences = 0
        self.t0 = time.perf_counter()

    def add(self, out: dict[str, Any]) -> None:
        self.loss_sum = self.loss_sum + out["loss_sum"]
        self.nll_sum = self.nll_sum + out["nll_sum"]
        self.grad_norm, self.lr = out["grad_norm"], out["lr"]
        self.n_tgt += out["n_tgt"]
        self.n_src += out["n_src"]
        self.sentences += out["sentences"]

    def restart(self) -> None:
        self.t0 = time.perf_counter()


def _train_line(rec: dict[str, Any]) -> str:
    line = (
        f"step {rec['step']} | loss {rec['loss']:.3f} | ppl {rec['ppl']:.1f} | lr {rec['lr']:.2e} | "
        f"{rec['tgt_tokens_per_s']:.0f} tgt tok/s ({rec['tokens_per_s']:.0f} src+tgt)"
    )
    if "mfu" in rec:
        line += f" | MFU {100 * rec['mfu']:.1f}%"
    return line


def scores_by_part(hyps: list[str], refs: list[str], parts: list[tuple[str, int]], tok: str) -> dict[str, dict[str, Any]]:
    """BLEU/chrF of each corpus of an interleaved valid set (``parts``: (name, pairs) in
    config order), from outputs of its first ``len(hyps)`` lines; parts with no line there
    are left out."""
    from mt.evaluate import corpus_scores

    order = interleave_order([n for _, n in parts])[: len(hyps)]
    out = {}
    for k, (name, _) in enumerate(parts):
        rows = [j for j, part in enumerate(order) if part == k]
        if rows:
            s = corpus_scores([hyps[j] for j in rows], [refs[j] for j in rows], tokenize=tok)
            out[name] = {"bleu": s["bleu"], "chrf": s["chrf"], "sentences": len(rows)}
    return out


def _valid_line(rec: dict[str, Any]) -> str:
    parts = [f"step {rec['step']}"]
    for key, fmt in (("loss", ".3f"), ("ppl", ".2f"), ("bleu", ".2f"), ("chrf", ".2f"), ("best", ".3f")):
        if rec.get(key) is not None:
            parts.append(f"{key} {rec[key]:{fmt}}")
    parts += [f"{name} bleu {p['bleu']:.2f}" for name, p in (rec.get("parts") or {}).items()]
    return "valid: " + ", ".join(parts)


def train(cfg: ExperimentConfig, resume: bool = False) -> TrainState:
    """Entry point of ``mt train CONFIG [--resume]`` (single process or under torchrun).

    Rank 0 holds the run directory's lock (:func:`exclusive_dir`) for the whole run: a second
    ``mt train`` on the same ``run_dir`` would otherwise resume from the same checkpoint and
    overwrite the first one's."""
    guard = exclusive_dir(cfg.run_path, "training") if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    with guard:
        trainer = None
        try:
            trainer = Trainer(cfg, resume=resume)
            return trainer.run()
        finally:
            if trainer is not None:
                cleanup(trainer.env)
