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

**Documents.** :meth:`Translator.translate` takes each text as a document
(:mod:`mt.documents`): it is split into sentences (line breaks, blank lines and the spaces
around sentences kept; with ``fmt="html"``, the markup), sentences over the model's length are
cut, the sentences of all texts are translated in one :meth:`translate_batch` call (so they
batch together) and joined back. ``split=False`` keeps the sentence-per-text behaviour.
:meth:`translate_batch`, what evaluation and back-translation call, stays sentence-level, and
so does ``mt translate`` unless given ``--split`` or ``--format html``.

Edge cases:

* an empty (or whitespace-only) input line gives one empty hypothesis with score 0; the
  model is not run for it;
* a source longer than the model can take (``max_positions - 1`` subwords, one position
  being the appended EOS) is truncated to that length, with a ``UserWarning`` naming how many
  sentences were cut.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from mt.config import DecodeOptions
from mt.data.batching import make_source
from mt.decode.options import Hypothesis
from mt.data.languages import length_unit
from mt.decode.sampling import add_noise_to_text, sample
from mt.decode.search import DecodeCancelled, StopCheck, beam_search, greedy_search
from mt.decode.shortlist import Shortlist
from mt.decode import ct2
from mt.decode.variant import DecodingModel, prepare, resolve_device
from mt.documents import Document, Format, join_all, split
from mt.errors import ConfigError
from mt.runtime import denormals_flushed

__all__ = ["DecodeCancelled", "DecodeOptions", "Hypothesis", "Translator", "generate"]


def generate(
    model: DecodingModel,
    src: torch.Tensor,
    opts: DecodeOptions,
    generator: Optional[torch.Generator] = None,
    vocab_ids: Optional[torch.Tensor] = None,
    should_stop: StopCheck = None,
) -> list[list[Hypothesis]]:
    """Token-level generation for ``src`` ``(batch, src_len)`` (built by ``make_source``) by
    ``opts.sampling`` / ``opts.beam``; hypotheses have ``text == ""``. ``vocab_ids``: an output
    shortlist (sorted target ids, :mod:`mt.decode.shortlist`) or None. ``should_stop``: asked
    once per step; True raises :class:`DecodeCancelled` (:mod:`mt.decode.search`)."""
    if opts.sampling in ("topk", "topp"):
        if generator is None:
            generator = torch.Generator(device=src.device).manual_seed(opts.seed)
        return sample(model, src, opts, generator, vocab_ids, should_stop)
    if opts.beam == 1:
        return greedy_search(model, src, opts, vocab_ids, should_stop)
    return beam_search(model, src, opts, vocab_ids, should_stop)


def default_workers(device: torch.device, threads: int) -> int:
    """Batches to decode at once by default: 2 on a CPU with at least 2 threads, else 1."""
    return 2 if device.type == "cpu" and threads >= 2 else 1


def _check_workers(workers: int) -> None:
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")


def batch_seed(seed: int, batch_no: int) -> int:
    """Seed of batch ``batch_no``'s sampling generator: the same whatever thread decodes it."""
    return (seed * 1_000_003 + batch_no) % (2**63)


def run_parallel(run: Callable[[int], int], n_batches: int, workers: int,
                 progress: Optional[Callable[[int], None]] = None) -> None:
    """``run(batch_no)`` for every batch on ``workers`` threads, in order of ``batch_no`` (the
    translator passes its longest batches first); torch's thread count is split between them
    and restored afterwards. The first error cancels the batches not yet started."""
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


