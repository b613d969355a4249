"""One reader interface for parallel and monolingual corpora.

Every reader is a generator of ``(src, tgt)`` string pairs (or of lines, for monolingual
text), so a corpus larger than memory streams through cleaning and encoding. Supported:

* ``text``  two aligned plain-text files, one sentence per line;
* ``tsv``   one file, tab-separated columns (no CSV quoting);
* ``jsonl`` one JSON object per line, flat (``{"de": .., "en": ..}``) or translation-style
  (``{"translation": {"de": .., "en": ..}}``); fields may be dotted paths;
* ``hf``    a Hugging Face ``datasets`` dataset: a local ``save_to_disk`` directory, local
  json/jsonl/csv/parquet files, or a hub name (streamed, so nothing is downloaded up front).

Files are read as bytes and decoded line by line, so an undecodable line is reported with
its file and 1-based line number (``invalid_utf8="error"``) or dropped and counted
(``"drop"``) — decoding a whole file at once could do neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Literal, Optional

from mt.config import CorpusConfig, resolve_path
from mt.data import DataError

InvalidUtf8 = Literal["drop", "error"]
Pair = tuple[str, str]

_HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class ReadStats:
    """What a reader saw: pairs (or lines) yielded and ones dropped as invalid UTF-8."""

    yielded: int = 0
    invalid_utf8: int = 0


# --------------------------------------------------------------------------- low level


def resolve_input(path: str | Path, data_dir: Optional[str | Path] = None) -> Path:
    """``path`` with ``~``/``$VARS`` expanded; relative paths are taken from ``data_dir``."""
    p = resolve_path(str(path))
    if not p.is_absolute() and data_dir is not None:
        p = Path(data_dir) / p
    return p


def _open(path: Path, what: str) -> IO[bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: file not found: {path}")
    return open(path, "rb")


def _decode(raw: bytes, path: Path, lineno: int, policy: InvalidUtf8) -> Optional[str]:
    """One line's bytes (newline included) as text; ``None`` if undecodable under ``drop``."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):  # CRLF files
            raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if policy == "error":
            raise DataError(
                f"{path}:{lineno}: invalid UTF-8 at byte {e.start} of the line "
                f"(set data.clean.invalid_utf8: drop to skip such lines)"
            ) from None
        return None
    if lineno == 1 and text.startswith("\ufeff"):  # byte-order mark written by some editors
        text = text[1:]
    return text


def _decoded_lines(path: Path, what: str, policy: InvalidUtf8) -> Iterator[tuple[int, Optional[str]]]:
    """``(lineno, text or None)`` for every line of ``path``."""
    with _open(path, what) as f:
        for lineno, raw in enumerate(f, 1):
            yield lineno, _decode(raw, path, lineno, policy)


# --------------------------------------------------------------------------- readers


