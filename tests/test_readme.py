"""The README's Python API example runs as written (on a tiny random model instead of the
trained one it names) and does what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from _serve_support import make_random_model_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_example_runs(tmp_path):
    code = python_api_example()
    model_line = re.search(r'^model_dir = ".*"$', code, re.M)
    assert model_line is not None, "the example must name its model directory on one line"
    model_dir = make_random_model_dir(tmp_path / "model", preset="tiny", seed=5)
    code = code.replace(model_line.group(0), f"model_dir = {str(model_dir)!r}")
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Python API)", "exec"), namespace)
    english = namespace["english"]
    # three paragraphs in, three out: the line structure of the document is kept
    assert english.count("\n") == namespace["text"].count("\n") == 3
    assert english.split("\n")[2] == ""
    html = out.getvalue().splitlines()
    assert any("<p>" in line and "<b>" in line and "</b>" in line and "</p>" in line for line in html)
    nbest = [line for line in html if re.match(r"^-?\d+\.\d{3}  ", line)]
    assert len(nbest) == 3
    scores = [float(line.split()[0]) for line in nbest]
    assert scores == sorted(scores, reverse=True)
