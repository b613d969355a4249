"""`mt ablate SPEC`: a spec's runs trained in child processes, reused when the settings match,
refused when they do not, and measured into results.json / table.md / plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import mt.ablate as ablate
from mt.cli import main
from mt.config import ConfigError
from _bt_support import bt_config


def tiny_config(tmp_path: Path) -> Path:
    """A d32 de→en config without back-translation: 6 updates, a checkpoint every 2 (3 kept)."""
    path = bt_config(tmp_path, bt={"rounds": 0})
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["train"].update(max_steps=6, save_every=2, keep_last=3, valid_every=3)
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def write_spec(tmp_path: Path, runs: list[dict], **extra) -> Path:
    spec = {"claim": "a tiny claim", "config": "bt.yaml", "runs_dir": str(tmp_path / "runs"),
            "out": str(tmp_path / "out"), "test": "test1", "runs": runs, **extra}  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_ablate_trains_each_run_once_and_measures_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_config(tmp_path)
    runs = [{"name": "base", "label": "ε = 0.1"}, {"name": "ls0", "label": "ε = 0", "set": {"train.label_smoothing": 0.0}}]
    spec = write_spec(tmp_path, runs, average=[1, 2], beam_sweep={"beams": [1, 2], "modes": ["avg", "none"], "decode": {"min_len": 0}})
    assert main(["ablate", str(spec), "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("started: mt recipe run") == 2 and err.count("finished") == 2

    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in results["runs"]}
    assert set(rows) == {"base", "ls0"} and results["missing"] == []
    for r in rows.values():
        assert r["steps"] == 6 and r["diverged"] is False and 0 <= r["test_bleu"] <= 100 and r["valid_nll"] > 0
        # scored at equal updates: the last update's model, not the recipe's best checkpoint
        assert (r["model"], r["model_step"], r["dtype"]) == ("last update", 6, "fp32")
    # the variant really trained with its override: the two runs' losses differ at equal updates
    assert rows["base"]["train_loss"] != rows["ls0"]["train_loss"]
    assert rows["ls0"]["train_loss"] == rows["ls0"]["train_nll"] != rows["base"]["train_nll"]  # ε = 0: loss is the NLL
    saved = yaml.safe_load((tmp_path / "runs" / "ls0" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["label_smoothing"] == 0.0 and saved["run_dir"] == str(tmp_path / "runs" / "ls0")
    assert "--set train.label_smoothing=0.0" in rows["ls0"]["command"]

    averaged = [(r["name"], r["model"]) for r in results["averaged"]]
    assert averaged == [(n, m) for n in ("base", "ls0") for m in ("best single (valid BLEU)", "last single", "last 2 averaged")]
    steps = json.loads((tmp_path / "runs" / "base" / "average_last2" / "config.json").read_text(encoding="utf-8"))
    assert steps["meta"]["steps"] == [4, 6]
    assert [(r["length_norm"], r["beam"]) for r in results["beam_sweep"]][:4] == [("avg", 1), ("avg", 2), ("none", 1), ("none", 2)]
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| ε = 0 | 6 |" in table and "last 2 averaged" in table and "| ε = 0.1 | none | 2 |" in table
    assert (out / "curves.png").stat().st_size > 0 and (out / "beam_sweep.png").stat().st_size > 0

    # a second call trains nothing; the same name with other settings is refused
    kept = ("report.json", "eval_ablate/test1.json", "eval_ablate/test1.sweep.json")
    before = [(tmp_path / "runs" / "ls0" / f).stat().st_mtime_ns for f in kept]
    assert main(["ablate", str(spec), "--jobs", "2"]) == 0
    assert "started" not in capsys.readouterr().err
    assert [(tmp_path / "runs" / "ls0" / f).stat().st_mtime_ns for f in kept] == before  # nothing measured again
    assert [p[0] for p in rows["ls0"]["curves"]["valid_nll"]] == [3, 6] and len(rows["ls0"]["curves"]["train_nll"]) >= 2

    # a run directory that is gone (a fresh clone) keeps its row, curves included, while its settings match
    (tmp_path / "runs" / "ls0").rename(tmp_path / "ls0.away")
    assert main(["ablate", str(spec), "--report-only"]) == 0
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    kept_row = next(r for r in again["runs"] if r["name"] == "ls0")
    assert again["missing"] == [] and kept_row["measured"] == {"date": results["date"], "cpu": results["cpu"]}
    assert {k: kept_row[k] for k in ("test_bleu", "curves")} == {k: rows["ls0"][k] for k in ("test_bleu", "curves")}
    assert [r["name"] for r in again["averaged"]].count("ls0") == 3
    assert "Measured earlier" in (out / "table.md").read_text(encoding="utf-8")
    runs[1]["set"] = {"train.label_smoothing": 0.2}  # ... and not once the spec asks for other settings
    write_spec(tmp_path, runs)
    assert main(["ablate", str(spec), "--report-only"]) == 1
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["missing"] == ["ls0"]
    assert "not finished: ls0" in capsys.readouterr().err
    (tmp_path / "ls0.away").rename(tmp_path / "runs" / "ls0")

    (tmp_path / "runs" / "ls0" / "report.json").unlink()  # unfinished: it would run again
    assert main(["ablate", str(spec)]) == 2
    line = error_line(capsys)
    assert str(tmp_path / "runs" / "ls0") in line and "train.label_smoothing: 0.0 there, 0.2 here" in line


def test_a_run_trained_before_is_adopted_only_with_the_same_settings(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    run = ablate.load_spec(write_spec(tmp_path, [{"name": "r", "set": {"train.lr": 0.002}}])).runs[0]
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    from mt.config import ExperimentConfig, from_dict, to_dict

    def write_snapshot(lr: float) -> None:
        """config.yaml as `mt train` writes it, from an older mt (no spm.seed) with other speed settings."""
        snapshot = yaml.safe_load(config.read_text(encoding="utf-8"))
        snapshot["train"].update(lr=lr, threads=2)
        full = to_dict(from_dict(ExperimentConfig, snapshot))
        full["decode"]["dtype"] = "fp32"
        del full["data"]["spm"]["seed"]
        (run_dir / "config.yaml").write_text(yaml.safe_dump(full), encoding="utf-8")

    write_snapshot(0.002)
    ablate.claim_run_dir(run, run_dir)
    assert json.loads((run_dir / ablate.RECORD).read_text(encoding="utf-8"))["name"] == "r"
    (run_dir / ablate.RECORD).unlink()
    write_snapshot(0.003)
    with pytest.raises(ConfigError, match=r"train.lr: 0.003 there, 0.002 here"):
        ablate.claim_run_dir(run, run_dir)


def test_a_record_from_before_a_setting_existed_matches_only_that_settings_default(tmp_path: Path) -> None:
    tiny_config(tmp_path)
    spec = ablate.load_spec(write_spec(tmp_path, [{"name": "r"}, {"name": "e", "set": {"train.ema_decay": 0.999}}]))
    for run in spec.runs:
        run_dir = tmp_path / "runs" / run.name
        run_dir.mkdir(parents=True)
        settings = ablate._settings(run.cfg)
        del settings["train.ema_decay"]  # recorded by an mt without train.ema_decay
        (run_dir / ablate.RECORD).write_text(json.dumps({"name": run.name, "settings": settings}), encoding="utf-8")
    ablate.claim_run_dir(spec.runs[0], tmp_path / "runs" / "r")  # 0.0 is what the old run had
    with pytest.raises(ConfigError, match=r"train.ema_decay: None there, 0.999 here"):
        ablate.claim_run_dir(spec.runs[1], tmp_path / "runs" / "e")


def test_seeds_expand_each_run_with_the_next_seeds(tmp_path: Path) -> None:
    tiny_config(tmp_path)
    runs = [{"name": "a"}, {"name": "b", "set": {"train.seed": 10, "train.lr": 0.002}}]
    spec = ablate.load_spec(write_spec(tmp_path, runs, seeds=3, set={"train.lr": 0.001}))
    assert [(r.name, r.seed, r.overrides) for r in spec.runs] == [
        ("a", 1, ["train.lr=0.001"]), ("a.seed2", 2, ["train.lr=0.001", "train.seed=2"]),
        ("a.seed3", 3, ["train.lr=0.001", "train.seed=3"]),
        ("b", 1, ["train.lr=0.001", "train.lr=0.002", "train.seed=10"]),
        ("b.seed2", 2, ["train.lr=0.001", "train.lr=0.002", "train.seed=10", "train.seed=11"]),
        ("b.seed3", 3, ["train.lr=0.001", "train.lr=0.002", "train.seed=10", "train.seed=12"]),
    ]  # fmt: skip


def test_a_run_can_keep_fewer_seeds_than_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_config(tmp_path)
    spec = ablate.load_spec(write_spec(tmp_path, [{"name": "shared", "seeds": 1}, {"name": "a"}], seeds=3))
    assert [r.name for r in spec.runs] == ["shared", "a", "a.seed2", "a.seed3"]
    assert main(["ablate", str(write_spec(tmp_path, [{"name": "shared", "seeds": 0}], seeds=3))]) == 2
    assert error_line(capsys).endswith("runs[0].seeds: must be >= 1, got 0")


def test_seed_keys_shift_every_named_setting(tmp_path: Path) -> None:
    tiny_config(tmp_path)
    spec = ablate.load_spec(write_spec(tmp_path, [{"name": "a", "set": {"decode.seed": 7}}], seeds=2,
                                       seed_keys=["train.seed", "decode.seed"]))  # fmt: skip
    assert [r.overrides for r in spec.runs] == [["decode.seed=7"], ["decode.seed=7", "train.seed=2", "decode.seed=8"]]
    assert spec.runs[1].cfg.decode.seed == 8 and spec.runs[1].cfg.train.seed == 2


@pytest.mark.parametrize("change, needle", [
    ({"seeds": 0}, "spec.yaml.seeds: must be >= 1, got 0"),
    ({"seeds": 2, "seed_keys": ["train.lr"]}, "spec.yaml.seed_keys: 'train.lr' is not an integer setting"),
    ({"seeds": 2, "seed_keys": ["train.nope"]}, "spec.yaml.seed_keys: 'train.nope' is not an integer setting of the config (got None)"),
    ({"seed_keys": "train.seed"}, "spec.yaml.seed_keys: expected list"),
    ({"test": "nope"}, "spec.yaml.test: 'nope' is not a test set of"),
    ({"runs": [{"name": "a"}, {"name": "a"}]}, "spec.yaml.runs[1].name: must be a unique"),
    ({"runs": [{"name": "a", "set": {"train.lr": -1}}]}, "train.lr: must be positive"),
    ({"average": [0]}, "spec.yaml.average: expected positive checkpoint counts"),
    ({"beam_sweep": {"beams": [1], "modes": ["long"]}}, "spec.yaml.beam_sweep.modes: expected some of avg, gnmt, none"),
    ({"claim": None}, "spec.yaml.claim: expected str"),
    ({"beam_sweep": {"beams": [1], "decode": {"min_len": -1}}}, "spec.yaml.beam_sweep.decode.min_len: must be >= 0"),
])  # fmt: skip
def test_spec_errors_are_one_line_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture, change: dict, needle: str) -> None:
    tiny_config(tmp_path)
    spec = write_spec(tmp_path, [{"name": "a"}])
    data = yaml.safe_load(spec.read_text(encoding="utf-8")) | change
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["ablate", str(spec), "--list"]) == 2
    assert needle in error_line(capsys)


def test_unknown_only_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_config(tmp_path)
    spec = write_spec(tmp_path, [{"name": "a"}])
    assert main(["ablate", str(spec), "--only", "a,zz"]) == 2
    assert "--only: no run named zz" in error_line(capsys)


def test_training_summary_flags_divergence(tmp_path: Path) -> None:
    def summary(losses: list[float]) -> dict:
        lines = [{"kind": "train", "step": 10 * (i + 1), "loss": x, "elapsed": 60.0 * i} for i, x in enumerate(losses)]
        lines.append({"kind": "valid", "step": 10 * len(losses), "nll": 2.0, "ppl": math.exp(2.0), "bleu": 5.0})
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        return ablate.training_summary(tmp_path)

    ok = summary([8.0, 5.0, 4.0, 3.9])
    assert ok["diverged"] is False and ok["steps"] == 40 and ok["min_train_loss"] == 3.9 and ok["valid_bleu"] == 5.0
    assert summary([8.0, 5.0, float("nan")])["diverged"] is True
    assert summary([8.0, 4.0, 5.5])["diverged"] is True  # came apart after reaching 4.0


def test_a_back_translation_run_is_scored_by_its_last_rounds_forward_model(tmp_path: Path) -> None:
    """Its ``final_model`` is the best over rounds, possibly round 0's, which no synthetic data
    went into: the claim compares the last round's forward training at its last update."""
    def trained(d: Path) -> Path:
        (d / "model_last").mkdir(parents=True)
        (d / "model_last" / "config.json").write_text("{}", encoding="utf-8")
        (d / "metrics.jsonl").write_text('{"kind": "train", "step": 7, "loss": 3.0, "elapsed": 60.0}\n', encoding="utf-8")
        return d

    bt = tmp_path / "bt"
    (bt / "final_model").mkdir(parents=True)
    assert ablate.compared_model(bt) == (bt / "final_model", "final model")  # nothing trained in it (yet)
    trained(bt / "round0" / "reverse")
    for r in (0, 1, 2):
        trained(bt / f"round{r}" / "forward")
    assert ablate.trained_dir(bt) == bt / "round2" / "forward"
    assert ablate.compared_model(bt) == (bt / "round2" / "forward" / "model_last", "round2, last update")
    assert ablate.training_summary(ablate.trained_dir(bt))["steps"] == 7
    plain = trained(tmp_path / "plain")
    trained(plain / "round1" / "forward")  # a plain run's own training comes first
    assert ablate.compared_model(plain) == (plain / "model_last", "last update")