def read_monolingual(
    path: str | Path, invalid_utf8: InvalidUtf8 = "error", stats: Optional[ReadStats] = None,
    what: str = "monolingual corpus",
) -> Iterator[str]:
    """Lines of a plain-text file (newline removed), decoded one at a time.

    A file without a single non-blank decodable line raises :class:`DataError` once read to the
    end: translating it would quietly produce nothing."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    lines = has_text = 0
    for lines, text in _decoded_lines(path, what, invalid_utf8):
        if text is None:
            stats.invalid_utf8 += 1
            continue
        stats.yielded += 1
        has_text = has_text or bool(text.strip())
        yield text
    if not has_text:
        detail = "the file is empty" if lines == 0 else f"all {lines} lines are blank or invalid UTF-8"
        raise DataError(f"{what}: {path}: no text ({detail})")


def read_text_pair(
    src: str | Path,
    tgt: str | Path,
    invalid_utf8: InvalidUtf8 = "error",
    stats: Optional[ReadStats] = None,
    what: str = "corpus",
) -> Iterator[Pair]:
    """Aligned lines of two files. Different line counts raise, naming both files and counts."""
    src, tgt = Path(src), Path(tgt)
    stats = stats if stats is not None else ReadStats()
    with _open(src, f"{what}.src") as fs, _open(tgt, f"{what}.tgt") as ft:
        lineno = 0
        while True:
            raw_s, raw_t = fs.readline(), ft.readline()
            if not raw_s or not raw_t:
                if raw_s or raw_t:  # one file ended first: count the rest to report both totals
                    longer = fs if raw_s else ft
                    rest = 1 + sum(1 for _ in longer)
                    n_src = lineno + (rest if raw_s else 0)
                    n_tgt = lineno + (rest if raw_t else 0)
                    raise DataError(
                        f"{what}: line counts differ: {src} has {n_src} lines, {tgt} has {n_tgt} lines "
                        f"(first line without a partner: {src if raw_s else tgt}:{lineno + 1})"
                    )
                return
            lineno += 1
            s = _decode(raw_s, src, lineno, invalid_utf8)
            t = _decode(raw_t, tgt, lineno, invalid_utf8)
            if s is None or t is None:
                stats.invalid_utf8 += 1
                continue
            stats.yielded += 1
            yield s, t


def _column(field: Optional[str], default: int, header: Optional[list[str]], path: Path, what: str) -> int:
    if field is None:
        return default
    if header is None:
        return int(field)
    if field not in header:
        raise DataError(f"{what}: column {field!r} not in the header of {path} ({', '.join(header)})")
    return header.index(field)


def read_tsv(
    path: str | Path,
    src_field: Optional[str] = None,
    tgt_field: Optional[str] = None,
    header: bool = False,
    invalid_utf8: InvalidUtf8 = "error",
    stats: Optional[ReadStats] = None,
    what: str = "corpus",
) -> Iterator[Pair]:
    """Pairs from tab-separated columns (0-based numbers, or names when ``header``)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    names: Optional[list[str]] = None
    cols: Optional[tuple[int, int]] = None
    for lineno, text in _decoded_lines(path, f"{what}.path", invalid_utf8):
        if text is None:
            stats.invalid_utf8 += 1
            continue
        fields = text.split("\t")
        if cols is None:
            if header:
                names = fields
                cols = (_column(src_field, 0, names, path, what), _column(tgt_field, 1, names, path, what))
                continue
            cols = (_column(src_field, 0, None, path, what), _column(tgt_field, 1, None, path, what))
        if len(fields) <= max(cols):
            raise DataError(f"{path}:{lineno}: expected at least {max(cols) + 1} tab-separated columns, got {len(fields)}")
        stats.yielded += 1
        yield fields[cols[0]], fields[cols[1]]


def _get_field(record: Any, field: str) -> Any:
    """``record["a"]["b"]`` for field ``"a.b"``; raises KeyError when absent."""
    for part in field.split("."):
        if not isinstance(record, dict) or part not in record:
            raise KeyError(field)
        record = record[part]
    return record


def _row_pair(record: Any, src_field: str, tgt_field: str) -> Pair:
    """Source and target strings of one JSON/HF record (KeyError/TypeError when malformed)."""
    s, t = _get_field(record, src_field), _get_field(record, tgt_field)
    if not isinstance(s, str) or not isinstance(t, str):
        raise TypeError(f"fields {src_field!r}/{tgt_field!r} must be strings, got {type(s).__name__}/{type(t).__name__}")
    return s, t


def _default_fields(record: Any, src_lang: str, tgt_lang: str) -> tuple[str, str]:
    if isinstance(record, dict) and isinstance(record.get("translation"), dict):
        return f"translation.{src_lang}", f"translation.{tgt_lang}"
    return src_lang, tgt_lang


