"""``dtype: auto`` (mt/decode/precision.py): what it resolves to and why, the probe, its
memory across processes, and what the CLIs and the server do with it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mt.config import DecodeOptions
from mt.decode import precision
from mt.decode.variant import choose_precision, prepare
from mt.runtime import NATIVE_BF16
from _decode_support import toy_model

CPU = torch.device("cpu")


@pytest.fixture
def unpinned(monkeypatch, tmp_path):
    """auto as a user gets it: no pin, this test's own cache file, no findings of earlier tests."""
    monkeypatch.delenv(precision.PIN_ENV, raising=False)
    monkeypatch.setenv("MT_PROBE_CACHE", str(tmp_path / "invariance.json"))
    monkeypatch.setattr(precision, "_FOUND", {})
    return tmp_path / "precision.json"


def _fake_probe(monkeypatch, speedup: float, share: float = 1.0) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(precision, "probe_speedup", lambda model, build: (calls.append(1), (speedup, share))[1])
    return calls


def _native(monkeypatch, flags=("avx512_bf16",)) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: [f for f in NATIVE_BF16 if f in flags])


def test_the_default_is_auto_and_explicit_choices_are_kept(monkeypatch):
    assert DecodeOptions().dtype == "auto"
    _native(monkeypatch)
    assert choose_precision("bf16", CPU, False, toy_model()) == precision.PrecisionChoice("bf16", "as requested")
    _native(monkeypatch, flags=("avx2",))  # kept, and said to be emulated
    choice = choose_precision("bf16", CPU, False, toy_model())
    assert choice.dtype == "bf16" and choice.reason.startswith("as requested; this CPU has no native bf16")
    assert DecodeOptions(dtype="auto", int8=True).int8  # auto with int8 is allowed (it becomes fp32)


def test_fp32_without_native_bf16_on_gpus_and_with_int8(unpinned, monkeypatch):
    calls = _fake_probe(monkeypatch, 5.0)
    _native(monkeypatch, flags=("avx2",))
    choice = choose_precision("auto", CPU, False, toy_model())
    assert choice.dtype == "fp32" and "no native bf16" in choice.reason
    _native(monkeypatch)
    assert choose_precision("auto", torch.device("cuda"), False, toy_model()).dtype == "fp32"
    assert choose_precision("auto", CPU, True, toy_model()).reason == "auto: fp32, int8 quantises fp32 weights"
    assert calls == []  # none of these needed a probe


@pytest.mark.parametrize("speedup,expected", [(2.0, "bf16"), (1.1, "fp32")])
def test_the_probe_decides_on_a_cpu_with_native_bf16(unpinned, monkeypatch, speedup, expected):
    _fake_probe(monkeypatch, speedup)
    _native(monkeypatch, flags=("avx512_bf16", "amx_bf16"))
    choice = choose_precision("auto", CPU, False, toy_model())
    assert choice.dtype == expected and choice.speedup == speedup
    assert "amx_bf16" in choice.reason and f"{speedup:.2f}x" in choice.reason and "threshold" in choice.reason


def test_the_finding_is_remembered_in_the_process_and_on_disk(unpinned, monkeypatch):
    calls = _fake_probe(monkeypatch, 2.0)
    _native(monkeypatch)
    model = toy_model()
    assert choose_precision("auto", CPU, False, model).dtype == "bf16"
    assert choose_precision("auto", CPU, False, model).dtype == "bf16"
    assert len(calls) == 1
    entries = json.loads(unpinned.read_text())
    assert [e["speedup"] for e in entries.values()] == [2.0]
    monkeypatch.setattr(precision, "_FOUND", {})  # a new process on this machine: reads the file
    assert choose_precision("auto", CPU, False, model).dtype == "bf16" and len(calls) == 1
    monkeypatch.setattr(precision, "_FOUND", {})
    precision.adopt(json.loads(unpinned.read_text()))  # what a server's decoding process is given
    unpinned.unlink()
    assert choose_precision("auto", CPU, False, model).dtype == "bf16" and len(calls) == 1


def test_a_probe_on_a_busy_cpu_is_used_but_not_remembered(unpinned, monkeypatch):
    """Under contention the ratio is noise (0.87-4.6x measured where quiet runs read 1.6x): the
    process decides with it and says so, the next process measures again."""
    calls = _fake_probe(monkeypatch, 1.1, share=0.6)
    _native(monkeypatch)
    model = toy_model()
    choice = choose_precision("auto", CPU, False, model)
    assert choice.dtype == "fp32" and "busy CPU (share 0.60), not remembered" in choice.reason
    assert choose_precision("auto", CPU, False, model).dtype == "fp32" and len(calls) == 1  # this process keeps it
    assert not unpinned.exists()
    monkeypatch.setattr(precision, "_FOUND", {})  # the next process, on a quiet CPU
    calls = _fake_probe(monkeypatch, 1.6, share=0.98)
    choice = choose_precision("auto", CPU, False, model)
    assert choice.dtype == "bf16" and "busy" not in choice.reason and len(calls) == 1
    assert [e["share"] for e in json.loads(unpinned.read_text()).values()] == [0.98]


