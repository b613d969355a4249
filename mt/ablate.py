"""``mt ablate SPEC``: train the variants of one config that test a claim, and tabulate them.

A spec (YAML; the project's are in ``recipes/ablations/``) names a claim, the config its runs
start from and the runs, each a label plus ``--set`` overrides::

    claim: label smoothing (0.1) helps BLEU although it hurts perplexity
    config: multi30k_de_en.yaml          # relative to the spec
    runs_dir: runs/ablations             # run NAME trains in runs_dir/NAME
    out: docs/ablations/label_smoothing  # results.json, table.md, curves.png
    test: test2016                       # the test set (of the config's data.test) in the table
    seeds: 1                             # > 1: NAME.seed2, ... with train.seed + 1, ... (a run's own seeds: wins)
    seed_keys: [train.seed]              # optional: the integer settings each seed adds 1 to
                                         # (e.g. also backtranslate.generation.seed for sampling)
    set: {train.max_steps: 500}          # optional: overrides of every run (before its own)
    runs:
      - {name: base, label: "ε = 0.1"}
      - {name: ls0, label: "ε = 0", set: {train.label_smoothing: 0.0}}
    average: [1, 3, 5, 10]               # optional: the last N checkpoints averaged, per run
    beam_sweep: {beams: [1, 5, 50], modes: [none, avg], decode: {min_len: 0}}   # optional, per run

Each run is ``mt recipe run CONFIG --resume --set run_dir=runs_dir/NAME --set ...`` in a child
process (``--jobs`` at once), so a killed ablation resumes where it stopped and a run that
several specs share under one name (the base) trains once. ``runs_dir/NAME/ablation_run.json``
records the settings a run was made with; a spec that asks for the same name with other
settings is refused instead of silently reusing it. A run directory trained before, by
``mt recipe run``, is adopted when its ``config.yaml`` has the same settings. A run whose
settings name a model inside another run's directory (``backtranslate.reverse_model:
runs/ablations/bt_beam/round0/reverse/model_best``) starts once that model is trained.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from mt.config import LENGTH_NORMS, ConfigError, DecodeOptions, ExperimentConfig, from_dict, load_config, to_dict
from mt.fileio import atomic_write_json, atomic_write_text, dir_in_use, read_json_object, save_figure

RECORD = "ablation_run.json"
CURVES = ("train_nll", "valid_nll", "valid_bleu")
# settings that change how fast a run goes or where it reads from, not what it learns
IGNORED = {"run_dir", "train.threads", "train.progress", "data.data_dir", "model.vocab_size", "model.preset",
           "backtranslate.device"}  # fmt: skip
DECODING = ("decode.", "backtranslate.generation.")  # ... and these sections' speed fields
DECODING_SPEED = {"dtype", "device", "pack", "max_tokens"}


# --------------------------------------------------------------------------- the spec


@dataclass
class Run:
    """One trained instance: a spec run at one seed."""

    name: str  # its directory under runs_dir; unique across the specs that share runs_dir
    label: str  # what the table and the plot call it (seeds share it)
    config: Path
    overrides: list[str]  # "section.key=value", as --set takes them
    seed: int  # 1-based index among the run's seeds

    @functools.cached_property
    def cfg(self) -> ExperimentConfig:
        """The run's resolved config (its own ``run_dir`` aside: that is ``runs_dir/name``)."""
        return load_config(self.config, self.overrides)

    def command(self, run_dir: Path) -> list[str]:
        sets = [f"run_dir={run_dir}", *self.overrides]
        return ["mt", "recipe", "run", str(self.config), "--resume", *[a for s in sets for a in ("--set", s)]]


@dataclass
class Spec:
    claim: str
    path: Path
    config: Path
    runs_dir: Path
    out: Path
    test: str
    runs: list[Run]
    average: list[int] = field(default_factory=list)
    beam_sweep: Optional[dict[str, Any]] = None


def _field(data: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in data:
        if default is ...:
            raise ConfigError(f"{where}: missing field {key!r}")
        return default
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _overrides(sets: dict[str, Any]) -> list[str]:
    """``{"train.lr": 0.003}`` as ``--set`` values (YAML flow syntax: ``train.lr=0.003``)."""
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix(chr(10) + '...')}"
            for k, v in sets.items()]  # fmt: skip


def _seed_values(cfg: ExperimentConfig, keys: list[str], where: str) -> dict[str, int]:
    """The config's value of each dotted ``keys`` entry, which must be an integer."""
    values = {}
    for key in keys:
        node: Any = to_dict(cfg)
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, int) or isinstance(node, bool):
            raise ConfigError(f"{where}.seed_keys: {key!r} is not an integer setting of the config (got {node!r})")
        values[key] = node
    return values


