"""Every user error of the ``mt`` command line is one line on stderr, never a traceback.

Each row of the tables below builds a bad input (a corrupt copy of a tiny model directory, a
bad YAML, a bad flag...) in ``tmp_path``, runs ``mt.cli.main`` in-process and checks: a
non-zero exit code, exactly one non-empty line on stderr, that line naming what is wrong
(flag, file, field or line), and no "Traceback" anywhere.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import yaml
from _train_tiny import synthetic_pairs

from mt.cli import main
from mt.config import ModelConfig
from mt.data.text import TextPipeline, train_sentencepiece
from mt.model import Transformer
from mt.modelio import save_model

TINY = dict(preset=None, d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64, max_positions=128)


def _make_model(out: Path, work: Path, vocab: int = 64, seed: int = 1, **changes) -> Path:
    """A random-init tiny model directory with its own SentencePiece model."""
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.txt"
    corpus.write_text("".join(f"{s}\n{t}\n" for s, t in synthetic_pairs(300, seed)), encoding="utf-8")
    spm_path = train_sentencepiece([corpus], work / "spm", vocab_size=vocab, byte_fallback=False,
                                   num_threads=1, user_symbols=[])  # fmt: skip
    text = TextPipeline("de", "en", spm_path, spm_path, False, num_threads=1)
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=text.vocab_size, dropout=0.0, **{**TINY, **changes}))
    return save_model(out, model, text)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "good": _make_model(root / "good", root / "w1"),
        "other_vocab": _make_model(root / "other_vocab", root / "w2", vocab=48, seed=2),
        "other_config": _make_model(root / "other_config", root / "w3", activation="gelu"),
    }


@dataclass
class Fx:
    """What a row's ``build`` gets: the tiny models and a scratch directory."""

    tmp: Path
    models: dict[str, Path]

    @property
    def model(self) -> str:
        return str(self.models["good"])

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def corrupt(self, name: str, data: bytes | str | None = None, json_edit: Optional[Callable] = None) -> str:
        """A copy of the good model with ``name`` replaced by ``data`` or edited as JSON."""
        out = self.tmp / "bad_model"
        shutil.copytree(self.models["good"], out)
        if json_edit is not None:
            raw = json.loads((out / name).read_text(encoding="utf-8"))
            json_edit(raw)
            data = json.dumps(raw)
        (out / name).write_bytes(data.encode() if isinstance(data, str) else data)
        return str(out)

    def model_field(self, **changes) -> str:
        return self.corrupt("config.json", json_edit=lambda c: c["model"].update(changes))

    def yaml(self, cfg: dict | str | bytes) -> str:
        if isinstance(cfg, dict):
            cfg = yaml.safe_dump({"run_dir": str(self.tmp / "run"), **cfg})
        return self.file("exp.yaml", cfg)


DATA = {"src_lang": "de", "tgt_lang": "en", "train": {"src": "train.de", "tgt": "train.en"}}
MODEL = {"preset": "tiny"}


@dataclass
class Case:
    id: str
    build: Callable[[Fx], list[str]]  # -> argv
    expect: tuple[str, ...]  # substrings of the error line
    stdin: bytes = b""

    def param(self, *marks):
        return pytest.param(self, id=self.id, marks=marks)