def test_main_table_pools_seeds_as_mean_and_range() -> None:
    rows = [{"label": "A", "steps": 100, "test_bleu": b, "test_chrf": 50.0, "valid_ppl": 6.0, "train_nll": 2.0,
             "diverged": False, "train_minutes": m, "test_mean_len": 11.5, "precision": "bf16"}
            for b, m in ((30.0, 9.0), (31.0, 10.0), (32.5, 11.0))]  # fmt: skip
    table = ablate.main_table(rows, "t")
    assert "| A | 100 | 31.17 (30.00–32.50) | 50.00 | 11.50 | 6.00 | 2.000 | no, no, no | 10.0 (9.0–11.0) | bf16 | 3 |" in table


def test_averaged_table_pools_seeds_and_measures_each_gain_against_its_own_best_checkpoint() -> None:
    def rows(name: str, best: float, last3: float) -> list[dict]:
        return [{"name": name, "label": "A", "model": m, "bleu": b, "chrf": b + 20, "mean_len": 11.0}
                for m, b in (("best single (valid BLEU)", best), ("last 3 averaged", last3))]  # fmt: skip

    # seed 2 has the lower best but the larger gain: pooled absolute scores would hide that
    table = ablate.averaged_table(rows("a", 40.0, 41.0) + rows("a.seed2", 38.0, 40.0), "t")
    assert "| A | last 3 averaged | 40.50 (40.00–41.00) | 60.50 (60.00–61.00) | 11.00 | 1.50 (1.00–2.00) | 1.50 (1.00–2.00) | 2 |" in table
    assert "| A | best single (valid BLEU) | 39.00 (38.00–40.00) | 59.00 (58.00–60.00) | 11.00 | 0.00 | 0.00 | 2 |" in table
    one = ablate.averaged_table(rows("a", 40.0, 39.5), "t")
    assert "| A | last 3 averaged | 39.50 | 59.50 | 11.00 | -0.50 | -0.50 |" in one and "seeds" not in one


