"""Text in, text out: :class:`Translator` and the ``mt translate`` command.

``Translator.translate`` normalises and encodes with the model's ``TextPipeline``, sorts
sentences by source length, cuts them into batches of at most ``opts.max_tokens`` padded
source tokens, decodes (:mod:`mt.decode.search` / :mod:`mt.decode.sampling`), restores the
input order and detokenises. Because decoding is batch-invariant
(:mod:`mt.decode.shapes`), a sentence's output does not depend on the batching.

**Parallel batches on CPU** (``workers``, like CTranslate2's ``inter_threads``): with
``workers > 1`` that many batches are decoded at once, each in its own thread with
``threads // workers`` torch threads. A search step is a few large GEMMs plus ~100 small ops
and Python bookkeeping that one thread runs alone; with one batch at a time the other cores
idle through that part, with two batches in flight one batch's bookkeeping overlaps the
other's GEMMs. On the 2-core reference machine, 2 workers × 1 thread decoded test2016 at
beam 5 1.3-1.4× faster than 1 worker × 2 threads with ``F.linear``, and ~5% faster with the
packed weights that are now the default (``bench/results.md``). The output is
identical whatever ``workers`` is: decoding is batch-invariant, and sampling draws from one
generator per batch, seeded by ``(seed, batch number)``.

Edge cases:

* an empty (or whitespace-only) input line gives one empty hypothesis with score 0; the
  model is not run for it;
* a source longer than the model can take (``max_positions - 1`` subwords, one position
  being the appended EOS) is truncated to that length, with a ``UserWarning`` naming how many
  sentences were cut.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Optional

import torch

from mt.data.batching import make_source
from mt.decode.options import DecodeOptions, Hypothesis
from mt.decode.sampling import add_noise, sample
from mt.decode.search import beam_search, greedy_search
from mt.decode.shortlist import Shortlist
from mt.runtime import denormals_flushed
from mt.model import Transformer

__all__ = ["DecodeOptions", "Hypothesis", "Translator", "decoding_model", "generate", "translate_cli"]


def generate(
    model: Transformer,
    src: torch.Tensor,
    opts: DecodeOptions,
    generator: Optional[torch.Generator] = None,
    vocab_ids: Optional[torch.Tensor] = None,
) -> list[list[Hypothesis]]:
    """Token-level generation for ``src`` ``(batch, src_len)`` (built by ``make_source``) by
    ``opts.sampling`` / ``opts.beam``; hypotheses have ``text == ""``. ``vocab_ids``: an output
    shortlist (sorted target ids, :mod:`mt.decode.shortlist`) or None."""
    if opts.sampling in ("topk", "topp"):
        if generator is None:
            generator = torch.Generator(device=src.device).manual_seed(opts.seed)
        return sample(model, src, opts, generator, vocab_ids)
    if opts.beam == 1:
        return greedy_search(model, src, opts, vocab_ids)
    return beam_search(model, src, opts, vocab_ids)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_workers(device: torch.device, threads: int) -> int:
    """Batches to decode at once by default: 2 on a CPU with at least 2 threads, else 1."""
    return 2 if device.type == "cpu" and threads >= 2 else 1


def batch_seed(seed: int, batch_no: int) -> int:
    """Seed of batch ``batch_no``'s sampling generator: the same whatever thread decodes it."""
    return (seed * 1_000_003 + batch_no) % (2**63)


