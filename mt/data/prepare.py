"""The ``mt prepare`` stage: fetch → read → clean → SentencePiece → binarise, with a manifest.

Output (``cfg.data_path``, layout in docs/CONTRACTS.md)::

    manifest.json               inputs (sha256), counts, clean report, spm settings, config,
                                train_corpora (per corpus: pairs, examples per epoch, clean report)
    text.json, spm*.model       the TextPipeline
    train.<lang>.bin/.idx       cleaned, normalised, encoded training pairs (several corpora:
                                back to back, in config order)
    valid.<lang>.bin/.idx/.txt  normalised + encoded; .txt = the original lines (references)
    <test>.<lang>.bin/.idx/.txt

Everything is written into a temporary sibling directory that replaces the old one only
when complete, so an interrupted run never leaves a directory that looks prepared.
A fingerprint of the inputs' sha256 and the data config is stored in the manifest; a run
with the same fingerprint does nothing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Optional

from mt.config import ExperimentConfig, TrainCorpusConfig, to_dict
from mt.data import DataError
from mt.data.clean import Cleaner, CleanReport, Lengths
from mt.data.fetch import resolve_data_dir
from mt.fileio import atomic_dir, read_json_object, read_lines, sha256_file
from mt.data.sources import InterleavedSource, ParallelSource, open_corpora, open_corpus
from mt.data.text import TextPipeline, Vocabulary, train_sentencepiece

if TYPE_CHECKING:  # mt.data.batching imports torch: only when batches are made
    from mt.data.batching import CorpusMix

PREPARE_FORMAT = 1  # bump when the output changes for the same inputs and config
ENCODE_CHUNK = 20_000  # lines per sentencepiece batch call


def _train_sources(cfg: ExperimentConfig, data_dir: Path) -> list[tuple[TrainCorpusConfig, ParallelSource]]:
    """Each training corpus with its reader; errors name ``data.train`` or ``data.train.<name>``."""
    d = cfg.data
    several = isinstance(d.train, list)
    return [
        (c, open_corpus(c, d.src_lang, d.tgt_lang, data_dir, d.clean_for(c).invalid_utf8,
                        f"data.train.{c.name}" if several else "data.train"))
        for c in d.train_corpora()
    ]  # fmt: skip


def _eval_sources(cfg: ExperimentConfig, data_dir: Path) -> dict[str, ParallelSource | InterleavedSource]:
    """Split name → reader: ``valid`` (if configured; several corpora interleaved) and each test set."""
    d = cfg.data
    policy = d.clean.invalid_utf8
    corpora = {}
    if d.valid is not None:
        corpora["valid"] = open_corpora(d.valid, d.src_lang, d.tgt_lang, data_dir, policy, "data.valid")
    for name, corpus in d.test.items():
        corpora[name] = open_corpus(corpus, d.src_lang, d.tgt_lang, data_dir, policy, f"data.test.{name}")
    return corpora


def _corpora(
    cfg: ExperimentConfig, train: list[tuple[TrainCorpusConfig, ParallelSource]], evals: dict[str, ParallelSource | InterleavedSource]
) -> dict[str, ParallelSource | InterleavedSource]:
    """Input name → reader: ``train`` (``train.<name>`` for each of several corpora), ``valid``
    (if configured) and each test set."""
    several = isinstance(cfg.data.train, list)
    return {**{(f"train.{c.name}" if several else "train"): s for c, s in train}, **evals}


def _local_files_present(cfg: ExperimentConfig, data_dir: Path) -> bool:
    """Whether every file the config reads is already there (then ``data.fetch`` has nothing
    to do, even where the dataset's other files, e.g. other languages, were never fetched)."""
    try:
        corpora = _corpora(cfg, _train_sources(cfg, data_dir), _eval_sources(cfg, data_dir))
        return all(p.is_file() for source in corpora.values() for p in source.files())
    except (DataError, OSError):
        return False


def _describe_inputs(corpora: dict[str, ParallelSource | InterleavedSource]) -> dict[str, Any]:
    """What each split reads, with sha256 of every local file (missing files raise here)."""
    return {split: _describe(source) for split, source in corpora.items()}


def _describe(source: ParallelSource | InterleavedSource) -> dict[str, Any]:
    if isinstance(source, InterleavedSource):
        return {"format": "interleaved", "parts": [_describe(part) for part in source.parts]}
    c = source.corpus
    entry: dict[str, Any] = {"format": c.format}
    files = source.files()
    entry["files"] = [{"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files]
    if c.format == "hf" and not files:
        # hub dataset: identified by name/config/split; changes upstream are not detected
        entry["hub"] = {"name": c.path, "config": c.hf_config, "split": c.split}
    return entry


def _content_only(entry: dict[str, Any]) -> dict[str, Any]:
    """An input's description without where its files are (what they are does not change with that)."""
    out = {k: v for k, v in entry.items() if k not in ("files", "parts")}
    if "files" in entry:
        out["files"] = [f["sha256"] for f in entry["files"]]
    if "parts" in entry:
        out["parts"] = [_content_only(part) for part in entry["parts"]]
    return out


def _spm_from_files(cfg: ExperimentConfig) -> tuple[Path, Path, Optional[Vocabulary], dict[str, Any]]:
    """``data.spm_from``: the (source, target) SentencePiece model files to reuse, by language,
    and the explicit vocabulary, if the directory has one (an imported model's).

    The directory's ``text.json`` (checked as :meth:`TextPipeline.load` checks it) names one
    model per side; its languages may be this config's in either order (the reverse direction
    of a back-translation round), and a vocabulary is turned around with them.
    """
    from mt.config import resolve_path

    d = cfg.data
    assert d.spm_from
    root = resolve_path(d.spm_from)
    path = root / "text.json"
    if not path.is_file():
        raise DataError(f"data.spm_from: {path} not found (expected a prepared data or model directory)")
    old = TextPipeline.load(root, num_threads=1)
    by_lang = {old.src_lang: old.spm_paths[0], old.tgt_lang: old.spm_paths[1]}
    for lang in (d.src_lang, d.tgt_lang):
        if lang not in by_lang:
            raise DataError(f"data.spm_from: {path} is for {old.src_lang}-{old.tgt_lang}, which has no {lang!r}")
    vocab = old.vocab
    inputs = list(by_lang.values())
    if vocab is not None:
        entry = read_json_object(path)["vocab"]  # the files whose content the ids depend on
        inputs += [root / entry["src"], root / entry["tgt"]]
        if d.src_lang != old.src_lang:
            vocab = vocab.swapped()
    files = [{"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in dict.fromkeys(inputs)]
    return by_lang[d.src_lang], by_lang[d.tgt_lang], vocab, {"format": "spm", "files": files}


def _fingerprint(inputs: dict[str, Any], cfg: ExperimentConfig) -> str:
    data = to_dict(cfg.data)
    data.pop("data_dir", None)  # where the files are does not change what they are
    data.pop("fetch", None)
    content_only = {split: _content_only(entry) for split, entry in inputs.items()}
    import sentencepiece

    blob = json.dumps(
        {"format": PREPARE_FORMAT, "inputs": content_only, "data": data, "spm": sentencepiece.__version__},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def expected_files(cfg: ExperimentConfig) -> list[str]:
    """Files a complete prepared directory holds (besides the spm model files)."""
    d = cfg.data
    names = ["manifest.json", "text.json"]
    splits = ["train"] + (["valid"] if d.valid is not None else []) + list(d.test)
    for split in splits:
        for lang in (d.src_lang, d.tgt_lang):
            names += [f"{split}.{lang}.bin", f"{split}.{lang}.idx"]
            if split != "train":
                names.append(f"{split}.{lang}.txt")
    return names


def is_up_to_date(cfg: ExperimentConfig, fingerprint: str) -> bool:
    out = cfg.data_path
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return old.get("fingerprint") == fingerprint and all((out / n).is_file() for n in expected_files(cfg))


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(itertools.islice(lines, size)):
        yield chunk


def _encode_file(text: TextPipeline, path: Path, side: str, prefix: Path, progress: bool, total: int) -> int:
    """Binarise an already-normalised text file; returns the number of tokens."""
    from tqdm import tqdm

    from mt.data.binarize import write_indexed

    encode = text.encode_source if side == "src" else text.encode_target
    n_tokens = 0
    bar = tqdm(total=total, desc=f"encode {prefix.name}", unit=" lines", disable=not progress, leave=False)

    def seqs() -> Iterator[list[int]]:
        nonlocal n_tokens
        for chunk in _chunks(read_lines(path), ENCODE_CHUNK):
            for ids in encode(chunk, normalized=True):
                n_tokens += len(ids)
                yield ids
            bar.update(len(chunk))

    write_indexed(prefix, seqs(), vocab_size=text.vocab_size)
    bar.close()
    return n_tokens


@dataclass
class _TrainCorpus:
    """One training corpus: its config, reader, and (once read) cleaning report and length units."""

    corpus: TrainCorpusConfig
    source: ParallelSource
    report: CleanReport = field(default_factory=CleanReport)
    lengths: Optional[Lengths] = None


@dataclass
class _SpmResult:
    src_model: Path
    tgt_model: Path
    vocab: Optional[Vocabulary]
    symbols: list[str]
    coverage: dict[str, Optional[float]]  # per side; None where the model was reused


def _clean_corpus(part: _TrainCorpus, cfg: ExperimentConfig, out: tuple[IO[str], IO[str]], progress: bool) -> None:
    """Stream one corpus through its cleaner (``data.clean`` + its overrides) into ``out``."""
    from tqdm import tqdm

    d = cfg.data
    cleaner = Cleaner(d.clean_for(part.corpus), d.src_lang, d.tgt_lang)
    part.lengths = cleaner.calibrate(part.source)  # reads the corpus's head; nothing for two spaced languages
    desc = f"read+clean {part.source.what}"
    pairs = tqdm(part.source, desc=desc, unit=" pairs", disable=not progress, mininterval=1.0, leave=False)
    for s, t in cleaner(pairs):
        out[0].write(s + "\n")
        out[1].write(t + "\n")
    cleaner.add_invalid_utf8(part.source.stats.invalid_utf8)
    part.report = cleaner.report
    if cleaner.report.kept == 0:
        raise DataError(
            f"{part.source.what}: no pairs left after cleaning (check data.clean settings):\n{cleaner.report.format()}"
        )


def _clean_train(parts: list[_TrainCorpus], cfg: ExperimentConfig, tmp: Path, progress: bool) -> tuple[Path, Path]:
    """All training corpora, cleaned and normalised, back to back in two text files."""
    d = cfg.data
    src_txt, tgt_txt = tmp / f"train.clean.{d.src_lang}", tmp / f"train.clean.{d.tgt_lang}"
    with open(src_txt, "w", encoding="utf-8", newline="\n") as fs, open(tgt_txt, "w", encoding="utf-8", newline="\n") as ft:
        for part in parts:
            _clean_corpus(part, cfg, (fs, ft), progress)
    return src_txt, tgt_txt


def _corpus_mix(parts: list[_TrainCorpus]) -> "CorpusMix":
    """Examples per epoch of each corpus, from its cleaned size and weight / upsample factor."""
    from mt.data.batching import CorpusMix, epoch_counts

    corpora = [p.corpus for p in parts]
    sizes = [p.report.kept for p in parts]
    if any(c.weight is not None for c in corpora):
        counts = epoch_counts(sizes, weights=[c.weight if c.weight is not None else 1.0 for c in corpora])
    else:
        counts = epoch_counts(sizes, upsample=[c.upsample or 1 for c in corpora])
    for part, count in zip(parts, counts):
        if count == 0:
            raise DataError(
                f"{part.source.what}: weight {part.corpus.weight} gives no example per epoch of {sum(counts)}; raise it"
            )
    return CorpusMix(tuple(c.name for c in corpora), tuple(sizes), tuple(counts))


def _train_spm(cfg: ExperimentConfig, tmp: Path, src_txt: Path, tgt_txt: Path, reused: Optional[tuple]) -> _SpmResult:
    """SentencePiece model(s) on the cleaned training text, or the ``data.spm_from`` ones."""
    d, s = cfg.data, cfg.data.spm
    symbols = list(dict.fromkeys(s.user_symbols + ([f"<2{d.tgt_lang}>"] if d.target_lang_tag else [])))
    if reused is not None:  # shared vocabulary: not retrained
        return _SpmResult(reused[0], reused[1], reused[2], symbols, {"src": None, "tgt": None})
    args = dict(
        vocab_size=s.vocab_size, model_type=s.model_type, byte_fallback=s.byte_fallback, user_symbols=symbols,
        input_sentence_size=s.input_sentence_size, seed=s.seed, num_threads=s.num_threads,
    )  # fmt: skip
    if s.joint:
        coverage = s.coverage_for((d.src_lang, d.tgt_lang))
        model = train_sentencepiece([src_txt, tgt_txt], tmp / "spm.train", character_coverage=coverage, **args)
        return _SpmResult(model, model, None, symbols, {"src": coverage, "tgt": coverage})
    cov = {"src": s.coverage_for((d.src_lang,)), "tgt": s.coverage_for((d.tgt_lang,))}
    src_model = train_sentencepiece([src_txt], tmp / "spm.train.src", character_coverage=cov["src"], **args)
    tgt_model = train_sentencepiece([tgt_txt], tmp / "spm.train.tgt", character_coverage=cov["tgt"], **args)
    return _SpmResult(src_model, tgt_model, None, symbols, cov)


def _text_pipeline(cfg: ExperimentConfig, spm: _SpmResult, tmp: Path) -> TextPipeline:
    """The TextPipeline with the pair's resolved normalisation, saved into ``tmp``."""
    d = cfg.data
    clean = d.clean.resolved(d.src_lang, d.tgt_lang)
    text = TextPipeline(
        d.src_lang, d.tgt_lang, spm.src_model, spm.tgt_model, clean.normalize_punct,
        unicode_form=clean.unicode_form, target_lang_tag=d.target_lang_tag, num_threads=d.spm.num_threads,
        vocab=spm.vocab,
    )  # fmt: skip
    text.save(tmp)
    for p in tmp.glob("spm.train*"):
        p.unlink()
    return text


def _encode_train(text: TextPipeline, cfg: ExperimentConfig, files: tuple[Path, Path], tmp: Path, progress: bool, n: int) -> dict[str, int]:
    """Binarise the cleaned training text; the text files are removed afterwards (the ids hold it)."""
    d = cfg.data
    counts = {"pairs": n}
    for side, lang, path in (("src", d.src_lang, files[0]), ("tgt", d.tgt_lang, files[1])):
        counts[f"{lang}_tokens"] = _encode_file(text, path, side, tmp / f"train.{lang}", progress, n)
        path.unlink()
    return counts


def _write_eval_split(
    name: str, source: ParallelSource | InterleavedSource, text: TextPipeline, cfg: ExperimentConfig, tmp: Path
) -> dict[str, Any]:
    """Valid/test: original lines to .txt, normalised + encoded to .bin/.idx (no filtering)."""
    from mt.data.binarize import write_indexed

    d = cfg.data
    pairs = list(source)
    if not pairs:
        raise DataError(f"{source.what}: corpus is empty")
    src_lines, tgt_lines = [p[0] for p in pairs], [p[1] for p in pairs]
    counts: dict[str, Any] = {"pairs": len(pairs), "invalid_utf8_dropped": source.stats.invalid_utf8}
    if isinstance(source, InterleavedSource):  # which lines came from which corpus: interleave_order(sizes)
        names = [p.corpus.label() for p in source.parts]
        names = [f"{n} [{i}]" if names.count(n) > 1 else n for i, n in enumerate(names)]  # keys of the valid records
        counts["parts"] = [{"name": name, "pairs": n} for name, n in zip(names, source.sizes)]
    for lang, lines, encode in ((d.src_lang, src_lines, text.encode_source), (d.tgt_lang, tgt_lines, text.encode_target)):
        with open(tmp / f"{name}.{lang}.txt", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
        ids = encode(lines)
        write_indexed(tmp / f"{name}.{lang}", ids, vocab_size=text.vocab_size)
        counts[f"{lang}_tokens"] = sum(len(x) for x in ids)
    return counts


def _train_corpora_report(parts: list[_TrainCorpus], mix: "CorpusMix") -> list[dict[str, Any]]:
    """The manifest's ``train_corpora``: per corpus its pairs, share of an epoch and clean counts.
    The trainer reads the mix back from it (:meth:`CorpusMix.from_manifest`)."""
    rows = []
    for part, row in zip(parts, mix.as_list()):
        c = part.corpus
        rows.append({**row, "weight": c.weight, "upsample": c.upsample, "test": list(c.test), "clean": part.report.as_dict(),
                     "lengths": part.lengths.as_dict() if part.lengths else None})  # fmt: skip
    return rows


@dataclass
class _Plan:
    """What a run reads: the readers, the inputs' description (sha256) and its fingerprint."""

    root: Path
    parts: list[_TrainCorpus]
    evals: dict[str, ParallelSource | InterleavedSource]
    inputs: dict[str, Any]
    reused: Optional[tuple[Path, Path, Optional[Vocabulary]]]  # data.spm_from: models + vocabulary
    fingerprint: str


@dataclass
class _Built:
    """What a run made, for the manifest and the summary."""

    report: CleanReport
    mix: "CorpusMix"
    spm: _SpmResult
    text: TextPipeline
    counts: dict[str, Any]
    padding: dict[str, float]


def _plan(cfg: ExperimentConfig, root: Path) -> _Plan:
    """Open every corpus, hash every input file and fingerprint them with the data config."""
    train, evals = _train_sources(cfg, root), _eval_sources(cfg, root)
    inputs = _describe_inputs(_corpora(cfg, train, evals))
    reused = None
    if cfg.data.spm_from:  # the reused model is an input: a different one changes every id
        spm_src, spm_tgt, spm_vocab, inputs["spm_from"] = _spm_from_files(cfg)
        reused = (spm_src, spm_tgt, spm_vocab)
    parts = [_TrainCorpus(c, s) for c, s in train]
    return _Plan(root, parts, evals, inputs, reused, _fingerprint(inputs, cfg))


def _build(cfg: ExperimentConfig, plan: _Plan, tmp: Path, progress: bool, timings: dict[str, float]) -> _Built:
    """Clean → SentencePiece → binarise into ``tmp``, timing each stage."""
    t = time.perf_counter()
    train_txt = _clean_train(plan.parts, cfg, tmp, progress)
    report = CleanReport.total([p.report for p in plan.parts])
    mix = _corpus_mix(plan.parts)
    timings["read_clean"] = time.perf_counter() - t
    _print_clean_reports(plan.parts, report, cfg)

    t = time.perf_counter()
    spm = _train_spm(cfg, tmp, *train_txt, plan.reused)
    text = _text_pipeline(cfg, spm, tmp)
    timings["spm_train"] = time.perf_counter() - t

    t = time.perf_counter()
    counts: dict[str, Any] = {"train": _encode_train(text, cfg, train_txt, tmp, progress, report.kept)}
    for name, source in plan.evals.items():
        counts[name] = _write_eval_split(name, source, text, cfg, tmp)
    timings["encode"] = time.perf_counter() - t
    return _Built(report, mix, spm, text, counts, _padding_stats(tmp, cfg, mix))


def valid_parts(data_dir: str | Path) -> list[tuple[str, int]]:
    """The corpora of an interleaved valid set and their sizes, from ``manifest.json``
    (``counts.valid.parts``); empty for one valid corpus or data prepared before parts were
    recorded. Line ``j`` of ``valid.*.txt`` is from part ``interleave_order(sizes)[j]``.
    A malformed record is an error, as :meth:`CorpusMix.from_manifest` treats ``train_corpora``."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        return []
    try:
        valid = json.loads(path.read_text(encoding="utf-8")).get("counts", {}).get("valid") or {}
        return [(str(p["name"]), int(p["pairs"])) for p in valid.get("parts") or []]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: counts.valid.parts: malformed ({e}); rerun `mt prepare --force`") from None


def _write_manifest(tmp: Path, cfg: ExperimentConfig, plan: _Plan, built: _Built, timings: dict[str, float]) -> None:
    d = cfg.data
    manifest = {
        "format": PREPARE_FORMAT,
        "fingerprint": plan.fingerprint,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data_dir": str(plan.root),
        "src_lang": d.src_lang,
        "tgt_lang": d.tgt_lang,
        "inputs": plan.inputs,
        "counts": built.counts,
        "clean": built.report.as_dict(),
        "train_corpora": _train_corpora_report(plan.parts, built.mix),
        "spm": _spm_manifest(cfg, built.spm, built.text),
        "padding": {"max_tokens": cfg.train.max_tokens, **built.padding},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "config": to_dict(d),
    }
    with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")


def prepare(
    cfg: ExperimentConfig, data_dir: Optional[str | Path] = None, force: bool = False, progress: bool = True
) -> Path:
    """Run the whole data stage for ``cfg``; returns ``cfg.data_path``. See the module docstring."""
    t_start = time.perf_counter()
    root = resolve_data_dir(data_dir, cfg.data.data_dir)
    if cfg.data.fetch and not _local_files_present(cfg, root):
        from mt.data.fetch import fetch_dataset

        fetch_dataset(cfg.data.fetch, data_dir=root, progress=progress)
    out = cfg.data_path
    plan = _plan(cfg, root)
    timings = {"hash_inputs": time.perf_counter() - t_start}
    if not force and is_up_to_date(cfg, plan.fingerprint):
        print(f"mt prepare: {out} is up to date (inputs and data config unchanged; --force rebuilds)")
        return out
    try:
        build = atomic_dir(out)  # creates the temporary directory now: report an unwritable out here
    except OSError as e:
        raise DataError(f"cannot write prepared data to {out}: {e.strerror or e}") from None
    with build as tmp:
        built = _build(cfg, plan, tmp, progress, timings)
        timings["total"] = time.perf_counter() - t_start
        _write_manifest(tmp, cfg, plan, built, timings)
    _print_summary(built, cfg, timings, out)
    return out


def _spm_manifest(cfg: ExperimentConfig, spm: _SpmResult, text: TextPipeline) -> dict[str, Any]:
    return {
        "settings": to_dict(cfg.data.spm),
        "user_symbols": spm.symbols,
        "character_coverage": spm.coverage,  # as used (settings: null = by script)
        "src_vocab_size": text.src_vocab_size,
        "tgt_vocab_size": text.tgt_vocab_size,
        "vocab_size": text.vocab_size,
        "text": text.config(),
    }


def _padding_stats(tmp: Path, cfg: ExperimentConfig, mix: Optional["CorpusMix"] = None) -> dict[str, float]:
    """Padding waste of the training batch sampler at ``train.max_tokens`` (epoch 0 of the mix)."""
    from mt.data.batching import TokenBatchSampler
    from mt.data.binarize import IndexedDataset

    d = cfg.data
    src = IndexedDataset(tmp / f"train.{d.src_lang}")
    tgt = IndexedDataset(tmp / f"train.{d.tgt_lang}")
    sampler = TokenBatchSampler(src.sizes, tgt.sizes, cfg.train.max_tokens, seed=cfg.train.seed, mix=mix)
    return sampler.padding_stats()


def _print_clean_reports(parts: list[_TrainCorpus], total: CleanReport, cfg: ExperimentConfig) -> None:
    d = cfg.data
    if len(parts) > 1:
        for part in parts:
            print(f"cleaning report ({part.source.what}, {d.src_lang}-{d.tgt_lang}):\n{part.report.format()}")
    for part in parts:
        if part.lengths and part.lengths.rescaled:
            print(f"{part.source.what}: {_describe_lengths(part.lengths, d.src_lang, d.tgt_lang)}")
    name = "data.train" if len(parts) == 1 else f"data.train, all {len(parts)} corpora"
    print(f"cleaning report ({name}, {d.src_lang}-{d.tgt_lang}):\n{total.format()}")


def _describe_lengths(lengths: Lengths, src_lang: str, tgt_lang: str) -> str:
    unit = {"word": "words", "char": "characters"}
    return (f"lengths counted in {src_lang} {unit[lengths.src_unit]} and {tgt_lang} {unit[lengths.tgt_unit]}; "
            f"typical ratio {lengths.scale:.3f} (median of the first pairs), max_tokens/max_ratio apply to rescaled lengths")  # fmt: skip


def _print_summary(built: _Built, cfg: ExperimentConfig, timings: dict[str, float], out: Path) -> None:
    d, counts, mix, text, padding = cfg.data, built.counts, built.mix, built.text, built.padding
    print(f"vocabulary: {text.vocab_size} pieces ({'joint' if text.joint else 'separate'}, {d.spm.model_type})")
    for split, c in counts.items():
        s_tok, t_tok = c[f"{d.src_lang}_tokens"], c[f"{d.tgt_lang}_tokens"]
        n = max(c["pairs"], 1)
        print(
            f"  {split:<12} {c['pairs']:>9} pairs  {d.src_lang} {s_tok / n:5.1f} / {d.tgt_lang} {t_tok / n:5.1f} subwords per sentence"
        )
    if len(mix.names) > 1:
        shares = ", ".join(f"{n} {c} of {s}" for n, s, c in zip(mix.names, mix.sizes, mix.counts))
        print(f"each epoch: {mix.epoch_size} examples ({shares})")
    print(
        f"batching at train.max_tokens={cfg.train.max_tokens}: {padding['batches']} batches, "
        f"{padding['mean_sentences_per_batch']:.1f} sentences/batch, padding waste {100 * padding['padding_waste']:.1f}%"
    )
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    print(f"prepared data written to {out}")
