"""What an install without the optional extras can do (``mt.extras``, ``pyproject.toml``).

Each case runs in a fresh interpreter whose imports of the extras' packages fail, as they
would in a ``pip install mt`` without ``[train]``, ``[serve]`` or ``[convert]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mt.extras import EXTRAS, MissingDependencyError, available, require

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = sorted(set(EXTRAS) | {"starlette", "transformers", "uvloop", "httptools", "swagger_ui_bundle"})

BLOCKER = textwrap.dedent(
    f"""
    import sys
    BLOCKED = {BLOCKED!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "case.py"
    script.write_text(BLOCKER + textwrap.dedent(code), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)


def test_core_modules_import_without_the_extras(tmp_path):
    done = run_without_extras(
        """
        import mt, mt.cli, mt.train.trainer, mt.decode.translator, mt.decode.score, mt.evaluate
        import mt.backtranslate.pipeline, mt.data.prepare, mt.modelio
        from mt import Translator, load_model, DecodeOptions
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("leaked", leaked)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "leaked []" in done.stdout


def test_serve_without_the_extra_is_one_line_naming_it(tmp_path):
    done = run_without_extras(
        """
        import mt.cli
        sys.exit(mt.cli.main(["serve", "--model", "some_model_dir"]))
        """,
        tmp_path,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "mt[serve]" in lines[0] and "fastapi" in lines[0]


def test_training_without_matplotlib_trains_and_skips_the_plot(tmp_path):
    done = run_without_extras(
        f"""
        from pathlib import Path
        from _train_tiny import make_prepared, write_config
        from mt.config import load_config
        from mt.train.trainer import train

        run = Path({str(tmp_path / 'run')!r})
        make_prepared(run)
        cfg = load_config(write_config(Path({str(tmp_path / 'cfg.yaml')!r}), run, max_steps=8, valid_every=4))
        train(cfg)
        print("model", (run / "model_last" / "model.safetensors").is_file())
        print("plot", (run / "learning_curve.png").exists())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "model True" in done.stdout and "plot False" in done.stdout


def test_require_names_the_extra_and_passes_real_import_errors(tmp_path, monkeypatch):
    assert require("json", "x").dumps([]) == "[]"
    assert available("json") and not available("mt_no_such_package")
    with pytest.raises(MissingDependencyError, match=r"mt export needs .*'ctranslate2'.*mt\[convert\]"):
        monkeypatch.setitem(sys.modules, "ctranslate2", None)  # None in sys.modules: import fails
        require("ctranslate2", "mt export")
    # a package that is installed but whose own import fails is a real error, not a hint
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import mt_missing_inner_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="mt_missing_inner_dependency"):
        require("brokenpkg", "x")


def test_pyproject_extras_match_the_table():
    """Every package ``mt.extras`` names is in the extra it names; torch is a range, not a pin."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]

    def names(reqs: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("-", "_")
                for r in reqs}

    for module, extra in EXTRAS.items():
        assert module.lower() in names(extras[extra]), (module, extra)
    torch_req = [r for r in project["dependencies"] if r.startswith("torch")]
    assert torch_req and "==" not in torch_req[0]
    assert "torch==" in (ROOT / "constraints.txt").read_text()
    assert not names(project["dependencies"]) & names(extras["serve"] + extras["train"] + extras["convert"])