def _runs(entries: list, spec_dir: Path, config: Path, common: list[str], seeds: int, seed_keys: list[str],
          where: str) -> list[Run]:  # fmt: skip
    """The spec's ``runs`` list expanded over ``seeds``: NAME, NAME.seed2 (each ``seed_keys``
    setting + 1), ...; ``common`` overrides come before each run's own."""
    out, names = [], set()
    for i, entry in enumerate(entries):
        w = f"{where}.runs[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{w}: expected a mapping with name, label and set")
        name = _field(entry, "name", str, w)
        if not name or "/" in name or name in names:
            raise ConfigError(f"{w}.name: must be a unique, non-empty directory name, got {name!r}")
        names.add(name)
        overrides = common + _overrides(_field(entry, "set", dict, w, {}))
        own = entry.get("config")
        cfg_path = Path(os.path.normpath(spec_dir / own)) if isinstance(own, str) else config
        label = str(_field(entry, "label", str, w, name))
        first = Run(name, label, cfg_path, overrides, 1)
        cfg = first.cfg  # loading it validates the overrides
        own_seeds = _field(entry, "seeds", int, w, seeds)  # 1 for a run the seeds share (round-0 models)
        if own_seeds < 1:
            raise ConfigError(f"{w}.seeds: must be >= 1, got {own_seeds}")
        base = _seed_values(cfg, seed_keys, where) if own_seeds > 1 else {}
        out.append(first)
        for s in range(1, own_seeds):
            shifted = [f"{key}={value + s}" for key, value in base.items()]
            out.append(Run(f"{name}.seed{s + 1}", label, cfg_path, overrides + shifted, s + 1))
    return out


def load_spec(path: str | Path) -> Spec:
    """Read and check an ablation spec; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ablation spec not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (claim, config, runs, ...)")
    where = str(path)
    config = Path(os.path.normpath(path.parent / _field(data, "config", str, where)))
    seeds = _field(data, "seeds", int, where, 1)
    if seeds < 1:
        raise ConfigError(f"{where}.seeds: must be >= 1, got {seeds}")
    seed_keys = _field(data, "seed_keys", list, where, ["train.seed"])
    if not seed_keys or not all(isinstance(k, str) for k in seed_keys):
        raise ConfigError(f"{where}.seed_keys: expected a list of dotted settings like train.seed, got {seed_keys!r}")
    common = _overrides(_field(data, "set", dict, where, {}))
    runs = _runs(_field(data, "runs", list, where), path.parent, config, common, seeds, seed_keys, where)
    if not runs:
        raise ConfigError(f"{where}.runs: at least one run is needed")
    average = _field(data, "average", list, where, [])
    if any(not isinstance(n, int) or n < 1 for n in average):
        raise ConfigError(f"{where}.average: expected positive checkpoint counts, got {average!r}")
    spec = Spec(claim=_field(data, "claim", str, where), path=path, config=config,
                runs_dir=Path(_field(data, "runs_dir", str, where, "runs/ablations")),
                out=Path(_field(data, "out", str, where)), test=_field(data, "test", str, where),
                runs=runs, average=average, beam_sweep=_sweep(data.get("beam_sweep"), where))  # fmt: skip
    for run in runs:
        tests = run.cfg.data.test
        if spec.test not in tests:
            raise ConfigError(f"{where}.test: {spec.test!r} is not a test set of {run.config} ({', '.join(tests)})")
    return spec


def _sweep(value: Any, where: str) -> Optional[dict[str, Any]]:
    """``beam_sweep``: beam sizes, length-normalisation modes, and other decoding settings
    (``decode``: fields of :class:`~mt.config.DecodeOptions`, e.g. ``min_len: 0``)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.beam_sweep: expected a mapping with beams and modes")
    beams = _field(value, "beams", list, f"{where}.beam_sweep")
    modes = _field(value, "modes", list, f"{where}.beam_sweep", ["avg"])
    decode = _field(value, "decode", dict, f"{where}.beam_sweep", {})
    from_dict(DecodeOptions, decode, f"{where}.beam_sweep.decode").validate(f"{where}.beam_sweep.decode")
    if not beams or any(not isinstance(b, int) or b < 1 for b in beams):
        raise ConfigError(f"{where}.beam_sweep.beams: expected positive beam sizes, got {beams!r}")
    if any(m not in LENGTH_NORMS for m in modes):
        raise ConfigError(f"{where}.beam_sweep.modes: expected some of {', '.join(LENGTH_NORMS)}, got {modes!r}")
    return {"beams": beams, "modes": modes, "decode": decode}


# --------------------------------------------------------------------------- running