class Translator:
    """Translate raw text with ``model`` (a :class:`mt.model.Transformer`) and ``text``
    (its ``mt.data.text.TextPipeline``) on ``device``; ``workers``: batches decoded at once
    on CPU (see the module docstring; ignored on other devices)."""

    def __init__(
        self,
        model: Transformer,
        text,
        device: str | torch.device = "cpu",
        workers: int = 1,
        shortlist: Optional[Shortlist] = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        self.device = resolve_device(device)
        self.model = model
        self.text = text
        self.workers = workers
        self.shortlist = shortlist  # None: every batch decodes over the whole vocabulary
        if next(model.parameters()).device != self.device:
            self.model.to(self.device)

    @property
    def max_source_tokens(self) -> int:
        """Longest source (subwords, EOS excluded) the model's positions allow."""
        return self.model.cfg.max_positions - 1

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Normalise + SentencePiece; overlong sources truncated with a warning."""
        ids = self.text.encode_source(list(texts))
        limit = self.max_source_tokens
        n_long = sum(len(x) > limit for x in ids)
        if n_long:
            warnings.warn(
                f"{n_long} source sentence(s) longer than {limit} subwords (model.max_positions - 1) "
                "were truncated before translation",
                UserWarning,
                stacklevel=3,
            )
            ids = [x[:limit] for x in ids]
        return ids

    def translate_ids(
        self,
        src_ids: list[list[int]],
        opts: DecodeOptions,
        progress: Optional[Callable[[int], None]] = None,
    ) -> list[list[Hypothesis]]:
        """Decode bare source ids (no EOS) in length-sorted token-budget batches; output in
        input order. ``progress(n)`` is called after each batch with its sentence count."""
        cfg = self.model.cfg
        results: list[list[Hypothesis]] = [[Hypothesis("", [], 0.0, 0.0)] for _ in src_ids]
        todo = sorted((i for i, x in enumerate(src_ids) if x), key=lambda i: -len(src_ids[i]))
        batches = self._batches(todo, src_ids, opts.max_tokens)

        def run(batch_no: int) -> int:
            batch = batches[batch_no]
            generator = torch.Generator(device=self.device).manual_seed(batch_seed(opts.seed, batch_no))
            # a trained decoder's subnormals made CPU beam search ~8x slower (mt/runtime.py);
            # the flag is per thread, so each worker sets it
            with denormals_flushed():
                sources = [src_ids[i] for i in batch]
                src = make_source(sources, cfg.pad_id, cfg.eos_id).to(self.device)
                vocab_ids = None if self.shortlist is None else self.shortlist.for_sources(sources)
                for i, hyps in zip(batch, generate(self.model, src, opts, generator, vocab_ids)):
                    results[i] = hyps
            return len(batch)

        was_training = self.model.training
        self.model.eval()
        try:
            workers = min(self.workers, len(batches)) if self.device.type == "cpu" else 1
            if workers <= 1:
                for batch_no in range(len(batches)):
                    n = run(batch_no)
                    if progress is not None:
                        progress(n)
            else:
                self._run_parallel(run, len(batches), workers, progress)
        finally:
            self.model.train(was_training)
        return results

    @staticmethod
    def _run_parallel(run: Callable[[int], int], n_batches: int, workers: int,
                      progress: Optional[Callable[[int], None]]) -> None:
        """``run(batch_no)`` for every batch on ``workers`` threads, longest batches first
        (the order of ``_batches``); torch's thread count is split between them and
        restored afterwards. The first error cancels the batches not yet started."""
        total = torch.get_num_threads()
        per_worker = max(1, total // workers)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="mt-decode",
                                  initializer=torch.set_num_threads, initargs=(per_worker,))
        try:
            pending = {pool.submit(run, j) for j in range(n_batches)}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    n = f.result()  # re-raises a worker's error here
                    if progress is not None:
                        progress(n)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(total)

    @staticmethod
    def _batches(order: list[int], src_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Cut length-sorted (longest first) ``order`` so ``sentences * (longest + 1)`` stays
        within ``max_tokens`` (a single sentence is always allowed)."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            n = len(src_ids[i]) + 1
            if current and max(longest, n) * (len(current) + 1) > max_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        if current:
            batches.append(current)
        return batches

    def translate(
        self,
        texts: list[str],
        opts: Optional[DecodeOptions] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> list[list[Hypothesis]]:
        """Translate raw sentences; per input, its n-best list (best first), detokenised."""
        opts = opts or DecodeOptions()
        results = self.translate_ids(self.encode(texts), opts, progress)
        flat = [h for hyps in results for h in hyps if h.tokens]
        for h, s in zip(flat, self.text.decode_target([h.tokens for h in flat])):
            h.text = s
        if opts.sampling == "beam_noise":
            noise_gen = torch.Generator().manual_seed(opts.seed)
            for hyps in results:
                for h in hyps:
                    h.text = " ".join(add_noise(h.text.split(), noise_gen))
        return results


# --------------------------------------------------------------------------- CLI


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_translator(
    model_dir: str,
    device: str = "auto",
    int8: bool = False,
    threads: Optional[int] = None,
    dtype: str = "fp32",
    workers: Optional[int] = None,
    shortlist: bool = False,
    pack: bool = True,
) -> Translator:
    """Load a model directory (``mt.modelio.load_model``) into a :class:`Translator`.

    ``dtype`` casts weights (and so activations and the KV cache) for decoding; log-probs and
    beam scores are computed in fp32 whatever it is (``mt.decode.search.step_log_probs``).

    ``threads``: torch threads in all; ``workers``: batches decoded at once on CPU, sharing
    those threads (None: 2 when there are at least 2 threads, else 1; see :class:`Translator`).
    ``shortlist``: decode over the model directory's ``shortlist.safetensors`` (``mt shortlist``).
    ``pack``: on CPU (fp32/bf16), run the linear layers through oneDNN-packed weights
    (:mod:`mt.decode.packed`: same tokens, 1.2-1.3× faster decoding; still batch-invariant)."""
    from mt.modelio import load_model

    check_variant(int8, dtype)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    loaded = load_model(model_dir, device="cpu" if int8 else dev)
    model = decoding_model(loaded.model, dev, int8=int8, dtype=dtype, pack=pack)
    if workers is None:
        workers = default_workers(dev, torch.get_num_threads())
    return Translator(model, loaded.text, dev, workers, Shortlist.load(model_dir) if shortlist else None)


def check_variant(int8: bool, dtype: str) -> None:
    """Raise ``ValueError`` for a decoding precision that does not exist."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    if int8 and dtype != "fp32":
        raise ValueError("--int8 quantises fp32 weights; it cannot be combined with --dtype " + dtype)


def decoding_model(
    model: Transformer, device: torch.device, int8: bool = False, dtype: str = "fp32", pack: bool = True
) -> Transformer:
    """What decoding runs for ``model`` (on ``device``): int8-quantised (CPU only), or cast to
    ``dtype``, then with oneDNN-packed linear layers on CPU when ``pack``. A copy whenever it
    differs from ``model``, which is never changed."""
    check_variant(int8, dtype)
    if int8:
        if device.type != "cpu":
            raise ValueError("--int8 is CPU-only (dynamic quantisation); use --device cpu")
        from mt.decode.quantize import quantize_int8

        model = quantize_int8(model)
    elif dtype != "fp32":
        model = copy.deepcopy(model).to(DTYPES[dtype])
    if pack and device.type == "cpu" and not int8:
        from mt.decode.packed import pack_linears

        model = pack_linears(model)
    return model


def _read_lines(path: str) -> list[str]:
    if path == "-":
        return [line.rstrip("\n") for line in sys.stdin]
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def format_nbest(index: int, hyps: list[Hypothesis]) -> list[str]:
    """TSV lines ``index<TAB>score<TAB>text`` (score with 4 decimals)."""
    return [f"{index}\t{h.score:.4f}\t{h.text}" for h in hyps]


def translate_cli(args: argparse.Namespace) -> int:
    """``mt translate``: stdin/file in, detokenised text (or n-best TSV) out."""
    opts = DecodeOptions.from_args(args, n_best=args.n_best)
    translator = load_translator(args.model, args.device, args.int8, args.threads, args.dtype,
                                 args.workers, args.shortlist, not args.no_pack)
    lines = _read_lines(args.input)
    bar = None
    if args.input != "-":
        from tqdm import tqdm

        bar = tqdm(total=len(lines), unit="sent", desc="translate", file=sys.stderr, disable=None)
    results = translator.translate(lines, opts, progress=bar.update if bar else None)
    if bar is not None:
        bar.close()
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for i, hyps in enumerate(results):
            if opts.n_best > 1:
                out.write("\n".join(format_nbest(i, hyps)) + "\n")
            else:
                out.write(hyps[0].text + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0

