"""`mt backtranslate` end to end at a tiny size, resume, and config errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mt.backtranslate.pipeline import MANIFEST, Manifest, run_pipeline, stage_config, swap_corpus
from mt.cli import main
from mt.config import ConfigError, load_config
from _bt_support import bt_config


def test_smoke_whole_pipeline_then_resume_skips_everything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Round 0 + 2 BT rounds (reverse retrained on forward-translated mono.de in round 2),
    tagged, continuing from the previous round; report, plot and final model written."""
    path = bt_config(tmp_path, {"rounds": 2, "tagged": True, "continue_from_previous": True, "upsample": 2})
    assert main(["backtranslate", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    root = tmp_path / "bt"
    assert out[-1] == str(root / "final_model")
    assert (root / "final_model" / "model.safetensors").is_file() and (root / "final_model_reverse" / "config.json").is_file()

    report = json.loads((root / "bt_report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    for row in report["rounds"]:
        for side in ("forward", "reverse"):
            scores = row[side]["scores"]
            assert set(scores) == {"valid", "test1"} and 0.0 <= scores["test1"]["bleu"] <= 100.0
    r1, r2 = report["rounds"][1], report["rounds"][2]
    assert r1["reverse"]["source"] == "reused" and r2["reverse"]["source"] == "trained"
    syn = r1["synthetic"]["forward"]
    assert syn["mono"]["kept"] == 60 and syn["generation"]["sentences"] == 60
    assert syn["filter"]["read"] == 60 and syn["filter"]["kept"] + syn["filter"]["empty"] + syn["filter"]["too_long"] \
        + syn["filter"]["ratio"] + syn["filter"]["duplicate"] == 60
    assert syn["corpus"]["bitext_upsampled"] == 2 * syn["corpus"]["bitext"]
    assert syn["corpus"]["synthetic"] == syn["filter"]["kept"]
    assert "reverse" in r2["synthetic"]
    # tagged: every synthetic source starts with <bt>, the bitext part does not
    src = (root / "round1" / "corpus_forward" / "train.src").read_text().splitlines()
    n_bi = syn["corpus"]["bitext_upsampled"]
    assert not any(s.startswith("<bt>") for s in src[:n_bi]) and all(s.startswith("<bt> ") for s in src[n_bi:])
    # one SentencePiece model for every stage
    spm = {(root / f"round{r}" / d / "data" / "spm.model").read_bytes() for r, d in [(0, "forward"), (0, "reverse"), (1, "forward"), (2, "reverse")]}
    assert len(spm) == 1
    # continue_from_previous went into the derived train config
    assert "round1/forward/model_best" in (root / "round2" / "forward" / "config.yaml").read_text() or \
        "round1/forward/model_last" in (root / "round2" / "forward" / "config.yaml").read_text()
    for name in ("bt_report.md", "bt_report.png"):
        assert (root / name).stat().st_size > 0
    md = (root / "bt_report.md").read_text()
    assert "| 0 |" in md and "| 2 |" in md and "wrong language" in md

    manifest = json.loads((root / MANIFEST).read_text())
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in manifest["stages"].values())
    assert manifest["stages"]["r1.forward.generate"]["result"]["sentences_per_s"] > 0

    # a rerun without --resume refuses; with --resume every stage is skipped
    assert main(["backtranslate", str(path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["backtranslate", str(path), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "=== " not in err and "r1.forward.train: done earlier, skipped" in err


def test_control_trains_the_bitext_alone_from_the_same_start_for_the_same_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """backtranslate.control, added to a finished run with --resume: only the control stages
    run; round 1's forward training again on the bitext only, from round 0's model, for
    exactly the updates round 1's forward took; reported next to it."""
    path = bt_config(tmp_path, {"continue_from_previous": True, "upsample": 2,
                                "forward_train": {"max_steps": 6, "patience": 1}})  # fmt: skip
    run_pipeline(load_config(path), progress=False)
    ran: list[str] = []
    orig_run = Manifest.run
    monkeypatch.setattr(Manifest, "run", lambda self, name, fn: orig_run(self, name, lambda: (ran.append(name), fn())[1]))
    report = run_pipeline(load_config(path, ["backtranslate.control=true"]), resume=True, progress=False)
    assert ran == ["r1.control.prepare", "r1.control.train", "r1.control.eval"]
    root = tmp_path / "bt"
    r1 = report["rounds"][1]
    assert r1["control"]["steps"] == r1["forward"]["steps"] == 6
    assert set(r1["control"]["scores"]) == {"valid", "test1"}
    assert "control" not in report["rounds"][0]
    counts = {s: json.loads((root / "round1" / s / "data" / "manifest.json").read_text())["counts"]["train"]["pairs"]
              for s in ("forward", "control")}  # fmt: skip
    syn = r1["synthetic"]["forward"]["corpus"]
    assert counts["control"] == syn["bitext"] and counts["forward"] == syn["bitext_upsampled"] + syn["synthetic"]
    control_cfg = load_config(root / "round1" / "control" / "config.yaml")
    assert control_cfg.train.init_from == str((root / "round0" / "forward" / "model_best").resolve()) or \
        control_cfg.train.init_from == str((root / "round0" / "forward" / "model_last").resolve())
    assert control_cfg.train.max_steps == 6 and control_cfg.train.max_time_minutes is None and control_cfg.train.patience == 0
    assert not any(k.startswith("control.") for k in r1["seconds"]) and set(r1["control"]["seconds"]) >= {"control.train"}
    md = (root / "bt_report.md").read_text()
    assert "bitext-only control" in md and "| 1 | test1 | 6 |" in md


def test_resume_reruns_only_unfinished_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash inside a stage leaves it 'failed'; --resume redoes it and nothing before it."""
    cfg = load_config(bt_config(tmp_path))
    import mt.backtranslate.pipeline as pl

    real = pl.Pipeline._filter
    monkeypatch.setattr(pl.Pipeline, "_filter", lambda self, out, side: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        run_pipeline(cfg, progress=False)
    m = Manifest.load(tmp_path / "bt" / MANIFEST)
    assert m.done("r0.forward.train") and m.done("r1.forward.generate") and m.stages["r1.forward.filter"]["status"] == "failed"
    monkeypatch.setattr(pl.Pipeline, "_filter", real)
    ran: list[str] = []
    orig_run = Manifest.run
    monkeypatch.setattr(Manifest, "run", lambda self, name, fn: orig_run(self, name, lambda: (ran.append(name), fn())[1]))
    run_pipeline(cfg, resume=True, progress=False)
    assert ran[0] == "r1.forward.filter" and "r0.forward.train" not in ran and "r1.forward.generate" not in ran
    assert Manifest.load(tmp_path / "bt" / MANIFEST).stages["r1.forward.filter"]["attempts"] == 2


def test_missing_reuse_model_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = bt_config(tmp_path, {"reverse_model": str(tmp_path / "nope")})
    assert main(["backtranslate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "backtranslate.reverse_model" in err and "nope" in err
    assert not (tmp_path / "bt").exists()  # nothing was written


def test_missing_mono_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = bt_config(tmp_path, {"mono_tgt": "missing.en"})
    assert main(["backtranslate", str(path)]) == 2
    assert "backtranslate.mono_tgt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bt, field",
    [
        ({"rounds": -1}, "backtranslate.rounds"),
        ({"mono_tgt": None}, "backtranslate.mono_tgt"),
        ({"upsample": 0}, "backtranslate.upsample"),
        ({"generation": {"mode": "nucleus"}}, "backtranslate.generation.mode"),
        ({"generation": {"shard_size": 0}}, "backtranslate.generation.shard_size"),
        ({"filter": {"max_ratio": 0.5}}, "backtranslate.filter.max_ratio"),
        ({"forward_train": {"max_stepz": 3}}, "backtranslate.forward_train.max_stepz"),
        ({"reverse_train": {"lr": -1.0}}, "backtranslate.reverse_train.lr"),
        ({"continue_train": {"warmup_stepz": 1}}, "backtranslate.continue_train.warmup_stepz"),
        ({"tagged": True, "tag": "<tag>"}, "backtranslate.tag"),
        ({"colour": 1}, "backtranslate.colour"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, bt: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(bt_config(tmp_path, bt))


def test_reverse_stage_config_swaps_languages_and_corpora(tmp_path: Path) -> None:
    cfg = load_config(bt_config(tmp_path, {"reverse_train": {"max_steps": 7}}))
    rev = stage_config(cfg, "reverse", tmp_path / "r", tmp_path / "raw", spm_from=tmp_path / "spm")
    assert (rev.data.src_lang, rev.data.tgt_lang) == ("en", "de")
    assert (rev.data.train.src, rev.data.train.tgt) == ("train.en", "train.de")
    assert rev.data.test["test1"].src == "test.en" and rev.train.max_steps == 7 and rev.data.fetch is None
    assert rev.data.spm_from == str((tmp_path / "spm").resolve()) and rev.run_dir == str(tmp_path / "r")
    assert swap_corpus({"format": "tsv", "src_field": None, "tgt_field": None}, "x") == {"format": "tsv", "src_field": "1", "tgt_field": "0"}
    # a valid list turns round entry by entry
    two = [{"src": "v.de", "tgt": "v.en"}, {"format": "jsonl", "path": "w.jsonl"}]
    cfg = load_config(bt_config(tmp_path, {}), [f"data.valid={two}"])
    v = stage_config(cfg, "reverse", tmp_path / "r", tmp_path / "raw").data.valid
    assert [(v[0].src, v[0].tgt), (v[1].src_field, v[1].tgt_field)] == [("v.en", "v.de"), (None, None)]


def test_continue_train_overrides_apply_only_to_continued_stages(tmp_path: Path) -> None:
    cfg = load_config(bt_config(tmp_path, {"forward_train": {"max_steps": 7, "lr": 0.002},
                                           "continue_train": {"max_steps": 3, "warmup_steps": 5}}))  # fmt: skip
    fresh = stage_config(cfg, "forward", tmp_path / "f0", tmp_path / "raw")
    cont = stage_config(cfg, "forward", tmp_path / "f1", tmp_path / "raw", init_from=tmp_path / "prev")
    assert (fresh.train.max_steps, fresh.train.init_from) == (7, None)
    assert (cont.train.max_steps, cont.train.warmup_steps, cont.train.lr) == (3, 5, 0.002)
    assert cont.train.init_from == str((tmp_path / "prev").resolve())


def test_recipe_configs_load_and_point_the_right_way() -> None:
    repo = Path(__file__).resolve().parents[1]
    for pair in ("de_en", "en_de"):
        for profile in ("", "_quick", "_gpu"):
            cfg = load_config(repo / "recipes" / "configs" / f"bt_multi30k_{pair}{profile}.yaml")
            src, tgt = pair.split("_")
            bt = cfg.backtranslate
            assert (cfg.data.src_lang, cfg.data.tgt_lang) == (src, tgt) and "test2016" in cfg.data.test
            assert bt.mono_tgt.endswith(f"mono.{tgt}") and bt.mono_src.endswith(f"mono.{src}")
            assert bt.tag in cfg.data.spm.user_symbols and bt.rounds >= 1
    for script in ("multi30k_de_en.sh", "multi30k_en_de.sh", "_multi30k_bt.sh"):
        assert (repo / "recipes" / script).is_file()


def test_given_models_are_used_as_round_0(tmp_path: Path) -> None:
    """forward_model / reverse_model: no round-0 training; their vocabulary is everyone's."""
    from _bt_support import random_model

    from mt.data.prepare import prepare
    from mt.data.text import TextPipeline

    path = bt_config(tmp_path)
    cfg = load_config(path)
    base = stage_config(cfg, "forward", tmp_path / "base", tmp_path / "raw")
    data = prepare(base, progress=False)
    fwd = random_model(tmp_path / "fwd", data)
    text = TextPipeline.load(data)
    rev_text = tmp_path / "rev_text"
    TextPipeline("en", "de", data / "spm.model", data / "spm.model", False, num_threads=1).save(rev_text)
    rev = random_model(tmp_path / "rev", rev_text, seed=1)
    cfg = load_config(path, [f"backtranslate.forward_model={fwd}", f"backtranslate.reverse_model={rev}"])
    report = run_pipeline(cfg, progress=False)
    r0, r1 = report["rounds"]
    assert r0["forward"]["source"] == "given" and r0["forward"]["model"] == str(fwd)
    assert r1["reverse"]["model"] == str(rev) and r1["forward"]["source"] == "trained"
    manifest = Manifest.load(tmp_path / "bt" / MANIFEST)
    assert "r0.forward.train" not in manifest.stages and "r0.reverse.train" not in manifest.stages
    if sys.platform.startswith("linux"):  # each stage's own memory, and each round's highest
        train = manifest.stages["r1.forward.train"]
        assert 0 < train["rss_end_mib"] <= train["rss_peak_mib"] <= r1["peak_rss_mib"]
        assert r1["peak_rss_mib"] == max(v["rss_peak_mib"] for k, v in manifest.stages.items() if k.startswith("r1."))
        # generation ran in a child process; its stage peak counts that process too
        generate = manifest.stages["r1.forward.generate"]
        assert 0 < generate["result"]["child_rss_peak_mib"] < generate["rss_peak_mib"]
        assert "peak RSS GiB" in (tmp_path / "bt" / "bt_report.md").read_text(encoding="utf-8")
    assert (tmp_path / "bt" / "round1" / "forward" / "data" / "spm.model").read_bytes() == (data / "spm.model").read_bytes()
    assert text.vocab_size == TextPipeline.load(tmp_path / "bt" / "round1" / "forward" / "data").vocab_size

    # a model of the wrong direction is refused before any work
    with pytest.raises(ConfigError, match="backtranslate.forward_model: .* translates en-de, expected de-en"):
        run_pipeline(load_config(path, [f"backtranslate.forward_model={rev}", f"run_dir={tmp_path / 'other'}"]))
    assert not (tmp_path / "other").exists()


def test_pipeline_refuses_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["backtranslate", str(bt_config(tmp_path))]) == 2
    assert "mt.backtranslate.generate" in capsys.readouterr().err


def test_a_second_pipeline_or_recipe_in_a_busy_run_dir_stops_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`mt backtranslate` and `mt recipe run` each hold their run_dir: a second one on the same
    directory stops with one line naming it, before it reads or writes a manifest."""
    from mt.fileio import exclusive_dir

    path = bt_config(tmp_path)
    run = load_config(path).run_path
    for argv, lock, what in ((["backtranslate", str(path)], ".backtranslate.lock", "`mt backtranslate`"),
                             (["recipe", "run", str(path)], ".recipe.lock", "`mt recipe run`")):  # fmt: skip
        with exclusive_dir(run, "running " + what, lock=lock):
            assert main(argv) == 2
            assert sorted(p.name for p in run.iterdir()) == [lock]  # nothing but the test's own lock
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{run}: another process (pid" in err and f"is already running {what}" in err


def test_unspaced_language_lengths_reach_the_mono_and_synthetic_filters(tmp_path: Path) -> None:
    """en→zh: the bitext's characters-per-word ratio sets the Chinese limits of the mono cleaning
    and of the synthetic-pair filter (counted in whitespace tokens, every Chinese line is one)."""
    from mt.backtranslate.pipeline import Pipeline
    from _bt_support import write

    raw = tmp_path / "zhraw"
    en = ["I like this book very much.", "Where is the nearest train station?", "Please close the window."] * 10
    zh = ["我非常喜欢这本书。", "最近的火车站在哪里？", "请把窗户关上。"] * 10  # 9-10 characters : 5-6 words
    write(raw / "train.en", en)
    write(raw / "train.zh", zh)
    write(raw / "mono.zh", ["今天天气很好。", "今天天气很好，我们去公园散步吧，然后一起吃晚饭，晚上再看一部电影。"])
    data = {"src_lang": "en", "tgt_lang": "zh", "data_dir": str(raw), "train": {"src": "train.en", "tgt": "train.zh"},
            "valid": {"src": "train.en", "tgt": "train.zh"}, "spm": {"vocab_size": 64, "num_threads": 1}}  # fmt: skip
    cfg = load_config(bt_config(tmp_path, {"mono_tgt": "mono.zh", "mono_src": None, "filter": {"max_tokens": 10}}, data=data))
    p = Pipeline(cfg)
    cleaned = p._clean_bitext()
    assert cleaned["clean"]["kept"] == 3 and cleaned["clean"]["ratio"] == 0  # the rest are duplicates
    assert (cleaned["lengths"]["tgt_unit"], p._lengths.tgt_unit) == ("char", "char") and 0.4 < p._lengths.scale < 0.8
    mono = p._clean_mono("tgt")  # max_tokens 10 words ≈ 17 Chinese characters here: the 33-character line goes
    assert (mono["kept"], mono["too_long"]) == (1, 1)
    out = tmp_path / "gen"
    write(out / "synthetic.txt", ["The weather is nice today."])
    assert p._filter(out, "tgt")["kept"] == 1  # 5 English words : 7 characters is an ordinary pair


def test_a_weak_reverse_model_is_warned_about_unless_a_control_measures_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mt.backtranslate.pipeline import WEAK_REVERSE_BLEU, Pipeline

    weak = {"direction": "en-de", "scores": {"valid": {"bleu": WEAK_REVERSE_BLEU - 15}}}
    strong = {"direction": "en-de", "scores": {"valid": {"bleu": WEAK_REVERSE_BLEU + 5}}}
    p = Pipeline(load_config(bt_config(tmp_path / "a")))
    p._warn_if_weak(weak)
    assert "warning: the en-de model writing the synthetic sources scores 5.0 valid BLEU" in capsys.readouterr().err
    p._warn_if_weak(strong)
    Pipeline(load_config(bt_config(tmp_path / "b", {"control": True})))._warn_if_weak(weak)
    assert capsys.readouterr().err == ""