def _settings(cfg: ExperimentConfig | dict[str, Any]) -> dict[str, Any]:
    """A config as flat ``{"section.key": value}`` without the :data:`IGNORED` keys."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = list(node) if isinstance(node, tuple) else node

    walk(cfg if isinstance(cfg, dict) else to_dict(cfg), "")
    flat.pop("source_file", None)
    return {k: v for k, v in flat.items() if k not in IGNORED and not _decoding_speed(k)}


def _decoding_speed(key: str) -> bool:
    return key.startswith(DECODING) and key.rsplit(".", 1)[1] in DECODING_SPEED


@functools.cache
def _default_settings() -> dict[str, Any]:
    """mt's own default for every setting (read-only): what a run recorded before a setting existed had."""
    return _settings(ExperimentConfig())


def _difference(old: dict[str, Any], new: dict[str, Any]) -> Optional[str]:
    defaults = _default_settings()
    for key in sorted(set(old) | set(new)):
        if key.startswith("model.") and key not in old:
            continue  # config.yaml holds the resolved model section only
        if key not in old and key in defaults and new.get(key) == defaults[key]:
            continue  # a setting added to mt since: the old run had its default
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} here"
    return None


def claim_run_dir(run: Run, run_dir: Path) -> None:
    """Record ``run``'s settings in ``run_dir``, or refuse when the directory holds another run."""
    wanted = _settings(run.cfg)  # run_dir is not a setting (IGNORED)
    record, snapshot = run_dir / RECORD, run_dir / "config.yaml"
    if record.is_file():
        old = read_json_object(record)["settings"]
    elif snapshot.is_file():  # trained before by mt recipe run / mt train: adopt when equal
        # read as a config, so fields added since then take their defaults, as the run had them
        old = _settings(from_dict(ExperimentConfig, yaml.safe_load(snapshot.read_text(encoding="utf-8")), str(snapshot)))
    else:
        old = None
    if old is not None:
        diff = _difference(old, wanted)
        if diff:
            raise ConfigError(f"{run_dir}: holds a run with other settings ({diff}); rename run {run.name!r} or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, {"name": run.name, "config": str(run.config), "overrides": run.overrides,
                               "settings": wanted})  # fmt: skip


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "report.json").is_file()


@dataclass(frozen=True)
class Need:
    """A path inside another run's directory that a run's settings name (a model it starts from),
    and what must have finished for it to be there: the other run's back-translation stage that
    trains it (``r0.reverse.train`` for ``NAME/round0/reverse/model_best``), else the whole run."""

    run: str
    path: str
    stage: Optional[str]

    def ready(self, runs_dir: Path) -> bool:
        from mt.backtranslate.pipeline import MANIFEST

        if is_finished(runs_dir / self.run):
            return True
        manifest = runs_dir / self.run / MANIFEST
        if self.stage is None or not manifest.is_file():
            return False
        return read_json_object(manifest).get("stages", {}).get(self.stage, {}).get("status") == "done"


def needs(run: Run, runs_dir: Path) -> list[Need]:
    """What ``run`` reads from the other runs of ``runs_dir``: every setting whose value is a
    path below ``runs_dir/OTHER/``."""
    root = Path(os.path.abspath(runs_dir))
    found = []
    for key, value in _settings(run.cfg).items():
        if key in IGNORED or not isinstance(value, str) or not value:
            continue
        parts = Path(os.path.abspath(value)).parts
        if parts[: len(root.parts)] != root.parts or len(parts) <= len(root.parts) + 1 or parts[len(root.parts)] == run.name:
            continue
        name, rest = parts[len(root.parts)], parts[len(root.parts) + 1 :]
        stage = None
        if len(rest) >= 2 and rest[0].startswith("round") and rest[0][5:].isdigit() and rest[1] in ("forward", "reverse"):
            stage = f"r{int(rest[0][5:])}.{rest[1]}.train"
        found.append(Need(name, value, stage))
    return found


def _startable(todo: list[Run], spec: Spec, coming: set[str]) -> tuple[list[Run], list[tuple[Run, Need]], bool]:
    """Of ``todo``: the runs whose needs are met; the (run, need) pairs that never will be in
    this call, as the run that makes them is neither finished, nor among ``coming``, nor being
    trained by another process (another ``mt ablate``: its recipe holds the run directory);
    and whether some run waits on such another process."""
    from mt.recipe import RECIPE_LOCK

    ready, stuck, elsewhere = [], [], False
    for run in todo:
        unmet = [n for n in needs(run, spec.runs_dir) if not n.ready(spec.runs_dir)]
        outside = [n for n in unmet if n.run not in coming]
        busy = [n for n in outside if dir_in_use(spec.runs_dir / n.run, RECIPE_LOCK)]
        if len(busy) < len(outside):
            stuck.append((run, next(n for n in outside if n not in busy)))
        elif not unmet:
            ready.append(run)
        elsewhere = elsewhere or bool(busy)
    return ready, stuck, elsewhere