class Translator:
    """Translate raw text with ``model`` (a :class:`mt.decode.variant.DecodingModel`) and
    ``text`` (its ``mt.data.text.TextPipeline``). ``options``: the decoding settings
    :meth:`translate` uses when given none (:meth:`load` takes the model directory's stored
    defaults); ``workers``: batches decoded at once on CPU (see the module docstring).
    """

    def __init__(
        self,
        model: DecodingModel | ct2.Ct2Model,
        text: Any,
        workers: int = 1,
        shortlist: Optional[Shortlist] = None,
        options: Optional[DecodeOptions] = None,
    ) -> None:
        _check_workers(workers)
        self.model = model
        self.device = model.device
        self.text = text
        self.workers = workers
        self.shortlist = shortlist  # None: every batch decodes over the whole vocabulary
        self.options = options or DecodeOptions()

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        options: Optional[DecodeOptions] = None,
        workers: Optional[int] = None,
        threads: Optional[int] = None,
        **changes: Any,
    ) -> "Translator":
        """The one loader of a model directory for decoding (CLI, server, benches).

        ``options``: the decoding settings (default: the directory's stored ones, see
        :func:`mt.modelio.stored_decode_options`), then ``changes`` (field=value). Its
        ``model`` group picks the variant (:func:`mt.decode.variant.prepare`: device, dtype,
        int8, packing) and ``shortlist`` loads ``shortlist.safetensors``. ``threads``: torch
        threads in all; ``workers``: batches at once on CPU, sharing them (None: 2 when there
        are at least 2 threads, else 1)."""
        from mt.modelio import load_model, stored_decode_options

        options = (options or stored_decode_options(model_dir)).replace(**changes)
        if threads:
            torch.set_num_threads(threads)
        return cls.from_loaded(load_model(model_dir, device="cpu"), options, workers)

    @classmethod
    def from_loaded(cls, loaded: Any, options: DecodeOptions, workers: Optional[int] = None) -> "Translator":
        """A Translator for an already loaded ``mt.modelio.LoadedModel`` (what :meth:`load`
        and the server's decoding processes do after loading). ``options.engine`` ctranslate2:
        the model exported to CTranslate2 (:class:`mt.decode.ct2.Ct2Model`) decodes instead."""
        if options.engine == "ctranslate2":
            device = resolve_device(options.device)
            if workers is None:
                workers = default_workers(device, torch.get_num_threads())
            _check_workers(workers)  # before the export and load, which divide the threads by it
            return cls(ct2.load_model(loaded, options, device, workers), loaded.text, workers, None, options)
        dm = prepare(loaded.model, options.device, options.dtype, options.int8, options.pack)
        if workers is None:
            workers = default_workers(dm.device, torch.get_num_threads())
        shortlist = Shortlist.load(loaded.path) if options.shortlist else None
        return cls(dm, loaded.text, workers, shortlist, options)

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
        should_stop: StopCheck = None,
    ) -> list[list[Hypothesis]]:
        """Decode bare source ids (no EOS) in length-sorted token-budget batches; output in
        input order. ``progress(n)`` is called after each batch with its sentence count.
        ``should_stop``: asked once per decoding step; True raises :class:`DecodeCancelled`
        (the server's way to stop work nobody waits for any more)."""
        results: list[list[Hypothesis]] = [[Hypothesis("", [], 0.0, 0.0)] for _ in src_ids]
        todo = sorted((i for i, x in enumerate(src_ids) if x), key=lambda i: -len(src_ids[i]))
        batches = self._batches(todo, src_ids, opts.max_tokens)

        def run(batch_no: int) -> int:
            batch = batches[batch_no]
            for i, hyps in zip(batch, self.decode_batch([src_ids[i] for i in batch], opts, batch_no, should_stop)):
                results[i] = hyps
            return len(batch)

        workers = min(self.workers, len(batches)) if self.device.type == "cpu" else 1
        if workers <= 1:
            for batch_no in range(len(batches)):
                n = run(batch_no)
                if progress is not None:
                    progress(n)
        else:
            run_parallel(run, len(batches), workers, progress)
        return results

    def decode_batch(self, sources: list[list[int]], opts: DecodeOptions, batch_no: int,
                     should_stop: StopCheck = None) -> list[list[Hypothesis]]:
        """One batch of bare source ids (no EOS) → per sentence its hypotheses (``text`` empty).
        ``batch_no`` seeds sampling (:func:`batch_seed`), so the output does not depend on the
        thread that decodes it."""
        if isinstance(self.model, ct2.Ct2Model):
            return self.model.decode_batch(sources, opts, should_stop)
        cfg = self.model.cfg
        generator = torch.Generator(device=self.device).manual_seed(batch_seed(opts.seed, batch_no))
        # a trained decoder's subnormals made CPU beam search ~8x slower (mt/runtime.py);
        # the flag is per thread, so each worker sets it
        with denormals_flushed():
            src = make_source(sources, cfg.pad_id, cfg.eos_id).to(self.device)
            vocab_ids = None if self.shortlist is None else self.shortlist.for_sources(sources)
            return generate(self.model, src, opts, generator, vocab_ids, should_stop)

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

    def translate(self, texts: list[str], opts: Optional[DecodeOptions] = None,
                  progress: Optional[Callable[[int], None]] = None, *, split: bool = True,
                  fmt: Format = "text") -> list[str]:
        """Translate documents: per input, its translation with its layout (module docstring).
        ``split=False``: each text is one sentence, as :meth:`translate_batch` takes it (for
        HTML: each block of text is one segment); ``fmt``: ``"text"`` or ``"html"``;
        ``opts``: default :attr:`options`; ``progress(n)``: after each batch, ``n`` segments."""
        if not split and fmt == "text":
            return [nbest[0].text for nbest in self.translate_batch(texts, opts, progress)]
        docs = self.documents(texts, fmt, sentences=split)
        hyps = self.translate_batch([s for d in docs for s in d.segments], opts, progress)
        return join_all(docs, [nbest[0].text for nbest in hyps])

    def documents(self, texts: list[str], fmt: Format = "text", sentences: bool = True) -> list[Document]:
        """``texts`` split into the segments this model translates (:func:`mt.documents.split`
        in the source language), each at most :attr:`max_source_tokens` long."""
        lang = getattr(self.text, "src_lang", None)
        return [split(t, fmt, lang, self.count_tokens, self.max_source_tokens, sentences) for t in texts]

    def count_tokens(self, text: str) -> int:
        """Source subwords of ``text`` (normalised + SentencePiece, as :meth:`encode` sees it)."""
        return len(self.text.encode_source([text])[0])

    def translate_batch(
        self,
        texts: list[str],
        opts: Optional[DecodeOptions] = None,
        progress: Optional[Callable[[int], None]] = None,
        should_stop: StopCheck = None,
    ) -> list[list[Hypothesis]]:
        """Translate raw sentences; per input, its n-best list (best first), detokenised, with
        scores. ``opts``: default :attr:`options`; ``should_stop``: see :meth:`translate_ids`."""
        opts = opts or self.options
        results = self.translate_ids(self.encode(texts), opts, progress, should_stop)
        flat = [h for hyps in results for h in hyps if h.tokens]
        for h, s in zip(flat, self.text.decode_target([h.tokens for h in flat])):
            h.text = s
        if opts.sampling == "beam_noise":
            noise_gen = torch.Generator().manual_seed(opts.seed)
            unit = length_unit(getattr(self.text, "tgt_lang", None))
            for hyps in results:
                for h in hyps:
                    h.text = add_noise_to_text(h.text, noise_gen, unit)
        return results