def test_every_seed_gets_its_averages_but_only_the_first_its_beam_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_config(tmp_path)
    spec = ablate.load_spec(write_spec(tmp_path, [{"name": "a", "label": "A"}], seeds=2, average=[2],
                                       beam_sweep={"beams": [1], "modes": ["avg"]}))  # fmt: skip
    monkeypatch.setattr(ablate, "is_finished", lambda run_dir: True)
    monkeypatch.setattr(ablate, "run_row", lambda spec, run: {"name": run.name, "label": run.label, "test_bleu": 1.0,
                                                          "test_chrf": 2.0, "command": "mt recipe run"})
    monkeypatch.setattr(ablate, "averaged_rows", lambda spec, run: [{"name": run.name, "label": run.label, "model": "best single (valid BLEU)",
                                                                     "bleu": 1.0, "chrf": 2.0, "mean_len": 3.0}])  # fmt: skip
    monkeypatch.setattr(ablate, "sweep_rows", lambda spec, run: [{"name": run.name, "label": run.label, "length_norm": "avg", "beam": 1,
                                                                  "bleu": 1.0, "chrf": 2.0, "mean_len": 3.0, "empty": 0}])  # fmt: skip
    monkeypatch.setattr(ablate, "plot_curves", lambda *a: None)
    monkeypatch.setattr(ablate, "plot_sweep", lambda *a: None)
    results = ablate.report(spec)
    assert [r["name"] for r in results["averaged"]] == ["a", "a.seed2"]
    assert [r["name"] for r in results["beam_sweep"]] == ["a"]