def test_the_pin_wins_and_a_bad_pin_is_named(unpinned, monkeypatch):
    calls = _fake_probe(monkeypatch, 2.0)
    _native(monkeypatch)
    monkeypatch.setenv(precision.PIN_ENV, "fp32")
    assert choose_precision("auto", CPU, False, toy_model()).dtype == "fp32" and calls == []
    monkeypatch.setenv(precision.PIN_ENV, "int4")
    with pytest.raises(ValueError, match="MT_DTYPE_AUTO"):
        choose_precision("auto", CPU, False, toy_model())


def test_the_real_probe_times_both_precisions():
    built: list[str] = []

    def build(model, dtype):
        built.append(dtype)
        return prepare(model, "cpu", dtype, probe=False)

    speedup, share = precision.probe_speedup(toy_model(), build, sentences=2, steps=3, repeats=1)
    assert built == ["fp32", "bf16"]
    assert math.isfinite(speedup) and speedup > 0 and 0 < share <= 1


def test_auto_decoding_model_is_batch_invariant_whatever_it_picks(unpinned, monkeypatch):
    """The default path keeps its guarantee: bf16 is used only where it is invariant, else
    auto falls back to fp32 and says why."""
    _fake_probe(monkeypatch, 2.0)
    _native(monkeypatch)
    torch.set_num_threads(2)
    dm = prepare(toy_model(), "cpu", "auto")
    assert dm.padding.invariant, dm.padding.finding
    bf16_invariant = prepare(toy_model(), "cpu", "bf16").padding.invariant
    assert dm.dtype == ("bf16" if bf16_invariant else "fp32")
    assert dm.precision.reason.startswith("auto: ")
    if not bf16_invariant:
        assert "not batch-invariant" in dm.precision.reason


def test_evaluate_prints_the_choice_and_records_it(unpinned, monkeypatch, tmp_path, capsys):
    from mt.cli import main
    from _serve_support import make_random_model_dir

    _fake_probe(monkeypatch, 3.0)
    _native(monkeypatch)
    model_dir = make_random_model_dir(tmp_path / "m")
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("ein test\nzwei hunde\n")
    ref.write_text("a test\ntwo dogs\n")
    assert main(["evaluate", "--model", str(model_dir), "--src", str(src), "--ref", str(ref), "--beam", "2"]) == 0
    out, err = capsys.readouterr()
    record = json.loads(out.strip().splitlines()[-1])
    assert record["dtype_requested"] == "auto" and record["dtype"] in ("bf16", "fp32")
    assert record["dtype_reason"].startswith("auto: ") and f"decoding in {record['dtype']}" in err
    assert main(["evaluate", "--model", str(model_dir), "--src", str(src), "--ref", str(ref), "--dtype", "fp32"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["dtype_reason"] == "as requested" and "decoding in" not in err


def test_server_decoding_processes_adopt_the_parents_finding(unpinned, monkeypatch, tmp_path):
    """With no cache file and no pin, a decoding process would probe by itself; given the
    parent's finding (forged here: bf16 100x faster, or 100x slower) it decodes exactly as a
    local bf16 (fp32) engine, whatever its own probe would have found."""
    from mt.modelio import load_model
    from serve.engine import RequestOptions, build_engine
    from serve.processes import DecodeProcesses
    from _serve_support import make_random_model_dir

    if not precision.native_bf16():
        pytest.skip("this CPU has no native bf16: auto is fp32 whatever the finding")
    monkeypatch.setenv("MT_PROBE_CACHE", "off")
    model_dir = make_random_model_dir(tmp_path / "m")
    loaded = load_model(model_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if not prepare(loaded.model, "cpu", "bf16").padding.invariant:
            pytest.skip("bf16 is not batch-invariant on this CPU: auto falls back to fp32")
        cache_key = precision._cache_key(loaded.model)
    finally:
        torch.set_num_threads(before)
    texts = ["ein kleiner test", "zwei hunde"]
    opts = RequestOptions(beam=2, alpha=1.0, max_length=None, n_best=1)
    key = lambda results: [[(h.tokens, h.score) for h in hyps] for hyps in results]  # noqa: E731
    remote = {}
    for speedup in (100.0, 0.01):
        procs = DecodeProcesses([f"m={model_dir}"], n=1, threads=1, precision={cache_key: {"speedup": speedup}})
        try:
            remote[speedup] = key(procs.run_batch(("m", opts), texts))
        finally:
            procs.close()
    torch.set_num_threads(1)
    try:
        bf16 = build_engine("m", loaded, {"dtype": "bf16"}).translate(texts, opts)
        fp32 = build_engine("m", loaded, {"dtype": "fp32"}).translate(texts, opts)
    finally:
        torch.set_num_threads(before)
    assert remote[100.0] == key(bf16) and remote[0.01] == key(fp32) and key(bf16) != key(fp32)