def _half(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def _translate(fx: Fx, model: Optional[str] = None, *flags: str) -> list[str]:
    return ["translate", "--model", model or fx.model, *flags]


CASES = [
    # --- mt translate: inputs and outputs
    Case("translate-stdin-not-utf8", lambda fx: _translate(fx), ("stdin", "UTF-8"), stdin=b"gut\n\xff\xfe kaputt\n"),
    Case("translate-input-not-utf8", lambda fx: _translate(fx, None, "-i", fx.file("bad.de", b"ok\n\xffx\n")),
         ("bad.de", "UTF-8")),
    Case("translate-input-directory", lambda fx: _translate(fx, None, "-i", str(fx.tmp)), ("--input", "directory")),
    Case("translate-input-missing", lambda fx: _translate(fx, None, "-i", str(fx.tmp / "nope.de")), ("--input", "nope.de")),
    Case("translate-output-missing-dir",
         lambda fx: _translate(fx, None, "-i", fx.file("in.de", "haus\n"), "-o", str(fx.tmp / "no" / "out.en")),
         ("--output", "does not exist")),
    Case("translate-output-is-dir", lambda fx: _translate(fx, None, "-o", str(fx.tmp)), ("--output", "directory")),
    Case("translate-device-bogus", lambda fx: _translate(fx, None, "--device", "bogus"), ("--device", "bogus")),
    # --- model directories
    Case("model-dir-missing", lambda fx: _translate(fx, str(fx.tmp / "nothing")), ("nothing", "not found")),
    Case("model-dir-is-file", lambda fx: _translate(fx, fx.file("plain", "x")), ("plain", "not a directory")),
    Case("model-config-missing", lambda fx: _translate(fx, _remove(fx, "config.json")), ("config.json", "missing")),
    Case("safetensors-truncated",
         lambda fx: _translate(fx, fx.corrupt("model.safetensors", _half(fx.models["good"] / "model.safetensors"))),
         ("model.safetensors",)),
    Case("safetensors-garbage", lambda fx: _translate(fx, fx.corrupt("model.safetensors", b"\x00garbage" * 100)),
         ("model.safetensors",)),
    Case("safetensors-empty", lambda fx: _translate(fx, fx.corrupt("model.safetensors", b"")), ("model.safetensors",)),
    Case("config-invalid-json", lambda fx: _translate(fx, fx.corrupt("config.json", "{not json")), ("config.json", "JSON")),
    Case("config-not-utf8", lambda fx: _translate(fx, fx.corrupt("config.json", b"{\"a\": \"\xff\"}")),
         ("config.json", "UTF-8")),
    Case("config-a-list", lambda fx: _translate(fx, fx.corrupt("config.json", "[1, 2]")), ("config.json", "object")),
    Case("config-no-model-key", lambda fx: _translate(fx, fx.corrupt("config.json", json_edit=lambda c: c.pop("model"))),
         ("config.json", "model")),
    Case("config-n-heads-0", lambda fx: _translate(fx, fx.model_field(n_heads=0)), ("config.json", "model.n_heads")),
    Case("config-n-heads-3", lambda fx: _translate(fx, fx.model_field(n_heads=3)), ("config.json", "model.n_heads")),
    Case("config-vocab-negative", lambda fx: _translate(fx, fx.model_field(vocab_size=-5)),
         ("config.json", "model.vocab_size")),
    Case("config-vocab-zero", lambda fx: _translate(fx, fx.model_field(vocab_size=0)), ("config.json", "model.vocab_size")),
    Case("config-vocab-differs-from-spm", lambda fx: _translate(fx, fx.model_field(vocab_size=500)),
         ("config.json", "vocab_size")),
    Case("config-eos-past-vocab", lambda fx: _translate(fx, fx.model_field(eos_id=100000)), ("config.json", "model.eos_id")),
    Case("config-pad-negative", lambda fx: _translate(fx, fx.model_field(pad_id=-1)), ("config.json", "model.pad_id")),
    Case("config-d-model-huge", lambda fx: _translate(fx, fx.model_field(d_model=100000)), ("config.json", "model.d_model")),
    # within the bounds but far larger than the stored weights: refused before allocating
    Case("config-d-model-vs-weights", lambda fx: _translate(fx, fx.model_field(d_model=8192)),
         ("model.safetensors", "d_model=8192")),
    Case("config-layers-vs-weights", lambda fx: _translate(fx, fx.model_field(enc_layers=200)),
         ("model.safetensors", "enc_layers=200")),
    Case("config-ffn-vs-weights", lambda fx: _translate(fx, fx.model_field(ffn_dim=80)),
         ("model.safetensors", "ffn")),
    Case("config-dropout-string", lambda fx: _translate(fx, fx.model_field(dropout="lots")), ("config.json", "model.dropout")),
    Case("config-unknown-field", lambda fx: _translate(fx, fx.model_field(d_modle=64)), ("config.json", "d_modle")),
    Case("config-version-newer", lambda fx: _translate(fx, fx.corrupt("config.json", json_edit=lambda c: c.update(version=99))),
         ("config.json", "newer")),
    # --- the text pipeline
    Case("text-json-invalid", lambda fx: _translate(fx, fx.corrupt("text.json", "{")), ("text.json", "JSON")),
    Case("text-json-spm-outside", lambda fx: _translate(fx, fx.corrupt("text.json", json_edit=lambda c: c["spm"].update(
        src="../good/spm.model"))), ("text.json", "spm.src")),
    Case("text-json-spm-absolute", lambda fx: _translate(fx, fx.corrupt("text.json", json_edit=lambda c: c["spm"].update(
        tgt="/etc/passwd"))), ("text.json", "spm.tgt")),
    Case("text-json-spm-missing-file", lambda fx: _translate(fx, fx.corrupt("text.json", json_edit=lambda c: c["spm"].update(
        src="other.model"))), ("text.json", "spm.src", "other.model")),
    Case("text-json-no-src-lang", lambda fx: _translate(fx, fx.corrupt("text.json", json_edit=lambda c: c.pop("src_lang"))),
         ("text.json", "src_lang")),
    Case("text-json-lang-number", lambda fx: _translate(fx, fx.corrupt("text.json", json_edit=lambda c: c.update(tgt_lang=5))),
         ("text.json", "tgt_lang")),
    Case("text-json-unicode-form", lambda fx: _translate(fx, fx.corrupt("text.json", json_edit=lambda c: c.update(
        unicode_form="NFD"))), ("text.json", "unicode_form")),
    Case("spm-model-garbage", lambda fx: _translate(fx, fx.corrupt("spm.model", b"\x08\x01garbage" * 20)), ("spm.model",)),
    Case("spm-model-empty", lambda fx: _translate(fx, fx.corrupt("spm.model", b"")), ("spm.model", "empty")),
    # --- mt evaluate
    Case("evaluate-src-missing", lambda fx: ["evaluate", "--model", fx.model, "--src", str(fx.tmp / "x.de"),
                                             "--ref", fx.file("r.en", "a\n")], ("--src", "x.de")),
    Case("evaluate-ref-directory", lambda fx: ["evaluate", "--model", fx.model, "--src", fx.file("s.de", "a\n"),
                                               "--ref", str(fx.tmp)], ("--ref", "directory")),
    Case("evaluate-src-not-utf8", lambda fx: ["evaluate", "--model", fx.model, "--src", fx.file("s.de", b"a\n\xc3\n"),
                                              "--ref", fx.file("r.en", "a\nb\n")], ("s.de", "UTF-8")),
    Case("evaluate-beam-sweep", lambda fx: ["evaluate", "--model", fx.model, "--src", fx.file("s.de", "a\n"),
                                            "--ref", fx.file("r.en", "a\n"), "--beam-sweep", "1,x"], ("--beam-sweep", "1,x")),
    Case("evaluate-hyp-out-missing-dir", lambda fx: ["evaluate", "--model", fx.model, "--src", fx.file("s.de", "a\n"),
                                                     "--ref", fx.file("r.en", "a\n"), "--hyp-out", str(fx.tmp / "no" / "h")],
         ("--hyp-out", "does not exist")),
    Case("evaluate-broken-model", lambda fx: ["evaluate", "--model", fx.model_field(n_heads=0), "--src",
                                              fx.file("s.de", "a\n"), "--ref", fx.file("r.en", "a\n")],
         ("config.json", "n_heads")),
    # --- mt average
    Case("average-different-vocab", lambda fx: ["average", str(fx.tmp), "--out", str(fx.tmp / "avg"), "--inputs",
                                                fx.model, str(fx.models["other_vocab"])], ("good", "other_vocab")),
    Case("average-different-config", lambda fx: ["average", str(fx.tmp), "--out", str(fx.tmp / "avg"), "--inputs",
                                                 fx.model, str(fx.models["other_config"])],
         ("good", "other_config", "activation")),
    Case("average-input-not-a-model", lambda fx: ["average", str(fx.tmp), "--out", str(fx.tmp / "avg"), "--inputs",
                                                  fx.model, str(fx.tmp)], ("neither",)),
    Case("average-no-checkpoints", lambda fx: ["average", str(fx.tmp), "--out", str(fx.tmp / "avg")],
         ("checkpoints", "no checkpoints")),
    Case("average-last-0", lambda fx: ["average", str(fx.tmp), "--out", str(fx.tmp / "avg"), "--last", "0"], ("--last",)),
    Case("average-out-is-file", lambda fx: ["average", str(fx.tmp), "--out", fx.file("f", "x"), "--inputs", fx.model],
         ("--out", "not a directory")),
    # --- mt prepare / train / backtranslate: the YAML
    Case("prepare-empty-yaml", lambda fx: ["prepare", fx.yaml("")], ("exp.yaml", "empty")),
    Case("prepare-yaml-not-utf8", lambda fx: ["prepare", fx.yaml(b"run_dir: \xff\n")], ("exp.yaml", "UTF-8")),
    Case("prepare-yaml-syntax", lambda fx: ["prepare", fx.yaml("data: {src_lang: [de,\n")], ("exp.yaml", "invalid YAML")),
    Case("prepare-yaml-missing", lambda fx: ["prepare", str(fx.tmp / "none.yaml")], ("none.yaml", "not found")),
    Case("prepare-yaml-directory", lambda fx: ["prepare", str(fx.tmp)], ("directory",)),
    Case("prepare-yaml-a-list", lambda fx: ["prepare", fx.yaml("- 1\n- 2\n")], ("exp.yaml", "mapping")),
    Case("prepare-src-lang-number", lambda fx: ["prepare", fx.yaml({"data": {**DATA, "src_lang": 5}})],
         ("exp.yaml", "data.src_lang")),
    Case("prepare-no-train-corpus", lambda fx: ["prepare", fx.yaml({"model": MODEL})], ("exp.yaml", "data.train")),
    Case("prepare-bad-set", lambda fx: ["prepare", fx.yaml({"data": DATA}), "--set", "train.lr=[1,"], ("--set", "train.lr")),
    Case("prepare-set-no-equals", lambda fx: ["prepare", fx.yaml({"data": DATA}), "--set", "train.lr"], ("--set", "train.lr")),
    Case("prepare-corpus-missing", lambda fx: ["prepare", fx.yaml({"data": {**DATA, "data_dir": str(fx.tmp / "raw")}})],
         ("data.train.src", "train.de")),
    Case("train-no-prepared-data", lambda fx: ["train", fx.yaml({"data": DATA, "model": MODEL})],
         ("run/data", "mt prepare")),
    Case("train-n-heads-0", lambda fx: ["train", fx.yaml({"data": DATA, "model": {"preset": "tiny", "n_heads": 0}})],
         ("exp.yaml", "model.n_heads")),
    Case("train-d-model-huge", lambda fx: ["train", fx.yaml({"data": DATA, "model": {"preset": "tiny", "d_model": 100000}})],
         ("exp.yaml", "model.d_model")),
    Case("train-eos-past-vocab", lambda fx: ["train", fx.yaml({"data": DATA, "model": {"vocab_size": 100, "eos_id": 100}})],
         ("exp.yaml", "model.eos_id")),
    Case("train-lr-negative", lambda fx: ["train", fx.yaml({"data": DATA, "train": {"lr": -1}})], ("exp.yaml", "train.lr")),
    Case("backtranslate-rounds", lambda fx: ["backtranslate", fx.yaml({"data": DATA, "backtranslate": {"rounds": -1}})],
         ("exp.yaml", "backtranslate.rounds")),
    Case("backtranslate-empty-yaml", lambda fx: ["backtranslate", fx.yaml("")], ("exp.yaml", "empty")),
    # --- mt shortlist
    Case("shortlist-src-missing", lambda fx: ["shortlist", "--model", fx.model, "--src", str(fx.tmp / "no.de"),
                                              "--tgt", fx.file("t.en", "a\n")], ("--src", "no.de")),
    Case("shortlist-broken-model", lambda fx: ["shortlist", "--model", fx.corrupt("model.safetensors", b"xx"),
                                               "--src", fx.file("s.de", "a\n"), "--tgt", fx.file("t.en", "a\n")],
         ("model.safetensors",)),
    Case("shortlist-per-source-0", lambda fx: ["shortlist", "--model", fx.model, "--src", "a", "--tgt", "b",
                                               "--per-source", "0"], ("--per-source",)),
    # --- mt serve (argument validation) and mt data fetch
    Case("serve-port-text", lambda fx: ["serve", "--model", fx.model, "--port", "http"], ("--port", "http")),
    Case("serve-port-range", lambda fx: ["serve", "--model", fx.model, "--port", "70000"], ("--port", "70000")),
    Case("serve-max-texts-0", lambda fx: ["serve", "--model", fx.model, "--max-texts", "0"], ("max", "texts")),
    Case("serve-model-missing", lambda fx: ["serve", "--model", str(fx.tmp / "gone")], ("gone",)),
    Case("fetch-bad-name", lambda fx: ["data", "fetch", "wmt99"], ("wmt99",)),
    Case("unknown-command", lambda fx: ["frobnicate"], ("frobnicate",)),
    Case("unknown-flag", lambda fx: ["translate", "--model", fx.model, "--bogus"], ("mt translate", "--bogus")),
]

# the decoding flags; their validation is being rewritten (one dataclass with bounds)
DECODE_CASES = [
    Case("beam-0", lambda fx: _translate(fx, None, "--beam", "0"), ("--beam",)),
    Case("n-best-0", lambda fx: _translate(fx, None, "--n-best", "0"), ("--n-best",)),
    Case("n-best-over-beam", lambda fx: _translate(fx, None, "--n-best", "9", "--beam", "2"), ("--n-best",)),
    Case("max-tokens-0", lambda fx: _translate(fx, None, "--max-tokens", "0"), ("--max-tokens",)),
    Case("topk-0", lambda fx: _translate(fx, None, "--topk", "0"), ("--topk",)),
    Case("temperature-0", lambda fx: _translate(fx, None, "--temperature", "0"), ("--temperature",)),
    Case("topp-2", lambda fx: _translate(fx, None, "--topp", "2"), ("--topp",)),
    Case("int8-with-bf16", lambda fx: _translate(fx, None, "--int8", "--dtype", "bf16"), ("--int8",)),
    Case("alpha-nan", lambda fx: _translate(fx, None, "--alpha", "nan"), ("--alpha",)),
    Case("device-bogus", lambda fx: _translate(fx, None, "--device", "tpu"), ("--device",)),
    Case("length-norm-unknown", lambda fx: _translate(fx, None, "--length-norm", "wu"), ("--length-norm",)),
    Case("stored-decode-broken",
         lambda fx: _translate(fx, fx.corrupt("config.json", json_edit=lambda c: c.update(decode={"beam": 0}))),
         ("config.json", "decode.beam")),
]


def _remove(fx: Fx, name: str) -> str:
    out = fx.corrupt(name, b"")
    (Path(out) / name).unlink()
    return out


@pytest.fixture(autouse=True)
def _keep_logging():
    """``mt serve`` configures the root logger; give it back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def run_cli(argv: list[str], stdin: bytes, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.delenv("MT_API_KEY", raising=False)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    "case",
    [c.param() for c in CASES + DECODE_CASES],
)
def test_user_error_is_one_line(case: Case, models, tmp_path, capsys, monkeypatch):
    argv = case.build(Fx(tmp_path, models))
    rc, out, err = run_cli(argv, case.stdin, capsys, monkeypatch)
    assert "Traceback" not in out + err
    assert rc not in (0, None), f"exit code {rc}; stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got {err!r}"
    line = lines[0]
    assert line.startswith("mt"), line
    assert ": error: " in line, line
    for text in case.expect:
        assert text in line, f"{text!r} not in {line!r}"


def test_good_model_translates(models, tmp_path, capsys, monkeypatch):
    """The fixture model itself is fine (so the rows above fail for their own reason)."""
    out_file = tmp_path / "out.en"
    rc, out, err = run_cli(["translate", "--model", str(models["good"]), "-o", str(out_file), "--beam", "1",
                            "--max-len-b", "3"], b"haus baum\n", capsys, monkeypatch)  # fmt: skip
    assert rc == 0, err
    assert len(out_file.read_text(encoding="utf-8").splitlines()) == 1


# --------------------------------------------------------------------------- the checks themselves


@pytest.mark.parametrize("changes", [
    {},
    {"share_embeddings": False, "tie_output": False, "final_logits_bias": True},
    {"norm": "post", "positions": "learned", "layernorm_embedding": True, "enc_layers": 3},
])  # fmt: skip
def test_estimated_parameters_match_the_model(changes):
    cfg = ModelConfig(vocab_size=100, **{**TINY, **changes})
    assert cfg.estimated_parameters() == Transformer(cfg).num_parameters()


def test_user_error_classes_keep_their_old_bases():
    from mt.data import DataError
    from mt.errors import ConfigError, MissingFileError, ModelDirError, UserError
    from mt.train.checkpoint import CheckpointError

    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
    assert issubclass(CheckpointError, UserError) and issubclass(CheckpointError, RuntimeError)
    assert issubclass(ConfigError, UserError) and issubclass(ModelDirError, ValueError)
    assert issubclass(MissingFileError, UserError) and issubclass(MissingFileError, FileNotFoundError)


def test_model_size_is_checked_before_allocating(models, tmp_path, monkeypatch):
    """A config.json far larger than its weights is refused from the safetensors header."""
    import mt.modelio
    from mt.errors import ModelDirError

    bad = Fx(tmp_path, models).model_field(d_model=4096, n_heads=4, ffn_dim=16384)

    def no_allocation(cfg):
        raise AssertionError("Transformer allocated before the size check")

    monkeypatch.setattr(mt.modelio, "Transformer", no_allocation)
    with pytest.raises(ModelDirError, match=r"model\.safetensors: src_embed\.weight is \d+x32 .*d_model=4096"):
        mt.modelio.load_model(bad)


@pytest.mark.parametrize("changes, field", [
    ({"d_model": 16385}, "d_model"),
    ({"n_heads": 0}, "n_heads"),
    ({"n_heads": 5}, "n_heads"),
    ({"vocab_size": -1}, "vocab_size"),
    ({"bos_id": 100}, "bos_id"),
    ({"decoder_start_id": -2}, "decoder_start_id"),
    ({"max_positions": 0}, "max_positions"),
    ({"dropout": float("nan")}, "dropout"),
    ({"d_model": 16384, "ffn_dim": 131072, "enc_layers": 6, "n_heads": 16}, "billion weights"),
])  # fmt: skip
def test_model_config_bounds(changes, field):
    from mt.config import from_dict
    from mt.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        from_dict(ModelConfig, {**TINY, "vocab_size": 100, **changes}, "model")


def test_text_pipeline_load_accepts_its_own_files(models):
    text = TextPipeline.load(models["good"])
    assert (text.src_lang, text.tgt_lang, text.joint) == ("de", "en", True)


@pytest.mark.parametrize("message, line", [
    ("plain", "plain"),
    ("no pairs left:\n  identical 300\n  empty 2\n", "no pairs left: identical 300; empty 2"),
    ("", "unknown error"),
])  # fmt: skip
def test_one_line(message, line):
    from mt.cli import one_line

    assert one_line(message) == line