def run_all(spec: Spec, jobs: int, only: Optional[set[str]] = None) -> list[str]:
    """Train every unfinished run, ``jobs`` at a time; returns the names that failed. A run
    that starts from another run's model (:func:`needs`) waits until that model is trained,
    and fails at once, named, when no run of this call trains it."""
    todo = [r for r in spec.runs if (only is None or r.name in only) and not is_finished(spec.runs_dir / r.name)]
    for run in todo:
        claim_run_dir(run, spec.runs_dir / run.name)
    running: list[tuple[Run, subprocess.Popen, float]] = []
    failed: list[str] = []
    while todo or running:
        ready, stuck, elsewhere = _startable(todo, spec, {r.name for r in todo} | {x[0].name for x in running})
        for run, need in stuck:
            print(f"mt ablate: {run.name} FAILED: it starts from {need.path}, which run {need.run!r} has not trained "
                  f"yet; run {need.run!r} first (mt ablate SPEC --only {need.run})", file=sys.stderr)  # fmt: skip
            todo.remove(run)
            failed.append(run.name)
        for run in ready[: max(0, jobs - len(running))]:
            todo.remove(run)
            running.append(_start(run, spec.runs_dir))
        if not running and todo and not ready and not elsewhere:  # they wait on each other
            raise ConfigError(f"{spec.path}: runs {', '.join(r.name for r in todo)} wait on each other")
        time.sleep(2.0)
        for item in [x for x in running if x[1].poll() is not None]:
            running.remove(item)
            run, proc, t0 = item
            ok = proc.returncode == 0
            print(f"mt ablate: {run.name} {'finished' if ok else 'FAILED'} in {(time.time() - t0) / 60:.1f} min"
                  + ("" if ok else f" (see {spec.runs_dir / run.name}.log)"), file=sys.stderr)  # fmt: skip
            if not ok:
                failed.append(run.name)
    return failed


def _start(run: Run, runs_dir: Path) -> tuple[Run, subprocess.Popen, float]:
    run_dir = runs_dir / run.name
    cmd = [sys.executable, "-m", "mt.cli", *run.command(run_dir)[1:]]
    log = open(runs_dir / f"{run.name}.log", "ab")
    print(f"mt ablate: {run.name} started: {shlex.join(run.command(run_dir))}", file=sys.stderr)
    try:
        return run, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.time()
    finally:
        log.close()  # the child holds its own descriptor


# --------------------------------------------------------------------------- measuring


def training_summary(run_dir: Path) -> dict[str, Any]:
    """From ``metrics.jsonl``: updates, the last train loss and the lowest, divergence, the last
    validation's unsmoothed NLL / perplexity / BLEU, and the training's wall time."""
    from mt.train.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train:
        return {}
    losses = [r["loss"] for r in train]
    finite = [x for x in losses if math.isfinite(x)]
    last_valid = valid[-1] if valid else {}
    return {
        "steps": train[-1]["step"], "train_loss": losses[-1], "min_train_loss": min(finite, default=math.nan),
        "train_nll": train[-1].get("nll"),
        # a non-finite loss, or the end a nat above the run's best: the run came apart
        "diverged": len(finite) < len(losses) or losses[-1] > min(finite) + 1.0,
        "valid_nll": last_valid.get("nll"), "valid_ppl": last_valid.get("ppl"), "valid_bleu": last_valid.get("bleu"),
        "train_minutes": round(train[-1]["elapsed"] / 60, 1), "precision": train[-1].get("precision"),
    }  # fmt: skip


def bt_summary(run_dir: Path, test: str) -> dict[str, Any]:
    """From ``bt_report.json`` (runs with back-translation): the round-0 reverse model's test
    scores and, per round, the forward model's and its bitext-only control's."""
    path = run_dir / "bt_report.json"
    if not path.is_file():
        return {}

    def scores(side: Optional[dict[str, Any]]) -> Optional[dict[str, float]]:
        s = (side or {}).get("scores", {}).get(test)
        return {"bleu": s["bleu"], "chrf": s["chrf"]} if s else None

    rounds = read_json_object(path)["rounds"]
    return {"reverse_r0": scores(rounds[0].get("reverse")),
            "rounds": [{"round": r["round"], "forward": scores(r.get("forward")), "control": scores(r.get("control"))}
                       for r in rounds]}  # fmt: skip


def trained_dir(run_dir: Path) -> Path:
    """Where a run's training wrote its checkpoints and metrics: ``run_dir`` itself, or for a
    back-translation run its last round's forward training (``roundN/forward``)."""
    if (run_dir / "metrics.jsonl").is_file():
        return run_dir
    forward = [d / "forward" for d in run_dir.glob("round*") if d.name[5:].isdigit() and (d / "forward" / "metrics.jsonl").is_file()]
    return max(forward, key=lambda d: int(d.parent.name[5:]), default=run_dir)


