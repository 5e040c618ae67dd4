# The two commands a newcomer needs (see README.md):
#   make demo   set up a virtual environment and run the main job (pytun-hash demo, needs root)
#   make test   set up a virtual environment, run ruff, mypy --strict and the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck pytest demo bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest

test: lint typecheck pytest

demo: $(STAMP)
	$(VENV)/bin/pytun-hash demo

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_bpf.py
	$(PY) benchmarks/bench_emulator.py

# The long fuzzing campaign: at least 100,000 examples per target (hours; CI runs the short profile).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/fuzz -q --hypothesis-show-statistics

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