def test_runs_stopped_at_different_updates_compare_at_the_update_all_reached() -> None:
    def row(label: str, steps: int, curve: list) -> dict:
        return {"label": label, "steps": steps, "test_bleu": 1.0, "test_chrf": 2.0, "train_nll": curve[-1][1],
                "curves": {"train_nll": curve}}  # fmt: skip

    rows = [row("shallow", 600, [[50, 6.0], [300, 4.0], [350, 3.5], [600, 2.0]]), row("deep", 320, [[50, 7.0], [300, 5.5]])]
    table = ablate.main_table(rows, "t")
    assert "| train NLL at update 320 |" in table
    assert "| shallow | 600 | 1.00 | 2.00 | – | – | 2.000 | 4.000 |" in table  # its log at 300, not at 350
    assert "| deep | 320 | 1.00 | 2.00 | – | – | 5.500 | 5.500 |" in table
    assert "at update" not in ablate.main_table(rows[:1], "t")  # one stopping point: no such column


def test_back_translation_runs_get_a_table_per_round_with_controls(tmp_path: Path) -> None:
    def side(bleu: float) -> dict:
        return {"scores": {"t": {"bleu": bleu, "chrf": bleu * 3}, "valid": {"bleu": 1.0, "chrf": 2.0}}}

    report = {"rounds": [{"round": 0, "forward": side(7.0), "reverse": side(5.0)},
                         {"round": 1, "forward": side(8.0), "reverse": side(5.0), "control": side(8.5)}]}  # fmt: skip
    (tmp_path / "bt_report.json").write_text(json.dumps(report), encoding="utf-8")
    summary = ablate.bt_summary(tmp_path, "t")
    assert summary["reverse_r0"] == {"bleu": 5.0, "chrf": 15.0}
    assert [(r["round"], r["forward"]["bleu"], r["control"] and r["control"]["bleu"]) for r in summary["rounds"]] == [(0, 7.0, None), (1, 8.0, 8.5)]
    assert ablate.bt_summary(tmp_path / "none", "t") == {}
    table = ablate.bt_table([{"label": "A", "backtranslation": summary}, {"label": "B", "backtranslation": {}}], "t")
    assert "| A | 5.00 / 15.00 | 7.00 / 21.00 | 8.00 / 24.00 (control 8.50 / 25.50) |" in table and "| B |" not in table


