"""Config loading: errors name the file and the dotted field."""

import pytest

from mt.config import ConfigError, load_config


def _write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_valid_config_and_overrides(tmp_path):
    p = _write(tmp_path, "run_dir: runs/x\nmodel: {preset: tiny}\ntrain: {lr: 0.001}\n")
    cfg = load_config(p, ["train.max_steps=7", "decode.beam=4"])
    assert cfg.train.max_steps == 7 and cfg.train.lr == 0.001 and cfg.decode.beam == 4
    assert cfg.model.resolved().d_model == 64


def test_yaml_on_off_words_reach_string_choices(tmp_path):
    # YAML 1.1 reads on/off as booleans; train.progress takes the words "on"/"off"
    p = _write(tmp_path, "train: {progress: off}\n")
    assert load_config(p).train.progress == "off"
    assert load_config(p, ["train.progress=on"]).train.progress == "on"
    assert load_config(p, ["train.compile=on"]).train.compile is True  # a real bool stays one


@pytest.mark.parametrize(
    "text, field",
    [
        ("train: {lr: -1}\n", "train.lr"),
        ("train: {lr: fast}\n", "train.lr"),
        ("train: {warmup_steps: 800, decay_start: 100}\n", "train.decay_start: must be >= warmup_steps (800)"),
        ("train: {learning_rate: 1}\n", "learning_rate"),
        ("model: {preset: small, n_heads: 5}\n", "n_heads"),
        ("model: {preset: gigantic}\n", "model.preset"),
        ("decode: {beam: 0}\n", "decode.beam"),
        ("data: {clean: {invalid_utf8: ignore}}\n", "invalid_utf8"),
        ("bogus_section: 1\n", "bogus_section"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, text, field):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert field in str(err.value) and str(p) in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "train: {lr: [1,\n"))


def test_override_picks_a_list_entry_by_name_or_index(tmp_path):
    corpora = ("data:\n  train:\n    - {name: big, src: b.de, tgt: b.en}\n"
               "    - {name: small, src: s.de, tgt: s.en}\n")  # fmt: skip
    p = _write(tmp_path, corpora)
    cfg = load_config(p, ["data.train.big.weight=3", "data.train.1.weight=2"])
    big, small = cfg.data.train_corpora()
    assert (big.weight, small.weight) == (3.0, 2.0)
    cfg = load_config(p, ["data.train.small={name: small, src: t.de, tgt: t.en}"])
    assert cfg.data.train_corpora()[1].src == "t.de"
    for bad in ["data.train.huge.weight=2", "data.train.2.weight=2"]:
        with pytest.raises(ConfigError, match=r"data\.train has no entry .*names: big, small"):
            load_config(p, [bad])