# --------------------------------------------------------------------------- CLI


def format_nbest(index: int, hyps: list[Hypothesis]) -> list[str]:
    """TSV lines ``index<TAB>score<TAB>text`` (score with 4 decimals)."""
    return [f"{index}\t{h.score:.4f}\t{h.text}" for h in hyps]


def announce_precision(prog: str, translator: Translator) -> None:
    """The start-up line of ``dtype: auto`` on stderr: the precision it chose and why."""
    dm = translator.model
    if dm.precision.reason != "as requested":
        print(f"{prog}: decoding in {dm.describe()} ({dm.precision.reason})", file=sys.stderr)


def add_document_arguments(parser: argparse.ArgumentParser) -> None:
    """``mt translate``'s document flags: ``--split`` and ``--format``."""
    g = parser.add_argument_group("documents (default: one sentence per line, as evaluation and back-translation use)")
    g.add_argument("--split", action="store_true",
                   help="split each line into sentences (long ones cut to the model's length); lines, blank lines "
                        "and spaces around sentences are kept, so the output has the input's lines")
    g.add_argument("--format", choices=("text", "html"), default="text",
                   help="html: the whole input is one HTML document; the text between tags is split into sentences "
                        "and the markup kept (default text)")


def translate_cli(args: argparse.Namespace) -> int:
    """``mt translate``: stdin/file in, detokenised text (or n-best TSV) out. One sentence per
    line, unless ``--split`` (the input is one text document: each line split into sentences,
    the lines kept) or ``--format html`` (the input is one HTML document)."""
    from mt.decode.options import from_args
    from mt.fileio import read_lines
    from mt.modelio import stored_decode_options

    opts = from_args(args, stored_decode_options(args.model))
    fmt = getattr(args, "format", "text")
    as_document = getattr(args, "split", False) or fmt == "html"
    if as_document and opts.n_best > 1:
        raise ConfigError(f"--n-best: {opts.n_best} is for one sentence per line; --split and --format html "
                          "write the best translation only")
    lines = list(read_lines(args.input))
    translator = Translator.load(args.model, opts, args.workers, args.threads)
    announce_precision("mt translate", translator)
    doc = translator.documents(["\n".join(lines)], fmt)[0] if as_document else None
    sources = doc.segments if doc is not None else lines
    bar = _progress_bar(args, len(sources))
    results = translator.translate_batch(sources, opts, progress=bar.update if bar else None)
    if bar is not None:
        bar.close()
    if doc is not None:
        out_lines = [doc.join([hyps[0].text for hyps in results])] if lines else []
    else:
        out_lines = [line for i, hyps in enumerate(results)
                     for line in (format_nbest(i, hyps) if opts.n_best > 1 else [hyps[0].text])]
    _write(args.output, "".join(line + "\n" for line in out_lines))
    return 0


def _progress_bar(args: argparse.Namespace, total: int) -> Any:
    """A tqdm bar on stderr for a file input (None for stdin)."""
    if args.input == "-":
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="sent", desc="translate", file=sys.stderr, disable=None)


def _write(output: str, text: str) -> None:
    """``text`` to stdout (``"-"``) or atomically to the file ``output``."""
    from mt.fileio import atomic_write

    if output == "-":
        sys.stdout.write(text)
    else:
        with atomic_write(output) as f:
            f.write(text)
