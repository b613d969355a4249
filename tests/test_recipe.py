"""`mt recipe init` / `mt recipe run`: the size table, the written config, its errors, and a
whole run on a language pair the project has never seen (xh→zu labels on synthetic text), served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mt.recipe as recipe
from mt.cli import main
from mt.config import load_config
from _bt_support import corpus, write
from _data_support import DATA

REPO = Path(__file__).resolve().parents[1]

# a d32 1+1-layer model, a few updates per training, tiny decoding: a whole run in seconds
TINY = [
    "model.d_model=32", "model.n_heads=2", "model.enc_layers=1", "model.dec_layers=1", "model.ffn_dim=64",
    "model.max_positions=64", "data.spm.vocab_size=320", "data.spm.num_threads=1",
    "train.max_steps=4", "train.valid_every=4", "train.save_every=4", "train.warmup_steps=2", "train.threads=1",
    "train.max_tokens=400", "train.log_every=2", "train.valid_bleu=false", "train.best_metric=loss",
    "train.progress=off", "train.peak_tflops=0.1", "decode.beam=2", "decode.max_len_b=5",
]  # fmt: skip
TINY_BT = [
    "backtranslate.rounds=1", "backtranslate.shard_size=25", "backtranslate.device=cpu",
    "backtranslate.generation.max_len_b=5", "backtranslate.continue_train.max_steps=4",
]  # fmt: skip


def pair_files(root: Path, name: str, n: int, offset: int, langs: tuple[str, str] = ("xh", "zu")) -> str:
    """``n`` synthetic pairs as two files; returns ``SRC,TGT`` for a corpus flag."""
    src, tgt = corpus(n, offset)
    write(root / f"{name}.{langs[0]}", src)
    write(root / f"{name}.{langs[1]}", tgt)
    return f"{root / f'{name}.{langs[0]}'},{root / f'{name}.{langs[1]}'}"


def init_args(tmp_path: Path, *extra: str, out: str = "recipe.yaml") -> list[str]:
    return ["recipe", "init", "--src", "xh", "--tgt", "zu", "--run-dir", str(tmp_path / "run"),
            "--out", str(tmp_path / out), *extra]  # fmt: skip


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --------------------------------------------------------------------------- the size table


def test_size_table_scales_with_the_corpus() -> None:
    small, large = recipe.settings_for(17_000), recipe.settings_for(5_000_000)
    assert (small.bucket, large.bucket) == ("very_low", "very_high")
    assert small.parameters() < large.parameters() / 5
    assert small.vocab_size < large.vocab_size and small.dropout > large.dropout
    assert small.max_tokens * small.update_freq < large.max_tokens * large.update_freq
    assert small.max_steps < large.max_steps and (small.bt_rounds, large.bt_rounds) == (2, 1)
    assert small.bt_sampling == "none" and large.bt_sampling == "topk"  # beam BT at low resource

    table = recipe.SIZE_TABLE
    bounds = [s.below for s in table]
    assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1])  # type: ignore[type-var]
    for a, b in zip(table, table[1:]):  # monotone in size: never a smaller model, vocabulary, batch or budget
        assert a.parameters() <= b.parameters() and a.vocab_size <= b.vocab_size
        assert a.max_tokens * a.update_freq <= b.max_tokens * b.update_freq and a.max_steps <= b.max_steps
        assert a.bt_rounds >= b.bt_rounds
        assert recipe.settings_for(a.below - 1) is a and recipe.settings_for(a.below) is b  # type: ignore[operator]
    assert table[0].dropout == max(s.dropout for s in table) and table[-1].dropout == min(s.dropout for s in table)


def test_the_29k_row_is_the_projects_multi30k_recipe() -> None:
    """The evidence the table cites: Multi30k's 29k pairs get the architecture of the measured recipe."""
    cfg = yaml.safe_load((REPO / "recipes/configs/multi30k_de_en_cpu45.yaml").read_text(encoding="utf-8"))
    s = recipe.settings_for(29_000)
    m = cfg["model"]
    assert (s.d_model, s.n_heads, s.layers, s.layers, s.ffn_dim, s.dropout) == (
        m["d_model"], m["n_heads"], m["enc_layers"], m["dec_layers"], m["ffn_dim"], m["dropout"])
    assert (s.vocab_size, s.max_tokens, s.lr) == (cfg["data"]["spm"]["vocab_size"], cfg["train"]["max_tokens"], cfg["train"]["lr"])


# --------------------------------------------------------------------------- init


