"""The ``mt prepare`` stage: fetch → read → clean → SentencePiece → binarise, with a manifest.

Output (``cfg.data_path``, layout in docs/CONTRACTS.md)::

    manifest.json               inputs (sha256), counts, clean report, spm settings, config
    text.json, spm*.model       the TextPipeline
    train.<lang>.bin/.idx       cleaned, normalised, encoded training pairs
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
from pathlib import Path
from typing import Any, Iterator, Optional

from mt.config import ExperimentConfig, to_dict
from mt.data import DataError
from mt.data.clean import Cleaner, CleanReport
from mt.data.fetch import resolve_data_dir
from mt.fileio import atomic_dir, read_lines, sha256_file
from mt.data.sources import ParallelSource, open_corpus
from mt.data.text import TextPipeline, train_sentencepiece

PREPARE_FORMAT = 1  # bump when the output changes for the same inputs and config
ENCODE_CHUNK = 20_000  # lines per sentencepiece batch call


def _corpora(cfg: ExperimentConfig, data_dir: Path) -> dict[str, ParallelSource]:
    """Split name → reader: ``train``, ``valid`` (if configured) and each test set."""
    d = cfg.data
    policy = d.clean.invalid_utf8
    corpora = {}
    assert d.train is not None  # validated
    corpora["train"] = open_corpus(d.train, d.src_lang, d.tgt_lang, data_dir, policy, "data.train")
    if d.valid is not None:
        corpora["valid"] = open_corpus(d.valid, d.src_lang, d.tgt_lang, data_dir, policy, "data.valid")
    for name, corpus in d.test.items():
        corpora[name] = open_corpus(corpus, d.src_lang, d.tgt_lang, data_dir, policy, f"data.test.{name}")
    return corpora


def _local_files_present(cfg: ExperimentConfig, data_dir: Path) -> bool:
    """Whether every file the config reads is already there (then ``data.fetch`` has nothing
    to do, even where the dataset's other files, e.g. other languages, were never fetched)."""
    try:
        return all(p.is_file() for source in _corpora(cfg, data_dir).values() for p in source.files())
    except (DataError, OSError):
        return False


def _describe_inputs(corpora: dict[str, ParallelSource]) -> dict[str, Any]:
    """What each split reads, with sha256 of every local file (missing files raise here)."""
    out: dict[str, Any] = {}
    for split, source in corpora.items():
        c = source.corpus
        entry: dict[str, Any] = {"format": c.format}
        files = source.files()
        entry["files"] = [{"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files]
        if c.format == "hf" and not files:
            # hub dataset: identified by name/config/split; changes upstream are not detected
            entry["hub"] = {"name": c.path, "config": c.hf_config, "split": c.split}
        out[split] = entry
    return out


def _spm_from_files(cfg: ExperimentConfig) -> tuple[Path, Path, dict[str, Any]]:
    """``data.spm_from``: the (source, target) SentencePiece model files to reuse, by language.

    The directory's ``text.json`` names one model per side; its languages may be this
    config's in either order (the reverse direction of a back-translation round).
    """
    from mt.config import resolve_path

    d = cfg.data
    assert d.spm_from
    root = resolve_path(d.spm_from)
    path = root / "text.json"
    if not path.is_file():
        raise DataError(f"data.spm_from: {path} not found (expected a prepared data or model directory)")
    old = json.loads(path.read_text(encoding="utf-8"))
    by_lang = {old["src_lang"]: root / old["spm"]["src"], old["tgt_lang"]: root / old["spm"]["tgt"]}
    for lang in (d.src_lang, d.tgt_lang):
        if lang not in by_lang:
            raise DataError(f"data.spm_from: {path} is for {old['src_lang']}-{old['tgt_lang']}, which has no {lang!r}")
    files = [{"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in dict.fromkeys(by_lang.values())]
    return by_lang[d.src_lang], by_lang[d.tgt_lang], {"format": "spm", "files": files}


def _fingerprint(inputs: dict[str, Any], cfg: ExperimentConfig) -> str:
    data = to_dict(cfg.data)
    data.pop("data_dir", None)  # where the files are does not change what they are
    data.pop("fetch", None)
    content_only = {
        split: {k: ([f["sha256"] for f in v] if k == "files" else v) for k, v in entry.items()}
        for split, entry in inputs.items()
    }
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


def _clean_train(
    source: ParallelSource, cfg: ExperimentConfig, tmp: Path, progress: bool
) -> tuple[CleanReport, Path, Path]:
    """Stream the training pairs through the cleaner into normalised text files."""
    from tqdm import tqdm

    d = cfg.data
    cleaner = Cleaner(d.clean, d.src_lang, d.tgt_lang)
    src_txt, tgt_txt = tmp / f"train.clean.{d.src_lang}", tmp / f"train.clean.{d.tgt_lang}"
    with open(src_txt, "w", encoding="utf-8", newline="\n") as fs, open(tgt_txt, "w", encoding="utf-8", newline="\n") as ft:
        pairs = tqdm(source, desc="read+clean train", unit=" pairs", disable=not progress, mininterval=1.0, leave=False)
        for s, t in cleaner(pairs):
            fs.write(s + "\n")
            ft.write(t + "\n")
    cleaner.add_invalid_utf8(source.stats.invalid_utf8)
    if cleaner.report.kept == 0:
        raise DataError(
            f"data.train: no pairs left after cleaning (check data.clean settings):\n{cleaner.report.format()}"
        )
    return cleaner.report, src_txt, tgt_txt


def _write_eval_split(
    name: str, source: ParallelSource, text: TextPipeline, cfg: ExperimentConfig, tmp: Path
) -> dict[str, int]:
    """Valid/test: original lines to .txt, normalised + encoded to .bin/.idx (no filtering)."""
    from mt.data.binarize import write_indexed

    d = cfg.data
    pairs = list(source)
    if not pairs:
        raise DataError(f"{source.what}: corpus is empty")
    src_lines, tgt_lines = [p[0] for p in pairs], [p[1] for p in pairs]
    counts = {"pairs": len(pairs), "invalid_utf8_dropped": source.stats.invalid_utf8}
    for lang, lines, encode in ((d.src_lang, src_lines, text.encode_source), (d.tgt_lang, tgt_lines, text.encode_target)):
        with open(tmp / f"{name}.{lang}.txt", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
        ids = encode(lines)
        write_indexed(tmp / f"{name}.{lang}", ids, vocab_size=text.vocab_size)
        counts[f"{lang}_tokens"] = sum(len(x) for x in ids)
    return counts


def prepare(
    cfg: ExperimentConfig, data_dir: Optional[str | Path] = None, force: bool = False, progress: bool = True
) -> Path:
    """Run the whole data stage for ``cfg``; returns ``cfg.data_path``. See the module docstring."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    d = cfg.data
    root = resolve_data_dir(data_dir, d.data_dir)
    if d.fetch and not _local_files_present(cfg, root):
        from mt.data.fetch import fetch_dataset

        fetch_dataset(d.fetch, data_dir=root, progress=progress)
    out = cfg.data_path

    t = time.perf_counter()
    corpora = _corpora(cfg, root)
    inputs = _describe_inputs(corpora)
    if d.spm_from:  # the reused model is an input: a different one changes every id
        spm_src, spm_tgt, inputs["spm_from"] = _spm_from_files(cfg)
    fingerprint = _fingerprint(inputs, cfg)
    timings["hash_inputs"] = time.perf_counter() - t
    if not force and is_up_to_date(cfg, fingerprint):
        print(f"mt prepare: {out} is up to date (inputs and data config unchanged; --force rebuilds)")
        return out

    try:
        build = atomic_dir(out)  # creates the temporary directory now: report an unwritable out here
    except OSError as e:
        raise DataError(f"cannot write prepared data to {out}: {e.strerror or e}") from None
    with build as tmp:
        # 1. read + clean the training pairs into normalised text
        t = time.perf_counter()
        report, src_txt, tgt_txt = _clean_train(corpora["train"], cfg, tmp, progress)
        timings["read_clean"] = time.perf_counter() - t
        print(f"cleaning report (data.train, {d.src_lang}-{d.tgt_lang}):\n{report.format()}")

        # 2. SentencePiece on the cleaned training text
        t = time.perf_counter()
        s = d.spm
        symbols = list(dict.fromkeys(s.user_symbols + ([f"<2{d.tgt_lang}>"] if d.target_lang_tag else [])))
        spm_args = dict(
            vocab_size=s.vocab_size, model_type=s.model_type, character_coverage=s.character_coverage,
            byte_fallback=s.byte_fallback, user_symbols=symbols, input_sentence_size=s.input_sentence_size,
            seed=s.seed, num_threads=s.num_threads,
        )
        if d.spm_from:
            src_model, tgt_model = spm_src, spm_tgt  # shared vocabulary: not retrained
        elif s.joint:
            src_model = tgt_model = train_sentencepiece([src_txt, tgt_txt], tmp / "spm.train", **spm_args)
        else:
            src_model = train_sentencepiece([src_txt], tmp / "spm.train.src", **spm_args)
            tgt_model = train_sentencepiece([tgt_txt], tmp / "spm.train.tgt", **spm_args)
        text = TextPipeline(
            d.src_lang, d.tgt_lang, src_model, tgt_model, d.clean.normalize_punct,
            unicode_form=d.clean.unicode_form, target_lang_tag=d.target_lang_tag, num_threads=s.num_threads,
        )
        text.save(tmp)
        for p in tmp.glob("spm.train*"):
            p.unlink()
        timings["spm_train"] = time.perf_counter() - t

        # 3. binarise
        t = time.perf_counter()
        counts: dict[str, Any] = {"train": {"pairs": report.kept}}
        for side, lang, path in (("src", d.src_lang, src_txt), ("tgt", d.tgt_lang, tgt_txt)):
            counts["train"][f"{lang}_tokens"] = _encode_file(text, path, side, tmp / f"train.{lang}", progress, report.kept)
            path.unlink()  # normalised text is recoverable from the ids; do not keep a copy
        for name, source in corpora.items():
            if name != "train":
                counts[name] = _write_eval_split(name, source, text, cfg, tmp)
        timings["encode"] = time.perf_counter() - t

        padding = _padding_stats(tmp, cfg)
        timings["total"] = time.perf_counter() - t_start
        manifest = {
            "format": PREPARE_FORMAT,
            "fingerprint": fingerprint,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "data_dir": str(root),
            "src_lang": d.src_lang,
            "tgt_lang": d.tgt_lang,
            "inputs": inputs,
            "counts": counts,
            "clean": report.as_dict(),
            "spm": {
                "settings": to_dict(s),
                "user_symbols": symbols,
                "src_vocab_size": text.src_vocab_size,
                "tgt_vocab_size": text.tgt_vocab_size,
                "vocab_size": text.vocab_size,
                "text": text.config(),
            },
            "padding": {"max_tokens": cfg.train.max_tokens, **padding},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "config": to_dict(d),
        }
        with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")

    _print_summary(counts, text, padding, cfg, timings, out)
    return out


def _padding_stats(tmp: Path, cfg: ExperimentConfig) -> dict[str, float]:
    """Padding waste of the training batch sampler at ``train.max_tokens``."""
    from mt.data.batching import TokenBatchSampler
    from mt.data.binarize import IndexedDataset

    d = cfg.data
    src = IndexedDataset(tmp / f"train.{d.src_lang}")
    tgt = IndexedDataset(tmp / f"train.{d.tgt_lang}")
    return TokenBatchSampler(src.sizes, tgt.sizes, cfg.train.max_tokens, seed=cfg.train.seed).padding_stats()


def _print_summary(
    counts: dict[str, Any], text: TextPipeline, padding: dict[str, float], cfg: ExperimentConfig,
    timings: dict[str, float], out: Path,
) -> None:
    d = cfg.data
    print(f"vocabulary: {text.vocab_size} pieces ({'joint' if text.joint else 'separate'}, {d.spm.model_type})")
    for split, c in counts.items():
        s_tok, t_tok = c[f"{d.src_lang}_tokens"], c[f"{d.tgt_lang}_tokens"]
        n = max(c["pairs"], 1)
        print(
            f"  {split:<12} {c['pairs']:>9} pairs  {d.src_lang} {s_tok / n:5.1f} / {d.tgt_lang} {t_tok / n:5.1f} subwords per sentence"
        )
    print(
        f"batching at train.max_tokens={cfg.train.max_tokens}: {padding['batches']} batches, "
        f"{padding['mean_sentences_per_batch']:.1f} sentences/batch, padding waste {100 * padding['padding_waste']:.1f}%"
    )
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    print(f"prepared data written to {out}")