SHIPPED_SPECS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "ablations").glob("*.yaml"))


def test_every_shipped_spec_loads_and_runs_shared_by_name_agree() -> None:
    """The specs in recipes/ablations validate, and a run name that several of them use (the
    base, bt_beam) means the same settings in each: otherwise the second spec would be refused
    at run time, after the first had trained."""
    specs = [ablate.load_spec(p) for p in SHIPPED_SPECS if p.name != "multi30k_de_en.yaml"]  # that one is a config
    assert len(specs) >= 10
    seen: dict[str, tuple[Path, dict]] = {}
    for spec in specs:
        for run in spec.runs:
            settings = ablate._settings(run.cfg)
            if run.name in seen:
                where, first = seen[run.name]
                assert ablate._difference(first, settings) is None, f"{run.name}: {where.name} vs {spec.path.name}"
            else:
                seen[run.name] = (spec.path, settings)
    assert "bt_beam" in seen and "base" in seen


def test_a_run_that_starts_from_another_runs_model_waits_for_the_stage_that_trains_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``b`` starts from ``a``'s round-0 reverse model: it starts once ``a``'s bt_manifest marks
    ``r0.reverse.train`` done (before ``a`` ends: ``--jobs 2``), not before; ``c`` starts from a
    run that nothing trains and fails at once, naming the path and the run to train first;
    ``d`` starts from a run that another process is training (it holds the run's recipe lock):
    it waits for it, after ``a`` has ended too."""
    import contextlib

    from mt.fileio import exclusive_dir
    from mt.recipe import RECIPE_LOCK

    tiny_config(tmp_path)
    runs_dir = tmp_path / "runs"
    runs = [{"name": "a", "label": "a"},
            {"name": "b", "label": "b", "set": {"backtranslate.reverse_model": str(runs_dir / "a/round0/reverse/model_best")}},
            {"name": "c", "label": "c", "set": {"backtranslate.forward_model": str(runs_dir / "elsewhere/final_model")}},
            {"name": "d", "label": "d", "set": {"backtranslate.forward_model": str(runs_dir / "other/round0/forward/model_best")}}]  # fmt: skip
    spec = ablate.load_spec(write_spec(tmp_path, runs))
    assert [(n.run, n.stage) for n in ablate.needs(spec.runs[1], runs_dir)] == [("a", "r0.reverse.train")]
    assert [(n.run, n.stage) for n in ablate.needs(spec.runs[2], runs_dir)] == [("elsewhere", None)]

    events: list[str] = []

    class FakeTraining:
        """``a`` passes round 0's reverse training on its 2nd poll and ends on its 4th; others end on their 1st."""

        def __init__(self, name: str) -> None:
            self.name, self.polls, self.returncode = name, 0, None

        def poll(self) -> int | None:
            self.polls += 1
            run = runs_dir / self.name
            if self.name == "a" and self.polls == 2:
                (run / "bt_manifest.json").write_text(json.dumps({"stages": {"r0.reverse.train": {"status": "done"}}}))
                events.append("a: r0.reverse.train done")
            if self.name == "a" and self.polls == 4:  # meanwhile the other process trains other's round 0 and ends
                (runs_dir / "other" / "bt_manifest.json").write_text(json.dumps({"stages": {"r0.forward.train": {"status": "done"}}}))
                other_process.close()
            if self.name != "a" or self.polls == 4:
                (run / "report.json").write_text("{}")
                events.append(f"{self.name} finished")
                self.returncode = 0
            return self.returncode

    def fake_start(run: ablate.Run, where: Path):
        events.append(f"{run.name} started")
        return run, FakeTraining(run.name), 0.0

    monkeypatch.setattr(ablate, "_start", fake_start)
    monkeypatch.setattr(ablate.time, "sleep", lambda s: None)
    other_process = contextlib.ExitStack()
    other_process.enter_context(exclusive_dir(runs_dir / "other", "running `mt recipe run`", lock=RECIPE_LOCK))
    assert ablate.run_all(spec, jobs=2) == ["c"]
    assert events == ["a started", "a: r0.reverse.train done", "b started", "b finished", "a finished",
                      "d started", "d finished"]  # fmt: skip
    err = capsys.readouterr().err
    assert f"c FAILED: it starts from {runs_dir / 'elsewhere/final_model'}, which run 'elsewhere' has not trained yet" in err