def compared_model(run_dir: Path) -> tuple[Path, str]:
    """The model a run is scored by: its last update's (``model_last``), so that the runs of a
    claim compare at equal updates; for a back-translation run, its last round's forward model
    at its last update (the run's ``final_model`` is the best over rounds, which can be round 0's
    model that no back-translation went into); else the final model.
    The recipe's own report scores the best validation checkpoint, which on short runs can be
    an earlier update for one variant and the last for another."""
    trained = trained_dir(run_dir)
    if (trained / "model_last" / "config.json").is_file():
        return trained / "model_last", "last update" if trained == run_dir else f"{trained.parent.name}, last update"
    return run_dir / "final_model", "final model"


def _measured(cache: Path, key: dict[str, Any], measure: Callable[[], Any]) -> Any:
    """``measure()``, kept in ``cache`` with the ``key`` it was measured for (model step and
    settings): a rerun of the report measures only what changed."""
    if cache.is_file():
        kept = read_json_object(cache)
        if kept.get("key") == key:
            return kept["value"]
    value = measure()
    atomic_write_json(cache, {"key": key, "value": value})
    return value


def _step(model: Path) -> Any:
    """A model directory's update (a list of them for an average)."""
    from mt.modelio import read_model_config

    meta = read_model_config(model)[1]
    return meta.get("steps", meta.get("step"))


def _scores(spec: Spec, run: Run, model: Path, opts: DecodeOptions, label: str) -> dict[str, Any]:
    """``model``'s test scores with ``opts`` on the run's threads (as the recipe evaluates:
    bf16 kernels may round differently on other counts), with the precision it decoded in."""
    from mt.backtranslate.pipeline import evaluate_model

    run_dir, cfg = spec.runs_dir / run.name, run.cfg
    src, ref, tok = _test_set(spec, run)
    r = evaluate_model(model, {spec.test: (src, ref)}, opts, tok, run_dir / "eval_ablate", label,
                       cfg.train.threads, prefix="mt ablate")  # fmt: skip
    return {**r["scores"][spec.test], "dtype": r["dtype"]}


def scores_of(spec: Spec, run: Run) -> dict[str, Any]:
    """The compared model's test scores (beam and dtype of the run's ``decode`` section), kept
    in ``run_dir/eval_ablate/`` for the step and settings they were measured with."""
    run_dir, opts = spec.runs_dir / run.name, run.cfg.decode
    model, which = compared_model(run_dir)
    key = {"model": which, "step": _step(model), "test": spec.test, "beam": opts.beam, "dtype": opts.dtype}
    scores = _measured(run_dir / "eval_ablate" / f"{spec.test}.json", key,
                       lambda: _scores(spec, run, model, opts, "compared"))  # fmt: skip
    return {"key": key, **scores}


def run_curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """``metrics.jsonl`` as ``{curve: [[update, value], ...]}`` for :data:`CURVES` (unsmoothed
    NLL, so runs with other label smoothing compare), finite values only."""
    from mt.train.metrics import read_metrics

    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else []
    curves: dict[str, list[list[float]]] = {key: [] for key in CURVES}
    for r in records:
        kind = r.get("kind")
        for key in CURVES:
            value = r.get(key.split("_", 1)[1]) if key.startswith(f"{kind}_") else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves[key].append([r["step"], value])
    return curves


def run_row(spec: Spec, run: Run) -> dict[str, Any]:
    run_dir = spec.runs_dir / run.name
    s = scores_of(spec, run)
    best = read_json_object(run_dir / "report.json")["scores"].get(spec.test, {})
    return {"name": run.name, "label": run.label, "seed": run.seed, "command": shlex.join(run.command(run_dir)),
            "settings": _settings(run.cfg), "curves": run_curves(trained_dir(run_dir)),
            "model": s["key"]["model"], "model_step": s["key"]["step"], "test_bleu": s["bleu"], "test_chrf": s["chrf"],
            "test_empty": s["empty"], "test_mean_len": s["mean_len"], "beam": s["key"]["beam"], "dtype": s["dtype"],
            "report_bleu": best.get("bleu"), "report_chrf": best.get("chrf"),  # the recipe's (best checkpoint)
            **training_summary(trained_dir(run_dir)), "backtranslation": bt_summary(run_dir, spec.test)}  # fmt: skip


def _test_set(spec: Spec, run: Run) -> tuple[list[str], list[str], str]:
    from mt.backtranslate.pipeline import eval_sets
    from mt.data.fetch import resolve_data_dir

    d = run.cfg.data
    src, ref = eval_sets(run.cfg, resolve_data_dir(None, d.data_dir))[spec.test]
    return src, ref, d.bleu_tokenize_for(d.tgt_lang)


