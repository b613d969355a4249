# Two entry points: `make recipe` (the default Multi30k de→en recipe) and `make test`.
# torch is pinned through PIP_CONSTRAINT so no install step can pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: venv test test-fast recipe clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: venv
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not slow"

recipe: venv
	bash recipes/multi30k_de_en.sh

clean:
	rm -rf $(VENV) runs build *.egg-info