def test_init_writes_a_commented_config_that_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "raw"
    train = pair_files(raw, "train", 300, 0)
    valid, test = pair_files(raw, "val", 20, 1), pair_files(raw, "test", 20, 2)
    args = init_args(tmp_path, "--train", train, "--valid", valid, "--test", f"t1={test}", "--max-minutes", "30")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "300 training pairs → size bucket 'tiny'" in out and "d_model 256" in out and "vocabulary 2000" in out

    text = (tmp_path / "recipe.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Written by: mt recipe init --src xh --tgt zu --train ")
    assert "size bucket 'tiny'" in text and "Sennrich & Zhang 2019" in text
    assert "dropout: 0.3  # tiny bucket" in text  # the chosen values carry their reason
    cfg = load_config(tmp_path / "recipe.yaml")
    assert (cfg.data.src_lang, cfg.data.tgt_lang) == ("xh", "zu")
    assert cfg.model.resolved().d_model == 256 and cfg.data.spm.vocab_size == 2000 and cfg.model.dropout == 0.3
    assert cfg.train.max_time_minutes == 30 and cfg.backtranslate is None
    assert set(cfg.data.test) == {"t1"} and cfg.run_dir == str(tmp_path / "run")

    # never overwritten without --force
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith(f"mt recipe init: error: --out {tmp_path / 'recipe.yaml'}: exists") and "--force" in line
    assert main([*args, "--force", "--set", "train.max_steps=123"]) == 0
    assert load_config(tmp_path / "recipe.yaml").train.max_steps == 123
    assert "max_steps: 123  # set by --set" in (tmp_path / "recipe.yaml").read_text(encoding="utf-8")