def averaged_rows(spec: Spec, run: Run) -> list[dict[str, Any]]:
    """The best single checkpoint (by valid BLEU) and the last N averaged, on the test set."""
    from mt.train.checkpoint import average_checkpoints

    run_dir, opts = spec.runs_dir / run.name, run.cfg.decode
    models = {"best": ("best single (valid BLEU)", run_dir / "model_best")}
    for n in spec.average:
        out = run_dir / f"average_last{n}"
        if not (out / "config.json").is_file():
            average_checkpoints(run_dir, out, last=n)
        models[f"last{n}"] = (f"last {n} averaged" if n > 1 else "last single", out)
    rows = []
    for slug, (what, model) in models.items():
        key = {"model": slug, "step": _step(model), "test": spec.test, "beam": opts.beam, "dtype": opts.dtype}
        r = _measured(run_dir / "eval_ablate" / f"{spec.test}.{slug}.json", key,
                      lambda model=model, slug=slug: _scores(spec, run, model, opts, slug))
        rows.append({"name": run.name, "label": run.label, "seed": run.seed, "model": what, "bleu": r["bleu"],
                     "chrf": r["chrf"], "mean_len": r["mean_len"]})  # fmt: skip
    return rows


def sweep_rows(spec: Spec, run: Run) -> list[dict[str, Any]]:
    """:func:`mt.evaluate.beam_sweep` of the run's compared model (:func:`compared_model`) on the test set."""
    from mt.decode.translator import Translator
    from mt.evaluate import beam_sweep

    assert spec.beam_sweep is not None
    sweep, run_dir = spec.beam_sweep, spec.runs_dir / run.name
    opts = run.cfg.decode.replace(**sweep["decode"])
    model, which = compared_model(run_dir)

    def measure() -> list[dict[str, Any]]:
        src, ref, _ = _test_set(spec, run)
        translator = Translator.load(model, opts, threads=run.cfg.train.threads)
        return beam_sweep(translator, src, ref, opts, sweep["beams"], sweep["modes"])

    key = {"model": which, "step": _step(model), "test": spec.test, "sweep": sweep, "dtype": opts.dtype}
    rows = _measured(run_dir / "eval_ablate" / f"{spec.test}.sweep.json", key, measure)
    return [{"name": run.name, "label": run.label, **r} for r in rows]


# --------------------------------------------------------------------------- reporting


def _spread(values: list[Optional[float]], digits: int) -> str:
    """One value, or ``mean (min–max)`` over seeds that differ; ``–`` when missing."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if min(vals) == max(vals):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def nll_at(row: dict[str, Any], update: int) -> Optional[float]:
    """The row's logged train NLL at the last log at or before ``update`` (None without curves)."""
    pts = [v for step, v in row.get("curves", {}).get("train_nll", []) if step <= update]
    return pts[-1] if pts else None


