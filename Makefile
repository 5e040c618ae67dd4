# The two commands a newcomer needs (see README.md):
#   make demo   set up a virtual environment and run the main job (pytun-hash demo, needs root)
#   make test   set up a virtual environment, run ruff, mypy --strict, build the API reference (make docs) and the tests
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck docs pytest demo bench fuzz clean

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

# The API reference from the docstrings (docs/api/index.html); an undocumented public name or a
# docstring pdoc cannot render fails it.
docs: $(STAMP)
	$(PY) docs/build.py

test: lint typecheck docs pytest

demo: $(STAMP)
	$(VENV)/bin/pytun-hash demo

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_capture.py
	$(PY) benchmarks/bench_bpf.py
	$(PY) benchmarks/bench_emulator.py

# The long fuzzing campaign: 100,000 examples per target, each target in its own process, as many at
# once as there are CPUs (hours; CI runs the short profile). Report in fuzz-report.md, logs in .fuzz-logs/.
fuzz: $(STAMP)
	$(PY) tests/fuzz/campaign.py --report fuzz-report.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