def test_init_takes_several_valid_sets_as_one_list(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    train, v1, v2 = pair_files(raw, "train", 300, 0), pair_files(raw, "v1", 20, 1), pair_files(raw, "v2", 10, 2)
    assert main(init_args(tmp_path, "--train", train, "--valid", v1, "--valid", v2, "--test", v1)) == 0
    cfg = load_config(tmp_path / "recipe.yaml")
    assert [Path(v.src).name for v in cfg.data.valid] == ["v1.xh", "v2.xh"]
    assert f"--valid {v1} --valid {v2} --test" in (tmp_path / "recipe.yaml").read_text(encoding="utf-8")
    assert not (tmp_path / "run" / "heldout").exists()  # nothing held out when valid and test are given


def test_init_holds_out_valid_and_test_deterministically(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "raw"
    train = pair_files(raw, "train", 400, 0)
    assert main(init_args(tmp_path, "--train", train)) == 0
    assert "no valid/test set given: held out 20 valid + 20 test pairs of" in capsys.readouterr().out
    cfg = load_config(tmp_path / "recipe.yaml")
    held = tmp_path / "run" / "heldout"
    lines = {name: (held / name).read_text(encoding="utf-8").splitlines() for name in
             ("train.xh", "valid.xh", "test.xh", "train.zu")}  # fmt: skip
    assert len(lines["valid.xh"]) == len(lines["test.xh"]) == 20  # 1/20 of 400
    assert not set(lines["train.xh"]) & (set(lines["valid.xh"]) | set(lines["test.xh"]))  # no test sentence trained on
    assert len(lines["train.xh"]) == len(lines["train.zu"]) <= 360
    assert cfg.data.valid is not None and Path(cfg.data.valid.src) == held / "valid.xh" and set(cfg.data.test) == {"test"}
    first = {p.name: p.read_bytes() for p in held.iterdir()}
    assert main([*init_args(tmp_path, "--train", train), "--force"]) == 0  # the same split again
    assert {p.name: p.read_bytes() for p in held.iterdir()} == first


def test_init_several_corpora_formats_and_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "raw"
    a = pair_files(raw, "a", 200, 0)
    src, tgt = corpus(100, 7)
    (raw / "b.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)), encoding="utf-8")
    (raw / "c.jsonl").write_text("".join(json.dumps({"xh": s, "zu": t}) + "\n" for s, t in zip(src, tgt)), encoding="utf-8")
    args = init_args(tmp_path, "--train", f"web={a}:2", "--train", f"{raw / 'b.tsv'}", "--train", f"bible={raw / 'c.jsonl'}:0.5")
    assert main(args) == 0
    cfg = load_config(tmp_path / "recipe.yaml")
    assert isinstance(cfg.data.train, list)
    assert [(c.name, c.weight) for c in cfg.data.train] == [("web", 2.0), ("corpus2", 1.0), ("bible", 0.5)]
    # each corpus gives its own held-out test set (as text files) and its part of the valid
    # set, a list that prepare interleaves
    assert set(cfg.data.test) == {"web_test", "corpus2_test", "bible_test"}
    held = tmp_path / "run" / "heldout"
    assert [Path(v.src) for v in cfg.data.valid] == [held / f"{n}.valid.xh" for n in ("web", "corpus2", "bible")]
    assert "400 training pairs" in capsys.readouterr().out
    assert main([*args, "--force", "--set", "data.train.bible.weight=3"]) == 0  # one corpus, by its name
    assert [c.weight for c in load_config(tmp_path / "recipe.yaml").data.train] == [2.0, 1.0, 3.0]


def test_init_errors_are_one_line_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "raw"
    train = pair_files(raw, "train", 50, 0)
    assert main(init_args(tmp_path, "--train", train) + ["--src", "xx"]) == 2
    assert error_line(capsys) == "mt recipe init: error: --src: unknown language code 'xx' ('xx' is not an ISO 639-1 code)"
    assert main(init_args(tmp_path, "--train", train) + ["--tgt", "english"]) == 2
    assert error_line(capsys).startswith("mt recipe init: error: --tgt: malformed language code 'english'")

    missing = f"{raw / 'train.xh'},{raw / 'nope.zu'}"
    assert main(init_args(tmp_path, "--train", missing)) == 2
    assert error_line(capsys) == f"mt recipe init: error: --train {missing}: file not found: {raw / 'nope.zu'}"

    write(raw / "short.zu", corpus(49, 0)[1])
    bad = f"{raw / 'train.xh'},{raw / 'short.zu'}"
    assert main(init_args(tmp_path, "--train", bad)) == 2
    line = error_line(capsys)
    assert line.startswith(f"mt recipe init: error: --train {bad}: line counts differ: ") and f"{raw / 'train.xh'}:50" in line

    assert main(init_args(tmp_path, "--train", train, "--valid", bad)) == 2
    assert "--valid" in error_line(capsys)
    assert main(init_args(tmp_path, "--train", train, "--mono-tgt", str(raw / "none.zu"))) == 2
    assert error_line(capsys) == f"mt recipe init: error: --mono-tgt {raw / 'none.zu'}: file not found"
    assert main(init_args(tmp_path, "--train", train, "--train", f"b={train}", "--mono-tgt", str(raw / "train.zu"))) == 2
    assert error_line(capsys).startswith("mt recipe init: error: --mono-tgt: mt backtranslate takes one training corpus")
    with pytest.raises(SystemExit) as stop:  # argparse's own check, as one line too
        main(init_args(tmp_path, "--train", train, "--max-minutes", "0"))
    assert stop.value.code == 2
    assert error_line(capsys) == "mt recipe init: error: argument --max-minutes: must be > 0, got 0"
    assert not (tmp_path / "recipe.yaml").exists() and not (tmp_path / "run").exists()  # nothing written


def test_init_on_real_chren_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """300 real Cherokee–English pairs: a syllabary pair gets a valid config with the table's choices."""
    paths = [DATA / "chren" / f"train.{lang}" for lang in ("chr", "en")]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"{DATA / 'chren'} not found (set MT_DATA_DIR to the folder holding chren/)")
    for p in paths:
        with open(p, encoding="utf-8") as f:
            write(tmp_path / p.name, [next(f).rstrip("\n") for _ in range(300)])
    args = ["recipe", "init", "--src", "chr", "--tgt", "en", "--train", f"{tmp_path / 'train.chr'},{tmp_path / 'train.en'}",
            "--mono-tgt", str(tmp_path / "train.en"), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "c.yaml")]  # fmt: skip
    assert main(args) == 0
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.backtranslate is not None and cfg.backtranslate.rounds == 2 and cfg.backtranslate.generation.sampling == "none"
    assert cfg.data.bleu_tokenize_for("en") == "13a" and not cfg.data.clean.punct_for("chr")


# --------------------------------------------------------------------------- run, end to end


def test_run_with_back_translation_then_serve_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """init + run on a new pair with monolingual text (one BT round), the final model answers
    /v1/translate, and --resume afterwards is a no-op with the same report."""
    raw = tmp_path / "raw"
    train = pair_files(raw, "train", 300, 0)
    mono_src, mono_tgt = corpus(40, 5000)
    write(raw / "mono.xh", mono_src)
    write(raw / "mono.zu", mono_tgt)
    overrides = [w for item in TINY + TINY_BT for w in ("--set", item)]
    assert main(init_args(tmp_path, "--train", train, "--mono-tgt", str(raw / "mono.zu"), "--mono-src",
                          str(raw / "mono.xh"), *overrides)) == 0  # fmt: skip
    config = str(tmp_path / "recipe.yaml")
    capsys.readouterr()

    assert main(["recipe", "run", config, "--set", "decode.beam=2"]) == 0
    run_dir = tmp_path / "run"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir / "final_model")
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert set(report["scores"]) == {"valid", "test"} and report["pair"] == "xh-zu"
    for s in report["scores"].values():
        assert 0.0 <= s["bleu"] <= 100.0 and 0.0 <= s["chrf"] <= 100.0 and s["sentences"] == 15
    assert "tok:13a" in report["signatures"]["bleu"]
    assert report["backtranslation"]["rounds"] == 1 and report["model"]["d_model"] == 32
    bt_report = json.loads((run_dir / "bt_report.json").read_text(encoding="utf-8"))
    assert [r["round"] for r in bt_report["rounds"]] == [0, 1]
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| test | 15 |" in md and "mt serve --model xh-zu=" in md
    assert f"Reproduce: `mt recipe run {config} --set decode.beam=2`" in md and report["beam"] == 2
    events = [json.loads(line) for line in (run_dir / "recipe.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(e["stage"], e["event"]) for e in events] == [
        ("backtranslate", "start"), ("backtranslate", "done"), ("evaluate", "start"), ("evaluate", "done")]

    serve_and_translate(run_dir / "final_model")

    # a rerun without --resume refuses; with it, every stage is skipped and the report is the same
    assert main(["recipe", "run", config]) == 2
    assert "--resume" in error_line(capsys)
    assert main(["recipe", "run", config, "--set", "decode.beam=2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "=== " not in err and "mt recipe: evaluate: done earlier, skipped" in err
    assert json.loads((run_dir / "report.json").read_text(encoding="utf-8")) == report


def serve_and_translate(model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from mt.modelio import load_model
    from serve.app import create_app
    from serve.settings import ServerSettings

    settings = ServerSettings(max_tokens_per_text=48)  # the tiny model holds 64 positions
    with TestClient(create_app({"xh-zu": load_model(model_dir)}, settings)) as client:
        r = client.post("/v1/translate", json={"texts": ["ein hund läuft.", "zwei katze"], "beam_size": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "xh-zu" and len(body["translations"]) == 2
        assert all(isinstance(t["text"], str) for t in body["translations"])


def test_run_without_mono_resumes_a_killed_run_at_its_stage(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Two weighted corpora, no monolingual text: prepare → train → final → evaluate. A crash in
    evaluation leaves the earlier stages done; --resume runs only the evaluation."""
    raw = tmp_path / "raw"
    a, b = pair_files(raw, "a", 150, 0), pair_files(raw, "b", 150, 3)
    test = pair_files(raw, "test", 12, 2)
    overrides = [w for item in TINY for w in ("--set", item)]
    assert main(init_args(tmp_path, "--train", f"a={a}:1", "--train", f"b={b}:3", "--test", f"t={test}", *overrides)) == 0
    config = str(tmp_path / "recipe.yaml")
    import mt.backtranslate.pipeline as pl

    real = pl.evaluate_model
    monkeypatch.setattr(pl, "evaluate_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        main(["recipe", "run", config])
    run_dir = tmp_path / "run"
    stages = json.loads((run_dir / recipe.MANIFEST).read_text(encoding="utf-8"))["stages"]
    assert {k: v["status"] for k, v in stages.items()} == {"prepare": "done", "train": "done", "final": "done", "evaluate": "failed"}
    monkeypatch.setattr(pl, "evaluate_model", real)
    capsys.readouterr()

    assert main(["recipe", "run", config, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "mt recipe: train: done earlier, skipped" in err and "mt recipe: === evaluate ===" in err
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert set(report["scores"]) == {"valid", "t"} and report["scores"]["t"]["sentences"] == 12
    # the precision auto chose, and why (the tests pin it to fp32)
    assert report["dtype"] == "fp32" and "MT_DTYPE_AUTO" in report["dtype_reason"]
    assert "mt recipe: decoding in" in err
    assert report["training"]["steps"] == 4 and report["backtranslation"] is None
    assert (run_dir / "final_model" / "model.safetensors").is_file()
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in manifest["train_corpora"]] == ["a", "b"]


# --------------------------------------------------------------------------- the shipped recipe configs


@pytest.mark.parametrize("name", ["chren_chr_en", "chren_en_chr", "tatoeba_de_en", "tatoeba_multi30k_de_en"])
def test_recipe_configs_load_and_keep_their_promises(name: str) -> None:
    path = REPO / "recipes" / "configs" / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    assert "#   mt recipe init \\" in text  # the command that generated it, at the top
    cfg = load_config(path)
    assert cfg.train.max_time_minutes is not None and cfg.train.max_time_minutes <= 60
    bt = cfg.backtranslate
    if name.startswith("chren"):
        assert bt is not None and bt.rounds >= 2 and bt.mono_tgt and bt.mono_src
        assert {bt.mono_tgt, bt.mono_src} == {"chren/mono/mono.en", "chren/mono/mono.chr"}
        assert bt.mono_tgt.endswith(cfg.data.tgt_lang) and bt.continue_train["max_time_minutes"] <= 60
        assert recipe.settings_for(16_696).dropout == cfg.model.dropout and cfg.data.spm.vocab_size == 4000
    else:
        assert bt is None and "tatoeba_test" in cfg.data.test
    if name == "tatoeba_multi30k_de_en":
        assert isinstance(cfg.data.train, list) and [c.name for c in cfg.data.train] == ["tatoeba", "multi30k"]
        assert all(c.weight for c in cfg.data.train) and set(cfg.data.test) == {"tatoeba_test", "test2016"}


def test_run_sh_runs_a_config_and_prints_the_report(tmp_path: Path) -> None:
    """`recipes/run.sh CONFIG`: the one shell command; rerunning it resumes (nothing to do)."""
    raw = tmp_path / "raw"
    train = pair_files(raw, "train", 200, 0)
    assert main(init_args(tmp_path, "--train", train, *[w for item in TINY for w in ("--set", item)])) == 0
    env = {**os.environ, "PY": sys.executable}
    for attempt in range(2):
        done = subprocess.run(["bash", str(REPO / "recipes" / "run.sh"), str(tmp_path / "recipe.yaml")], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "# Recipe report: xh-zu" in done.stdout and f"final model: {tmp_path / 'run' / 'final_model'}" in done.stdout
    assert "mt recipe: evaluate: done earlier, skipped" in done.stderr


# --------------------------------------------------------------------------- the back-translation fixes


def test_backtranslation_scores_bleu_with_the_output_languages_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """de→zh is scored with `zh` (the pipeline used 13a for every language), zh→de with 13a."""
    import mt.backtranslate.pipeline as pl
    from _bt_support import bt_config

    path = bt_config(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["data"]["tgt_lang"] = "zh"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    seen: dict[str, str] = {}
    monkeypatch.setattr(pl, "evaluate_model", lambda model, sets, opts, tokenize, out, label, *a, **k: seen.update({label: tokenize}) or {})
    pipeline = pl.Pipeline(load_config(path), progress=False)
    for direction in ("forward", "reverse"):
        pipeline._evaluate(direction, tmp_path / "model", tmp_path / "eval")
    assert seen == {"de-zh": "zh", "zh-de": "13a"}


def test_bt_report_table_has_bleu_and_chrf_for_valid_and_every_test_set() -> None:
    from mt.backtranslate.report import markdown

    def side(direction: str, base: float) -> dict:
        scores = {s: {"bleu": base + i, "chrf": base + 10 + i} for i, s in enumerate(("valid", "t1", "t2"))}
        return {"direction": direction, "model": "m", "source": "trained", "scores": scores}

    rows = [{"round": r, "forward": side("de-en", 20 + r), "reverse": side("en-de", 30 + r), "synthetic": {}, "seconds": {}}
            for r in (0, 1)]  # fmt: skip
    md = markdown({"directions": {"forward": "de-en", "reverse": "en-de"}, "rounds": rows, "eval_beam": 5,
                   "signatures": {"bleu": "B", "chrf": "C", "bleu_by_direction": {"de-en": "B1", "en-de": "B2"}}})  # fmt: skip
    header = next(line for line in md.splitlines() if line.startswith("| round |"))
    assert [c.strip() for c in header.split("|")[2:8]] == ["de-en valid", "de-en t1", "de-en t2", "en-de valid", "en-de t1", "en-de t2"]
    row1 = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "| 21.00 / 31.00 | 22.00 / 32.00 | 23.00 / 33.00 | 31.00 / 41.00 | 32.00 / 42.00 | 33.00 / 43.00 |" in row1
    assert "BLEU signature (de-en): `B1`" in md and "BLEU signature (en-de): `B2`" in md