def main_table(rows: list[dict[str, Any]], test: str) -> str:
    """One line per label; seeds pooled as ``mean (min–max)``. When the runs stopped at different
    updates (a time cap), a column compares their train NLL at the update all of them reached."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    seeds = max(len(v) for v in by_label.values())
    steps = {r.get("steps") for r in rows if r.get("steps")}
    common = min(steps) if len(steps) > 1 else None
    lines = [f"| run | updates | {test} BLEU | {test} chrF | output words | valid perplexity | last train NLL | "
             + (f"train NLL at update {common} | " if common else "") + "diverged | train minutes | precision |"
             + (" seeds |" if seeds > 1 else ""),
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if common else "") + "---|---:|---|" + ("---:|" if seeds > 1 else "")]  # fmt: skip
    for label, group in by_label.items():
        cells = [label, _spread([r.get("model_step") or r.get("steps") for r in group], 0), _spread([r["test_bleu"] for r in group], 2),
                 _spread([r["test_chrf"] for r in group], 2), _spread([r.get("test_mean_len") for r in group], 2),
                 _spread([r.get("valid_ppl") for r in group], 2),
                 _spread([r.get("train_nll") for r in group], 3)]  # fmt: skip
        if common:
            cells.append(_spread([nll_at(r, common) for r in group], 3))
        cells += [", ".join("yes" if r.get("diverged") else "no" for r in group),
                  _spread([r.get("train_minutes") for r in group], 1),
                  "/".join(dict.fromkeys(r.get("precision") or "–" for r in group))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |" + (f" {len(group)} |" if seeds > 1 else ""))
    return "\n".join(lines) + "\n"


def averaged_table(rows: list[dict[str, Any]], test: str) -> str:
    """One line per (label, model); seeds pooled as ``mean (min–max)``. The gain is each
    seed's average minus the same seed's best single checkpoint, pooled the same way, since
    averaging is a within-run comparison and seeds move the absolute scores more than it."""
    best = {r["name"]: r for r in rows if r["model"].startswith("best single")}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["label"], r["model"]), []).append(r)
    seeds = max(len(g) for g in groups.values())

    def gain(group: list[dict[str, Any]], key: str) -> str:
        return _spread([r[key] - best[r["name"]][key] if r["name"] in best else None for r in group], 2)

    lines = [f"| run | model | {test} BLEU | {test} chrF | output words | BLEU gain | chrF gain |" + (" seeds |" if seeds > 1 else ""),
             "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if seeds > 1 else "")]  # fmt: skip
    for (label, model), g in groups.items():
        cells = [label, model, _spread([r["bleu"] for r in g], 2), _spread([r["chrf"] for r in g], 2),
                 _spread([r["mean_len"] for r in g], 2), gain(g, "bleu"), gain(g, "chrf")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |" + (f" {len(g)} |" if seeds > 1 else ""))
    return "\n".join(lines) + "\n"


def bt_table(rows: list[dict[str, Any]], test: str) -> str:
    """Runs with back-translation: the reverse model, then BLEU / chrF per round, with the
    bitext-only control of the same updates in brackets where the run had one."""
    bt = [r for r in rows if r.get("backtranslation")]
    n = max(len(r["backtranslation"]["rounds"]) for r in bt)

    def fmt(s: Optional[dict[str, float]]) -> str:
        return f"{s['bleu']:.2f} / {s['chrf']:.2f}" if s else "–"

    lines = [f"| run | reverse model, round 0 | " + " | ".join(f"round {i}" for i in range(n)) + " |",
             "|---|---:|" + "---:|" * n]  # fmt: skip
    for r in bt:
        cells = [fmt(x["forward"]) + (f" (control {fmt(x['control'])})" if x["control"] else "")
                 for x in r["backtranslation"]["rounds"]]  # fmt: skip
        cells += ["–"] * (n - len(cells))
        lines.append(f"| {r['label']} | {fmt(r['backtranslation']['reverse_r0'])} | " + " | ".join(cells) + " |")
    return (f"{test} BLEU / chrF per back-translation round, as the back-translation report scores each round's "
            "model (its best checkpoint on valid; the table above scores the last update):\n\n" + "\n".join(lines) + "\n")


def sweep_table(rows: list[dict[str, Any]], test: str) -> str:
    lines = [f"| run | length norm | beam | {test} BLEU | chrF | mean length (words) | empty outputs |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['label']} | {r['length_norm']} | {r['beam']} | {r['bleu']:.2f} | {r['chrf']:.2f} | "
              f"{r['mean_len']:.2f} | {r['empty']} |" for r in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict[str, Any]], claim: str, png: Path) -> Optional[Path]:
    """Train and valid NLL (unsmoothed) and valid BLEU against the update, one colour per label
    (seeds share it), from the rows' ``curves``. None without matplotlib."""
    from mt.extras import pyplot

    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    colours: dict[str, Any] = {}
    for row in rows:
        label = row["label"]
        for ax, key in zip(axes, CURVES):
            pts = row.get("curves", {}).get(key)
            if pts:
                first = label not in colours
                line = ax.plot(*zip(*pts), lw=1.2 if key == "train_nll" else 1.5, marker=None if key == "train_nll" else "o",
                               ms=3, color=colours.get(label), label=label if first else None)[0]  # fmt: skip
                colours.setdefault(label, line.get_color())
    titles = ("train NLL per token (unsmoothed)", "valid NLL per token (unsmoothed)", "valid BLEU (greedy subset)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    unplotted = sorted({r["label"] for r in rows} - set(colours))
    fig.suptitle(claim + (f"\n(no curves kept for: {'; '.join(unplotted)})" if unplotted else ""), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, png)


def plot_sweep(rows: list[dict[str, Any]], test: str, png: Path) -> Optional[Path]:
    """BLEU against the beam size (log scale), one panel per run, one line per length norm."""
    from mt.extras import pyplot

    plt = pyplot()
    if not rows or plt is None:
        return None
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 4), dpi=100, squeeze=False)
    for ax, label in zip(axes[0], labels):
        for mode in dict.fromkeys(r["length_norm"] for r in rows):
            pts = [(r["beam"], r["bleu"]) for r in rows if r["label"] == label and r["length_norm"] == mode]
            ax.plot(*zip(*pts), marker="o", label=f"length norm: {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("beam size")
        ax.set_ylabel(f"BLEU ({test})")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)


