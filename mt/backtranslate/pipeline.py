"""``mt backtranslate CONFIG [--resume]``: iterative back-translation (Sennrich et al. 2016;
Edunov et al. 2018; Hoang et al. 2018).

The config's ``data`` section is the forward direction source→target (say de→en) with bitext
B; the reverse direction target→source swaps it. ``backtranslate.mono_tgt`` is target text M_t
(English), ``mono_src`` optional source text M_s (German). Rounds::

    round 0   train forward and reverse on B (bitext-only baselines), evaluate both
    round r   1. reverse model: round 1 reuses round 0's; from round 2 (with M_s) it is trained
                 on B + (forward_{r-1}(M_s), M_s), i.e. forward-translated English → real German
              2. reverse_r translates M_t into synthetic sources (sampling by default)
              3. filter the synthetic pairs (empty / too long / length ratio / duplicates)
              4. train forward_r on B × upsample + (synthetic source, M_t), optionally tagging
                 synthetic sources with `<bt>` and starting from forward_{r-1}'s weights
              5. evaluate both directions on valid and every test set; one report row
              6. with ``control: true``, the control: forward trained on B alone from the same
                 start for as many updates as forward_r took (``round<r>/control``)

Every stage has its own directory under ``run_dir`` (``round<r>/forward``, ``round<r>/gen_forward``,
...); each training stage is a normal ``mt train`` run directory with its own prepared data,
all sharing one SentencePiece model (``data.spm_from``). ``bt_manifest.json`` records each
finished stage with its result and wall time; ``--resume`` skips finished stages, resumes an
interrupted training from its last checkpoint and an interrupted generation at its first
missing shard.

Not detected: monolingual text in the wrong language (English text given as M_s, say). It is
translated like any other and only shows up as worse scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from mt.backtranslate import filter as bt_filter
from mt.backtranslate import generate as gen
from mt.backtranslate.report import write_report
from mt.config import ConfigError, DecodeOptions, ExperimentConfig, from_dict, to_dict
from mt.data.clean import CALIBRATION_PAIRS, Cleaner, Lengths
from mt.fileio import atomic_dir, atomic_write_json, atomic_write_text, exclusive_dir, read_lines
from mt.runtime import bound_kernel_caches, peak_rss_window, rss_mib, trim_heap

MANIFEST = "bt_manifest.json"
CHILD_PEAK = "child_rss_peak_mib"  # a stage result's field: the peak RSS of the process it ran
# Back-translation from reverse models under this valid BLEU did no better than a bitext-only
# control in any measurement of docs/ablations.md (Multi30k reverse models of 7 and 22 BLEU lost
# 9 and 3 BLEU; ChrEn's of 5-8 BLEU moved BLEU by -0.9 to +0.07 and lost chrF every time): the
# pipeline warns, it does not refuse.
WEAK_REVERSE_BLEU = 20.0
Direction = Literal["forward", "reverse"]


# --------------------------------------------------------------------------- manifest


class Manifest:
    """``bt_manifest.json``: per stage its status, result, start/end time and wall seconds.

    Rewritten atomically after every change, so a kill at any moment leaves either the old
    or the new version, and a stage counts as finished only once its outputs exist.
    """

    def __init__(self, path: Path, data: Optional[dict[str, Any]] = None, label: str = "mt backtranslate") -> None:
        self.path = path
        self.data = data or {"format": 1, "stages": {}}
        self.label = label  # the prefix of its progress lines (`mt recipe run` keeps one too)

    @classmethod
    def load(cls, path: Path, label: str = "mt backtranslate") -> "Manifest":
        if path.is_file():
            return cls(path, json.loads(path.read_text(encoding="utf-8")), label)
        return cls(path, label=label)

    @property
    def stages(self) -> dict[str, Any]:
        return self.data["stages"]

    def done(self, name: str) -> bool:
        return self.stages.get(name, {}).get("status") == "done"

    def result(self, name: str) -> dict[str, Any]:
        return self.stages[name]["result"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)

    def run(self, name: str, fn: Callable[[], Optional[dict[str, Any]]]) -> dict[str, Any]:
        """Run stage ``name`` unless it is recorded as done; returns its (recorded) result."""
        if self.done(name):
            print(f"{self.label}: {name}: done earlier, skipped", file=sys.stderr)
            return self.result(name)
        print(f"{self.label}: === {name} ===", file=sys.stderr, flush=True)
        now = lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")  # noqa: E731
        entry = {"status": "running", "started": now(), "attempts": self.stages.get(name, {}).get("attempts", 0) + 1}
        self.stages[name] = entry
        self.save()
        t0 = time.perf_counter()
        try:
            with peak_rss_window() as window:  # this stage's own peak, not the process's so far
                result = fn() or {}
        except BaseException as e:
            entry.update(status="failed", error=f"{type(e).__name__}: {e}", seconds=round(time.perf_counter() - t0, 2))
            self.save()
            raise
        entry.update(status="done", finished=now(), seconds=round(time.perf_counter() - t0, 2), result=result)
        entry.update(_stage_memory(window, result))
        self.save()
        return result


def _stage_memory(window: dict[str, float], result: dict[str, Any]) -> dict[str, float]:
    """Peak RSS of the stage just finished (its ``peak_rss_window``, plus the peak of a child
    process the stage ran, ``result[CHILD_PEAK]``, since both were alive at once), then its RSS
    once the heap's free memory is given back (``trim_heap``): what the next stage starts
    from. MiB; absent where unknown."""
    out = {"rss_peak_mib": window["peak_mib"] + result.get(CHILD_PEAK, 0.0)} if "peak_mib" in window else {}
    trim_heap()
    end = rss_mib()
    if end is not None:
        out["rss_end_mib"] = end
    return out


# --------------------------------------------------------------------------- configs per stage


def swap_corpus(corpus: dict[str, Any], where: str) -> dict[str, Any]:
    """A corpus dict (``to_dict(CorpusConfig)``) read the other way round."""
    c = dict(corpus)
    if c["format"] == "text":
        c["src"], c["tgt"] = c["tgt"], c["src"]
    elif c["format"] == "tsv":
        if c.get("header") and (c.get("src_field") is None or c.get("tgt_field") is None):
            raise ConfigError(f"{where}: set src_field and tgt_field explicitly to back-translate a TSV with a header")
        src, tgt = c.get("src_field"), c.get("tgt_field")
        c["src_field"] = tgt if tgt is not None else "1"
        c["tgt_field"] = src if src is not None else "0"
    else:  # jsonl / hf: unset fields default to the language codes, which swap with the languages
        c["src_field"], c["tgt_field"] = c.get("tgt_field"), c.get("src_field")
    return c


def stage_config(
    base: ExperimentConfig,
    direction: Direction,
    run_dir: Path,
    data_root: Path,
    spm_from: Optional[Path] = None,
    train_files: Optional[tuple[Path, Path]] = None,
    init_from: Optional[Path] = None,
) -> ExperimentConfig:
    """The ``mt train`` config of one stage, derived from the experiment config (and validated
    again): the direction's languages and corpora, its own ``run_dir``, the shared
    SentencePiece model, the round's training text, the direction's ``train`` overrides and,
    for a stage that starts from ``init_from``, the ``continue_train`` overrides."""
    bt = base.backtranslate
    assert bt is not None
    data = to_dict(base)
    data.pop("source_file", None)
    data.pop("backtranslate", None)
    data["run_dir"] = str(run_dir)
    d = data["data"]
    d["data_dir"], d["fetch"] = str(data_root), None  # fetched once by the pipeline
    if direction == "reverse":
        d["src_lang"], d["tgt_lang"] = d["tgt_lang"], d["src_lang"]
        for split in ("train", "valid"):
            c = d.get(split)
            if isinstance(c, list):
                d[split] = [swap_corpus(x, f"data.{split}[{i}]") for i, x in enumerate(c)]
            elif c:
                d[split] = swap_corpus(c, f"data.{split}")
        d["test"] = {name: swap_corpus(c, f"data.test.{name}") for name, c in d["test"].items()}
    if train_files is not None:
        d["train"] = {"format": "text", "src": str(train_files[0].resolve()), "tgt": str(train_files[1].resolve())}
        # the bitext was cleaned already; deduplicating again would undo the upsampling
        d["clean"]["dedup"] = False
    if spm_from is not None:
        d["spm_from"] = str(spm_from.resolve())
    data["train"].update(bt.forward_train if direction == "forward" else bt.reverse_train)
    if init_from is not None:
        data["train"].update(bt.continue_train)
        data["train"]["init_from"] = str(init_from.resolve())
    try:
        cfg = from_dict(ExperimentConfig, data)
    except ConfigError as e:
        raise ConfigError(f"the {direction} stage config ({run_dir}), built from this config: {e}") from None
    cfg.source_file = base.source_file
    return cfg


# --------------------------------------------------------------------------- stages shared with `mt recipe run`


def prepare_stage(scfg: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """``mt prepare`` of a stage config (a no-op when its inputs are unchanged); counts for the record."""
    from mt.data.prepare import prepare

    out = prepare(scfg, progress=progress)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return {"data": str(out), "counts": manifest["counts"], "clean": manifest["clean"]}


def train_stage(scfg: ExperimentConfig) -> dict[str, Any]:
    """``mt train`` of a stage config; an interrupted earlier attempt (a checkpoint exists) is
    resumed from its last checkpoint. Returns the model directory (best on valid, else last)."""
    from mt.train.checkpoint import latest_checkpoint
    from mt.train.trainer import train

    resume = latest_checkpoint(scfg.run_path) is not None
    state = train(scfg, resume=resume)
    model = scfg.run_path / "model_best"
    if not (model / "config.json").is_file():
        model = scfg.run_path / "model_last"
    return {"model": str(model), "steps": state.step, "stop_reason": state.stop_reason,
            "best": state.best, "train_seconds": round(state.elapsed, 1)}  # fmt: skip


def eval_sets(cfg: ExperimentConfig, data_root: Path, direction: Direction = "forward",
              limit: int = 0) -> dict[str, tuple[list[str], list[str]]]:  # fmt: skip
    """valid and each test set of ``cfg`` as raw (source, reference) lines in ``direction``;
    ``limit`` > 0 keeps the first ``limit`` pairs of each."""
    from mt.data.sources import open_corpora

    d = cfg.data
    corpora = ({"valid": d.valid} if d.valid is not None else {}) | dict(d.test)
    out = {}
    for name, corpus in corpora.items():
        pairs = list(open_corpora(corpus, d.src_lang, d.tgt_lang, data_root, d.clean.invalid_utf8, f"data.{name}"))
        if limit:
            pairs = pairs[:limit]
        src, ref = [p[0] for p in pairs], [p[1] for p in pairs]
        out[name] = (src, ref) if direction == "forward" else (ref, src)
    return out


def evaluate_model(model: Path, sets: dict[str, tuple[list[str], list[str]]], opts: DecodeOptions, tokenize: str,
                   out_dir: Path, label: str, threads: Optional[int] = None,
                   prefix: str = "mt backtranslate") -> dict[str, Any]:  # fmt: skip
    """Beam search (``opts.beam``) of ``model`` over each set; sacreBLEU (``tokenize``: the
    output language's tokenizer) and chrF per set, hypotheses in ``out_dir/<set>.<label>.hyp``."""
    from mt.decode.translator import Translator, announce_precision
    from mt.evaluate import corpus_scores, length_stats

    opts = opts.replace(n_best=1, sampling="none")
    translator = Translator.load(model, opts, threads=threads)
    announce_precision(prefix, translator)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: dict[str, Any] = {}
    signatures: dict[str, str] = {}
    for split, (src, ref) in sets.items():
        t0 = time.perf_counter()
        hyps = [h[0].text for h in translator.translate_batch(src, opts)]
        atomic_write_text(out_dir / f"{split}.{label}.hyp", "".join(h + "\n" for h in hyps))
        s = corpus_scores(hyps, ref, tokenize=tokenize)
        signatures = {"bleu": s.pop("bleu_signature"), "chrf": s.pop("chrf_signature")}
        scores[split] = {**s, **length_stats(hyps, translator.text.tgt_lang), "sentences": len(src),
                         "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    line = ", ".join(f"{k} BLEU {v['bleu']:.2f} chrF {v['chrf']:.2f}" for k, v in scores.items())
    print(f"{prefix}: {label} {model}: {line}", file=sys.stderr)
    return {"scores": scores, "beam": opts.beam, "signatures": signatures, "dtype": translator.model.dtype,
            "dtype_reason": translator.model.precision.reason}  # fmt: skip


# --------------------------------------------------------------------------- the pipeline


class Pipeline:
    """One ``mt backtranslate`` run: stages in order, each recorded in the manifest."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = False, progress: bool = True) -> None:
        if cfg.backtranslate is None:
            raise ConfigError(f"{cfg.source_file or 'config'}: backtranslate: section missing")
        self.cfg, self.bt = cfg, cfg.backtranslate
        self.progress = progress
        self.root = cfg.run_path
        d = cfg.data
        self.src, self.tgt = d.src_lang, d.tgt_lang
        self.names = {"forward": f"{self.src}-{self.tgt}", "reverse": f"{self.tgt}-{self.src}"}
        self._preflight_models()  # before any work: a typo in a path must not cost an hour
        bound_kernel_caches()  # this process trains; its first matmul may be an evaluation
        self.manifest = Manifest.load(self.root / MANIFEST)
        if self.manifest.stages and not resume:
            raise ConfigError(
                f"{self.manifest.path}: this run_dir already has a back-translation run; "
                "continue it with `mt backtranslate CONFIG --resume`, or choose a new run_dir"
            )
        self._check_config_unchanged()
        self.data_root = self._resolve_data()
        self.mono = {"tgt": self._mono_path("mono_tgt"), "src": self._mono_path("mono_src")}
        self.spm_dir: Optional[Path] = self._given_spm_dir()
        self.rows: list[dict[str, Any]] = []
        self.signatures: dict[str, Any] = {}

    # ---- checks that run before any work

    def _preflight_models(self) -> None:
        """``forward_model`` / ``reverse_model`` must be model directories of the right direction."""
        from mt.modelio import check_model_dir, read_model_config

        texts = {}
        for direction in ("forward", "reverse"):
            path = getattr(self.bt, f"{direction}_model")
            if path is None:
                continue
            field = f"backtranslate.{direction}_model"
            try:
                check_model_dir(path)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{field}: {e}") from None
            _, meta = read_model_config(path)
            langs = f"{meta.get('src_lang')}-{meta.get('tgt_lang')}"
            if langs != self.names[direction]:
                raise ConfigError(f"{field}: {path} translates {langs}, expected {self.names[direction]}")
            texts[direction] = json.loads((Path(path) / "text.json").read_text(encoding="utf-8"))
        if len(texts) == 2:
            files = {k: sorted((Path(getattr(self.bt, f"{k}_model")) / f).read_bytes() for f in set(v["spm"].values())) for k, v in texts.items()}
            if files["forward"] != files["reverse"]:
                raise ConfigError("backtranslate.reverse_model: its SentencePiece model differs from forward_model's; both must share one")

    def _given_spm_dir(self) -> Optional[Path]:
        """Where every stage's SentencePiece model comes from: a given model, else round 0's
        forward data (set once that is prepared)."""
        for path in (self.bt.forward_model, self.bt.reverse_model):
            if path:
                return Path(path)
        prepared = self.root / "round0" / "forward" / "data"
        return prepared if (prepared / "text.json").is_file() and self.manifest.done("r0.forward.prepare") else None

    def _check_config_unchanged(self) -> None:
        """Record the config; on resume warn when it changed (finished stages are kept)."""
        snapshot = to_dict(self.cfg)
        snapshot.pop("source_file", None)
        digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()
        old = self.manifest.data.get("config_sha256")
        if old and old != digest:
            print("mt backtranslate: warning: the config changed since this run started; finished stages are "
                  "kept as they are (use a new run_dir to redo them)", file=sys.stderr)  # fmt: skip
        # saved with the first stage: a run that fails its checks leaves nothing behind
        self.manifest.data.update(config_sha256=digest, config=snapshot, directions=self.names)

    def _resolve_data(self) -> Path:
        from mt.data.fetch import fetch_dataset, resolve_data_dir

        root = resolve_data_dir(None, self.cfg.data.data_dir)
        if self.cfg.data.fetch:
            fetch_dataset(self.cfg.data.fetch, data_dir=root, progress=self.progress)
        return root

    def _mono_path(self, field: str) -> Optional[Path]:
        from mt.data.sources import resolve_input

        value = getattr(self.bt, field)
        if not value:
            return None
        path = resolve_input(value, self.data_root)
        if not path.is_file():
            raise FileNotFoundError(f"backtranslate.{field}: file not found: {path}")
        return path

    # ---- building blocks

    def _config(self, direction: Direction, r: int, train_files=None, init_from=None) -> ExperimentConfig:
        return stage_config(self.cfg, direction, self.root / f"round{r}" / direction, self.data_root,
                            self.spm_dir, train_files, init_from)  # fmt: skip

    def _prepare(self, scfg: ExperimentConfig) -> dict[str, Any]:
        return prepare_stage(scfg, self.progress)

    def _train(self, scfg: ExperimentConfig) -> dict[str, Any]:
        return train_stage(scfg)

    def _evaluate(self, direction: Direction, model: Path, out_dir: Path) -> dict[str, Any]:
        """sacreBLEU + chrF of ``model`` on valid and every test set; hypotheses saved."""
        beam = self.bt.eval_beam or self.cfg.decode.beam
        opts = self.cfg.decode.replace(beam=beam, device=self.bt.device)
        sets = eval_sets(self.cfg, self.data_root, direction, self.bt.eval_sentences)
        lang = self.tgt if direction == "forward" else self.src  # BLEU tokenizer of the output language
        return evaluate_model(model, sets, opts, self.cfg.data.bleu_tokenize_for(lang), out_dir,
                              self.names[direction], self.cfg.train.threads)  # fmt: skip

    def _note_signatures(self, direction: Direction, signatures: dict[str, str]) -> None:
        """The report's signatures: the last evaluation's, plus BLEU's per direction (the
        tokenizer follows each direction's output language: ``tok:zh`` for en→zh only)."""
        if not signatures:
            return
        by_direction = {**self.signatures.get("bleu_by_direction", {}), self.names[direction]: signatures["bleu"]}
        self.signatures = {**signatures, "bleu_by_direction": by_direction}

    def _clean_bitext(self) -> dict[str, Any]:
        """The training bitext, cleaned once (data.clean) into normalised text files that every
        round's corpus repeats (forward orientation; the reverse reads them swapped)."""
        from mt.data.sources import open_corpus

        d = self.cfg.data
        assert d.train is not None
        out = self.root / "bitext"
        out.mkdir(parents=True, exist_ok=True)
        source = open_corpus(d.train, d.src_lang, d.tgt_lang, self.data_root, d.clean.invalid_utf8, "data.train")
        cleaner = Cleaner(d.clean, d.src_lang, d.tgt_lang)
        lengths = cleaner.calibrate(source)
        pairs = list(cleaner(source))
        cleaner.add_invalid_utf8(source.stats.invalid_utf8)
        for i, lang in enumerate((d.src_lang, d.tgt_lang)):
            atomic_write_text(out / f"train.{lang}", "".join(p[i] + "\n" for p in pairs))
        return {"clean": cleaner.report.as_dict(), "lengths": lengths.as_dict()}

    @functools.cached_property
    def _lengths(self) -> Lengths:
        """How the mono and synthetic filters count (src, tgt) lengths: the cleaned bitext's
        units and typical ratio (:class:`mt.data.clean.Lengths`)."""
        d = self.cfg.data
        lengths = Lengths.for_pair(d.src_lang, d.tgt_lang)
        if not lengths.rescaled:
            return lengths
        bitext = self.root / "bitext"
        head = itertools.islice(zip(read_lines(bitext / f"train.{d.src_lang}"), read_lines(bitext / f"train.{d.tgt_lang}")), CALIBRATION_PAIRS)
        return lengths.calibrated(head)

    def _bitext(self, direction: Direction) -> list[tuple[str, str]]:
        d = self.cfg.data
        src = read_lines(self.root / "bitext" / f"train.{d.src_lang}")
        tgt = read_lines(self.root / "bitext" / f"train.{d.tgt_lang}")
        pairs = list(zip(src, tgt))
        return pairs if direction == "forward" else [(t, s) for s, t in pairs]

    def _check_tag(self) -> None:
        """A `<bt>` tag split into pieces would still work, but not as one clean signal."""
        from mt.data.text import TextPipeline

        assert self.spm_dir is not None
        text = TextPipeline.load(self.spm_dir, num_threads=1)
        for sp in (text.src_sp, text.tgt_sp):
            if sp.piece_to_id(self.bt.tag) == sp.unk_id():
                raise ConfigError(f"backtranslate.tag: {self.bt.tag!r} is not a piece of {self.spm_dir} (add it to data.spm.user_symbols)")

    # ---- stages of a round

    def _clean_mono(self, side: str) -> dict[str, Any]:
        path = self.mono[side]
        assert path is not None
        out = self.root / "mono" / f"mono_{side}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        limits, units = self._lengths.raw_limits(self.bt.filter.max_tokens), (self._lengths.src_unit, self._lengths.tgt_unit)
        i = 0 if side == "src" else 1
        stats = gen.clean_monolingual(path, out, limits[i], self.bt.max_mono_lines, units[i])
        print(f"mt backtranslate: {path}: {stats.as_dict()}", file=sys.stderr)
        return {"input": str(path), "output": str(out), **stats.as_dict()}

    def _generate(self, model: Path, side: str, out_dir: Path, r: int) -> dict[str, Any]:
        """Translate the cleaned mono file of ``side`` with ``model`` (resumable shards)."""
        g = self.bt.generation
        # new samples each round; one output line per input line
        opts = g.replace(seed=g.seed + r, n_best=1, device=self.bt.device)
        result, merged, child_peak = gen.run_generation_in_child(
            model, self.root / "mono" / f"mono_{side}.txt", out_dir, opts, self.bt.shard_size,
            threads=self.cfg.train.threads, progress=self.progress,
        )  # fmt: skip
        if merged is None:  # cannot happen in one process; external workers may still be running
            raise RuntimeError(f"{out_dir}: shards missing after generation")
        print(f"mt backtranslate: generated {result.sentences} sentences in {result.seconds:.1f}s "
              f"({result.sentences_per_s:.1f} sentences/s)", file=sys.stderr)  # fmt: skip
        memory = {} if child_peak is None else {CHILD_PEAK: child_peak}
        return {**result.as_dict(), "synthetic": str(merged), "sampling": g.sampling, "beam": g.beam, **memory}

    def _filter(self, out_dir: Path, side: str) -> dict[str, Any]:
        report = bt_filter.filter_files(
            out_dir / gen.SYNTHETIC, self.root / "mono" / f"mono_{side}.txt",
            out_dir / "filtered.syn", out_dir / "filtered.real", self.bt.filter,
            self._lengths if side == "tgt" else self._lengths.swapped(),  # (synthetic, real) sides
        )  # fmt: skip
        print(f"mt backtranslate: filter {out_dir.name}: {report.as_dict()}", file=sys.stderr)
        return report.as_dict()

    def _corpus(self, direction: Direction, r: int, synthetic_dir: Path) -> dict[str, Any]:
        """Round r's training text for ``direction``: bitext × upsample + filtered synthetic pairs."""
        if self.bt.tagged:
            self._check_tag()
        out = self.root / f"round{r}" / f"corpus_{direction}"
        out.mkdir(parents=True, exist_ok=True)
        counts = bt_filter.write_training_corpus(
            self._bitext(direction), [(synthetic_dir / "filtered.syn", synthetic_dir / "filtered.real")],
            out / "train.src", out / "train.tgt", self.bt.upsample, self.bt.tag if self.bt.tagged else None,
        )  # fmt: skip
        return {"dir": str(out), **counts}

    def _train_direction(self, direction: Direction, r: int, corpus_dir: Optional[Path], init_from: Optional[Path]) -> dict[str, Any]:
        """prepare + train + evaluate one direction of round ``r`` (stages ``r<r>.<direction>.*``)."""
        files = (corpus_dir / "train.src", corpus_dir / "train.tgt") if corpus_dir else None
        return self._train_eval(direction, direction, r, self._config(direction, r, files, init_from))

    def _control(self, r: int, init_from: Optional[Path], steps: int) -> dict[str, Any]:
        """Round ``r``'s bitext-only control (stages ``r<r>.control.*``): the forward training of
        round ``r`` (same config, same start) on the bitext alone, for exactly ``steps`` updates.

        The LR schedule depends only on the step for ``inverse_sqrt`` and ``constant``; with
        ``linear`` / ``cosine`` the control decays over its ``steps`` instead of ``max_steps``."""
        d = self.cfg.data
        files = (self.root / "bitext" / f"train.{d.src_lang}", self.root / "bitext" / f"train.{d.tgt_lang}")
        scfg = stage_config(self.cfg, "forward", self.root / f"round{r}" / "control", self.data_root,
                            self.spm_dir, files, init_from)  # fmt: skip
        # the same updates, whatever stopped the forward training (time cap, patience)
        scfg.train = dataclasses.replace(scfg.train, max_steps=steps, max_time_minutes=None, patience=0)
        return self._train_eval("control", "forward", r, scfg)

    def _train_eval(self, stage: str, direction: Direction, r: int, scfg: ExperimentConfig) -> dict[str, Any]:
        """prepare + train + evaluate ``scfg`` as stages ``r<r>.<stage>.*``; the report's entry."""
        m = self.manifest
        m.run(f"r{r}.{stage}.prepare", lambda: self._prepare(scfg))
        if r == 0 and self.spm_dir is None:
            self.spm_dir = scfg.data_path  # round 0's vocabulary is everyone's
        trained = m.run(f"r{r}.{stage}.train", lambda: self._train(scfg))
        model = Path(trained["model"])
        ev = m.run(f"r{r}.{stage}.eval", lambda: self._evaluate(direction, model, scfg.run_path / "eval"))
        self._note_signatures(direction, ev.get("signatures", {}))
        return {"direction": self.names[direction], "model": str(model), "source": "trained", "scores": ev["scores"],
                "steps": trained.get("steps")}  # fmt: skip

    def _given(self, direction: Direction) -> dict[str, Any]:
        path = Path(getattr(self.bt, f"{direction}_model"))
        ev = self.manifest.run(f"r0.{direction}.eval", lambda: self._evaluate(direction, path, self.root / "round0" / f"eval_{direction}"))
        self._note_signatures(direction, ev.get("signatures", {}))
        return {"direction": self.names[direction], "model": str(path), "source": "given", "scores": ev["scores"]}

    def _seconds(self, r: int, stage: str = "") -> dict[str, float]:
        """Wall seconds of round ``r``'s stages, or of its ``stage`` stages only; the control's
        stages are not counted as the round's (its cost is not back-translation's)."""
        prefix = f"r{r}.{stage}"
        return {k[len(f"r{r}."):]: v.get("seconds", 0.0) for k, v in self.manifest.stages.items()
                if k.startswith(prefix) and (stage or not k.startswith(f"r{r}.control."))}  # fmt: skip

    def _peak_rss(self, r: int) -> Optional[float]:
        """The highest stage peak RSS of round ``r`` (MiB), None where none was recorded."""
        peaks = [v["rss_peak_mib"] for k, v in self.manifest.stages.items() if k.startswith(f"r{r}.") and "rss_peak_mib" in v]
        return max(peaks) if peaks else None

    # ---- rounds

    def round0(self) -> dict[str, Any]:
        row: dict[str, Any] = {"round": 0, "synthetic": {}}
        for direction in ("forward", "reverse"):
            if getattr(self.bt, f"{direction}_model"):
                row[direction] = self._given(direction)
            else:
                row[direction] = self._train_direction(direction, 0, None, None)
        row["seconds"] = self._seconds(0)
        row["peak_rss_mib"] = self._peak_rss(0)
        return row

    def round(self, r: int, prev: dict[str, Any]) -> dict[str, Any]:
        m, bt = self.manifest, self.bt
        row: dict[str, Any] = {"round": r, "synthetic": {}}
        cont = lambda d: Path(prev[d]["model"]) if bt.continue_from_previous else None  # noqa: E731

        # 1. the reverse model: retrained from round 2 on with forward-translated M_s
        if r >= 2 and self.mono["src"] is not None:
            out = self.root / f"round{r}" / "gen_reverse"
            syn = {"mono": m.result("mono.src"),
                   "generation": m.run(f"r{r}.reverse.generate", lambda: self._generate(Path(prev["forward"]["model"]), "src", out, r)),
                   "filter": m.run(f"r{r}.reverse.filter", lambda: self._filter(out, "src"))}  # fmt: skip
            corpus = m.run(f"r{r}.reverse.corpus", lambda: self._corpus("reverse", r, out))
            syn["corpus"] = corpus
            row["synthetic"]["reverse"] = syn
            row["reverse"] = self._train_direction("reverse", r, Path(corpus["dir"]), cont("reverse"))
        else:
            row["reverse"] = {**prev["reverse"], "source": "reused"}

        # 2-3. back-translate M_t with it, filter
        self._warn_if_weak(row["reverse"])
        out = self.root / f"round{r}" / "gen_forward"
        reverse_model = Path(row["reverse"]["model"])
        syn = {"mono": m.result("mono.tgt"),
               "generation": m.run(f"r{r}.forward.generate", lambda: self._generate(reverse_model, "tgt", out, r)),
               "filter": m.run(f"r{r}.forward.filter", lambda: self._filter(out, "tgt"))}  # fmt: skip
        # 4-5. train the forward model on B × upsample + synthetic; evaluate
        corpus = m.run(f"r{r}.forward.corpus", lambda: self._corpus("forward", r, out))
        syn["corpus"] = corpus
        row["synthetic"]["forward"] = syn
        row["forward"] = self._train_direction("forward", r, Path(corpus["dir"]), cont("forward"))
        if bt.control:
            row["control"] = {**self._control(r, cont("forward"), row["forward"]["steps"]),
                              "seconds": self._seconds(r, "control.")}  # fmt: skip
        row["seconds"] = self._seconds(r)
        row["peak_rss_mib"] = self._peak_rss(r)
        return row

    def _warn_if_weak(self, reverse: dict[str, Any]) -> None:
        """Say so when the model about to write the synthetic sources is weak (``WEAK_REVERSE_BLEU``)."""
        bleu = reverse.get("scores", {}).get("valid", {}).get("bleu")
        if bleu is None or bleu >= WEAK_REVERSE_BLEU or self.bt.control:
            return
        print(f"mt backtranslate: warning: the {reverse['direction']} model writing the synthetic sources scores "
              f"{bleu:.1f} valid BLEU. From reverse models under {WEAK_REVERSE_BLEU:.0f} BLEU, back-translation "
              "did no better than the same updates on the bitext alone (docs/ablations.md); "
              "backtranslate.control: true measures that for this run", file=sys.stderr)  # fmt: skip

    def run(self) -> dict[str, Any]:
        m, bt = self.manifest, self.bt
        t0 = time.perf_counter()
        if bt.rounds >= 1:
            m.run("bitext.clean", self._clean_bitext)
            m.run("mono.tgt", lambda: self._clean_mono("tgt"))
            if self.mono["src"] is not None and bt.rounds >= 2:
                m.run("mono.src", lambda: self._clean_mono("src"))
        self.rows = [self.round0()]
        self._write_report()
        for r in range(1, bt.rounds + 1):
            self.rows.append(self.round(r, self.rows[-1]))
            self._write_report()
        final = m.run("final", self._final)
        report = self._write_report(final)
        print(f"mt backtranslate: done in {(time.perf_counter() - t0) / 60:.1f} min; report {self.root / 'bt_report.md'}", file=sys.stderr)
        return report

    # ---- outputs

    def _final(self) -> dict[str, Any]:
        """Copy the forward (and reverse) model with the best valid BLEU over all rounds to
        ``run_dir/final_model`` (``final_model_reverse``), ready for ``mt serve``."""
        out = {}
        for direction, name in (("forward", "final_model"), ("reverse", "final_model_reverse")):
            def key(row: dict[str, Any]) -> float:
                s = row[direction]["scores"].get("valid") or next(iter(row[direction]["scores"].values()), {})
                return s.get("bleu", float("-inf"))

            best = max(self.rows, key=key)  # max() keeps the earliest of equal scores
            dest = self.root / name
            with atomic_dir(dest) as tmp:
                shutil.copytree(best[direction]["model"], tmp, dirs_exist_ok=True)
            out[direction] = {"path": str(dest), "round": best["round"], "from": best[direction]["model"]}
        return out

    def _write_report(self, final: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        report = {
            "directions": self.names,
            "rounds": self.rows,
            "eval_sentences": self.bt.eval_sentences,
            "eval_beam": self.bt.eval_beam or self.cfg.decode.beam,
            "generation": to_dict(self.bt.generation),
            "upsample": self.bt.upsample,
            "tagged": self.bt.tagged,
            "continue_from_previous": self.bt.continue_from_previous,
            "control": self.bt.control,
            "signatures": self.signatures,
            "stage_seconds": {k: v.get("seconds") for k, v in self.manifest.stages.items()},
        }
        if final:
            report["final_model"] = final["forward"]["path"]
            report["final_model_round"] = final["forward"]["round"]
            report["final_model_reverse"] = final["reverse"]["path"]
        try:
            write_report(report, self.root)
        except Exception as e:  # a plotting problem must not lose an hour of training
            print(f"mt backtranslate: report writing failed: {e}", file=sys.stderr)
        return report


def run_pipeline(cfg: ExperimentConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) all back-translation rounds of ``cfg``; returns the report dict. One
    process at a time per ``run_dir``: a second one would rewrite the manifest from its own view."""
    with exclusive_dir(cfg.run_path, "running `mt backtranslate`", lock=".backtranslate.lock"):
        return Pipeline(cfg, resume=resume, progress=progress).run()


def backtranslate_cli(args: argparse.Namespace) -> int:
    """``mt backtranslate CONFIG [--set K=V] [--resume]``; prints the final model directory."""
    from mt.config import load_config
    from mt.data import DataError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every rank would run every stage; spread the generation instead (see generate.py)
        print("mt backtranslate: error: run it as one process; spread generation over GPUs/machines with "
              "`python -m mt.backtranslate.generate --shard I/N` (or torchrun on that module)", file=sys.stderr)  # fmt: skip
        return 2
    cfg = load_config(args.config, args.overrides)
    try:
        report = run_pipeline(cfg, resume=args.resume)
    except DataError as e:
        print(f"mt backtranslate: error: {e}", file=sys.stderr)
        return 2
    print(report["final_model"])
    return 0