def read_jsonl(
    path: str | Path,
    src_lang: str,
    tgt_lang: str,
    src_field: Optional[str] = None,
    tgt_field: Optional[str] = None,
    invalid_utf8: InvalidUtf8 = "error",
    stats: Optional[ReadStats] = None,
    what: str = "corpus",
) -> Iterator[Pair]:
    """Pairs from JSON lines; fields default to the language codes (flat or translation-style)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    for lineno, text in _decoded_lines(path, f"{what}.path", invalid_utf8):
        if text is None:
            stats.invalid_utf8 += 1
            continue
        if not text.strip():
            continue  # blank lines are not records
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
        stats.yielded += 1
        yield _record_pair(record, src_lang, tgt_lang, src_field, tgt_field, f"{path}:{lineno}: record")


def _record_pair(
    record: Any, src_lang: str, tgt_lang: str, src_field: Optional[str], tgt_field: Optional[str], where: str
) -> Pair:
    """``(src, tgt)`` of a JSONL record or dataset row; errors start with ``where``."""
    sf, tf = _default_fields(record, src_lang, tgt_lang)
    try:
        return _row_pair(record, src_field or sf, tgt_field or tf)
    except KeyError as e:
        fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where} has no field {e.args[0]!r} (fields: {fields})") from None
    except TypeError as e:
        raise DataError(f"{where}: {e}") from None


def _load_hf(path: str, split: str, hf_config: Optional[str], streaming: Optional[bool], data_dir: Optional[Path]) -> Any:
    """A ``datasets`` Dataset/IterableDataset for a local path or hub name."""
    import datasets  # heavy import: only when an HF corpus is used

    local = resolve_input(path, data_dir)
    if local.exists():
        if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            ds = datasets.load_from_disk(str(local))  # written by Dataset(Dict).save_to_disk
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{local}: no split {split!r} (has {', '.join(ds)})")
                ds = ds[split]
            return ds.to_iterable_dataset() if streaming else ds
        if local.is_file():
            builder = _HF_FILE_BUILDERS.get(local.suffix)
            if builder is None:
                raise DataError(f"{local}: unsupported file type for format 'hf' (use {', '.join(_HF_FILE_BUILDERS)})")
            return datasets.load_dataset(builder, data_files={split: str(local)}, split=split, streaming=bool(streaming))
        return datasets.load_dataset(str(local), hf_config, split=split, streaming=bool(streaming))
    # a hub name: stream by default so a large corpus is never materialised
    return datasets.load_dataset(path, hf_config, split=split, streaming=True if streaming is None else streaming)


def read_hf(
    path: str,
    src_lang: str,
    tgt_lang: str,
    split: str = "train",
    src_field: Optional[str] = None,
    tgt_field: Optional[str] = None,
    hf_config: Optional[str] = None,
    streaming: Optional[bool] = None,
    data_dir: Optional[str | Path] = None,
    stats: Optional[ReadStats] = None,
    what: str = "corpus",
) -> Iterator[Pair]:
    """Pairs from a Hugging Face dataset (rows flat or ``{"translation": {...}}``)."""
    stats = stats if stats is not None else ReadStats()
    try:
        ds = _load_hf(path, split, hf_config, streaming, Path(data_dir) if data_dir is not None else None)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (hub offline, missing config, ...)
        raise DataError(f"{what}.path: cannot load Hugging Face dataset {path!r} (split {split!r}): {e}") from e
    for i, row in enumerate(ds):
        stats.yielded += 1
        yield _record_pair(row, src_lang, tgt_lang, src_field, tgt_field, f"{what}: dataset {path!r} row {i}")


# --------------------------------------------------------------------------- interface


class ParallelSource:
    """A configured parallel corpus: iterate it for ``(src, tgt)`` pairs (streamed, re-iterable).

    ``what`` names the config field in errors (``data.train``). ``stats`` describes the
    last completed or current pass.
    """

    def __init__(
        self,
        corpus: CorpusConfig,
        src_lang: str,
        tgt_lang: str,
        data_dir: Optional[str | Path] = None,
        invalid_utf8: InvalidUtf8 = "error",
        what: str = "corpus",
    ) -> None:
        self.corpus = corpus
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.invalid_utf8 = invalid_utf8
        self.what = what
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[Pair]:
        c, stats = self.corpus, ReadStats()
        self.stats = stats
        if c.format == "text":
            assert c.src and c.tgt
            return read_text_pair(
                resolve_input(c.src, self.data_dir), resolve_input(c.tgt, self.data_dir), self.invalid_utf8, stats, self.what
            )
        assert c.path
        if c.format == "tsv":
            return read_tsv(
                resolve_input(c.path, self.data_dir), c.src_field, c.tgt_field, c.header, self.invalid_utf8, stats, self.what
            )
        if c.format == "jsonl":
            return read_jsonl(
                resolve_input(c.path, self.data_dir), self.src_lang, self.tgt_lang, c.src_field, c.tgt_field,
                self.invalid_utf8, stats, self.what,
            )
        return read_hf(
            c.path, self.src_lang, self.tgt_lang, c.split, c.src_field, c.tgt_field, c.hf_config, c.streaming,
            self.data_dir, stats, self.what,
        )

    def files(self) -> list[Path]:
        """Local files this corpus reads (for hashing); empty for a hub dataset."""
        c = self.corpus
        if c.format == "text":
            assert c.src and c.tgt
            paths = [resolve_input(c.src, self.data_dir), resolve_input(c.tgt, self.data_dir)]
        else:
            assert c.path
            p = resolve_input(c.path, self.data_dir)
            if c.format == "hf" and not p.exists():
                return []  # hub name
            paths = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for p in paths:
            if not p.is_file():
                field = "path" if c.format != "text" else ("src" if p == paths[0] else "tgt")
                raise FileNotFoundError(f"{self.what}.{field}: file not found: {p}")
        return paths


def open_corpus(
    corpus: CorpusConfig,
    src_lang: str,
    tgt_lang: str,
    data_dir: Optional[str | Path] = None,
    invalid_utf8: InvalidUtf8 = "error",
    what: str = "corpus",
) -> ParallelSource:
    """The reader for ``corpus``; see :class:`ParallelSource`."""
    return ParallelSource(corpus, src_lang, tgt_lang, data_dir, invalid_utf8, what)


def interleave_order(sizes: list[int]) -> list[int]:
    """The list each position of :func:`interleave`'s result comes from, for lists of these
    sizes: item ``i`` of a list of ``n`` goes to relative position ``(i + 0.5) / n`` (ties in
    list order), so every prefix holds each list in proportion to its length."""
    keyed = sorted(((i + 0.5) / n, k) for k, n in enumerate(sizes) for i in range(n))
    return [k for _, k in keyed]


def interleave(lists: list[list[Any]]) -> list[Any]:
    """All items of ``lists``, each list spread evenly over the result (:func:`interleave_order`)."""
    its = [iter(items) for items in lists]
    return [next(its[k]) for k in interleave_order([len(items) for items in lists])]


class InterleavedSource:
    """Several corpora read as one, interleaved (:func:`interleave`): a tuning set drawn from
    several domains, of which every prefix (the first ``train.valid_bleu_sentences`` pairs
    that validation decodes) samples each corpus in proportion. Reads every pair into memory:
    for valid and test sets, not for training corpora."""

    def __init__(self, parts: list[ParallelSource], what: str) -> None:
        self.parts, self.what = parts, what
        self.stats = ReadStats()
        self.sizes: list[int] = []  # pairs read from each part, known once iterated

    def __iter__(self) -> Iterator[Pair]:
        pairs = [list(part) for part in self.parts]
        self.stats = ReadStats(sum(p.stats.yielded for p in self.parts), sum(p.stats.invalid_utf8 for p in self.parts))
        self.sizes = [len(p) for p in pairs]
        return iter(interleave(pairs))

    def files(self) -> list[Path]:
        return [f for part in self.parts for f in part.files()]


def open_corpora(
    corpora: CorpusConfig | list[CorpusConfig],
    src_lang: str,
    tgt_lang: str,
    data_dir: Optional[str | Path] = None,
    invalid_utf8: InvalidUtf8 = "error",
    what: str = "corpus",
) -> ParallelSource | InterleavedSource:
    """The reader for one corpus, or for a list of them interleaved (``data.valid``)."""
    if not isinstance(corpora, list):
        return open_corpus(corpora, src_lang, tgt_lang, data_dir, invalid_utf8, what)
    parts = [open_corpus(c, src_lang, tgt_lang, data_dir, invalid_utf8, f"{what}[{i}]") for i, c in enumerate(corpora)]
    return InterleavedSource(parts, what)