def kept_results(spec: Spec, done: list[Run]) -> dict[str, Any]:
    """The rows of the last ``out/results.json`` for runs whose directory is gone (a fresh clone,
    a cleaned disk), kept when they were measured with the same settings, so that one missing
    run directory does not cost the table its row. Each kept row says when and where it was
    measured. Rows written before settings were recorded match on their command instead."""
    path = spec.out / "results.json"
    if not path.is_file():
        return {"runs": {}, "averaged": [], "beam_sweep": []}
    old = read_json_object(path)
    gone = {r.name: r for r in spec.runs if r not in done}
    runs = {}
    for row in old.get("runs", []):
        run = gone.get(row.get("name"))
        if run is None:
            continue
        if "settings" in row:
            same = _difference(row["settings"], _settings(run.cfg)) is None
        else:
            same = row.get("command") == shlex.join(run.command(spec.runs_dir / run.name))
        if same:
            runs[run.name] = {**row, "label": run.label,
                              "measured": row.get("measured") or {"date": old.get("date"), "cpu": old.get("cpu")}}
    return {"runs": runs, **{k: [r for r in old.get(k, []) if r.get("name") in runs] for k in ("averaged", "beam_sweep")}}


def report(spec: Spec) -> dict[str, Any]:
    """Measure the finished runs (with the kept rows of runs no longer here, see
    :func:`kept_results`) and write ``out/results.json``, ``out/table.md`` and the plots."""
    from mt.runtime import cpu_name

    done = [r for r in spec.runs if is_finished(spec.runs_dir / r.name)]
    kept = kept_results(spec, done)
    rows = [run_row(spec, r) if r in done else kept["runs"][r.name] for r in spec.runs if r in done or r.name in kept["runs"]]
    firsts = [r for r in done if r.seed == 1]
    averaged = kept["averaged"] + [row for r in done for row in averaged_rows(spec, r)] if spec.average else []
    sweep = kept["beam_sweep"] + [row for r in firsts for row in sweep_rows(spec, r)] if spec.beam_sweep else []
    spec.out.mkdir(parents=True, exist_ok=True)
    missing = [r.name for r in spec.runs if r not in done and r.name not in kept["runs"]]
    results = {"claim": spec.claim, "spec": str(spec.path), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
               "test": spec.test, "missing": missing, "runs": rows, "averaged": averaged, "beam_sweep": sweep}  # fmt: skip
    atomic_write_json(spec.out / "results.json", results)
    atomic_write_text(spec.out / "table.md", report_markdown(spec, results))
    if rows:
        plot_curves(rows, spec.claim, spec.out / "curves.png")
    plot_sweep(sweep, spec.test, spec.out / "beam_sweep.png")
    return results


def report_markdown(spec: Spec, results: dict[str, Any]) -> str:
    rows, test = results["runs"], spec.test
    md = [f"# {spec.claim}", "", f"Spec `{spec.path}`; CPU: {results['cpu']}; {results['date']}.", "", main_table(rows, test)] if rows else []
    kept = [r for r in rows if r.get("measured")]
    if kept:
        md += ["Measured earlier, their run directories no longer here (kept from the last results.json): "
               + "; ".join(f"{r['label']} ({r['measured']['date']}, {r['measured']['cpu']})" for r in kept) + "."]  # fmt: skip
    if any(r.get("backtranslation") for r in rows):
        md += ["", bt_table(rows, test)]
    if results["averaged"]:
        md += ["", averaged_table(results["averaged"], test)]
    if results["beam_sweep"]:
        md += ["", sweep_table(results["beam_sweep"], test)]
    md += ["", "Commands (each resumes; `mt ablate` runs them all):", ""] + [f"    {r['command']}" for r in rows]
    return "\n".join(md) + "\n"


# --------------------------------------------------------------------------- the command


def ablate_cli(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - {r.name for r in spec.runs}
    if unknown:
        raise ConfigError(f"--only: no run named {', '.join(sorted(unknown))} in {spec.path}")
    if args.list:
        for run in spec.runs:
            state = "done" if is_finished(spec.runs_dir / run.name) else "to run"
            print(f"{run.name:<24} {state:<7} {shlex.join(run.command(spec.runs_dir / run.name))}")
        return 0
    failed = [] if args.report_only else run_all(spec, args.jobs, only)
    results = report(spec)
    print((spec.out / "table.md").read_text(encoding="utf-8"))
    if failed or results["missing"]:
        print(f"mt ablate: not finished: {', '.join(failed or results['missing'])}", file=sys.stderr)
        return 1
    return 0


def add_ablate_parser(subparsers: Any) -> None:
    from mt.argtypes import positive_int

    p = subparsers.add_parser("ablate", help="train the variants of a config that test a claim; table and plots")
    p.add_argument("spec", help="ablation spec YAML (see recipes/ablations/)")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs trained at once (give each train.threads=1)")
    p.add_argument("--only", default=None, metavar="NAME[,NAME]", help="train only these runs (the report has all finished)")
    p.add_argument("--report-only", action="store_true", help="train nothing; tabulate the finished runs")
    p.add_argument("--list", action="store_true", help="print each run's command and whether it is done")
    p.set_defaults(func=ablate_cli)
