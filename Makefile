# Two entry points: `make demo` (set up + seed 003's quick start on the bundled digits)
# and `make test` (set up + the test suite). Both work from a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3
STUDY := digits_optimization

.PHONY: setup lock demo test lint bench data chromium clean

setup: $(VENV)/.installed

# The environment is pinned: requirements.lock lists every package at one version (all extras, so
# `make test` covers every integration); the project itself is installed on top, without resolving.
$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv
	@test -x $(PY) || uv venv -q $(VENV) --python $(PYTHON)
	VIRTUAL_ENV=$(abspath $(VENV)) uv pip sync -q --compile-bytecode requirements.lock
	VIRTUAL_ENV=$(abspath $(VENV)) uv pip install -q --compile-bytecode --no-deps -e .
	@touch $@

# Re-pin after changing dependencies in pyproject.toml (then commit requirements.lock).
lock:
	uv pip compile pyproject.toml --extra dev --extra all --universal --python-version 3.10 -q -o requirements.lock

data: setup data/digits/raw

data/digits/raw:
	$(PY) scripts/make_digits.py --out data/digits

# Optional: Debian's Chromium lets kaleido export PNG and the report screenshot test run.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
		|| echo "chromium not installed: PNG export and the screenshot test will be skipped")

demo: data
	$(BIN)/ml-init-config data/digits --optuna --yes --force --num-epochs 8
	$(BIN)/ml-search --config configs/digits_config.yaml --n-trials 20 --study-name $(STUDY) --overwrite
	$(BIN)/ml-visualise --mode search --study-name $(STUDY)
	$(BIN)/ml-train --config runs/optuna_studies/$(STUDY)/best_config.yaml

test: setup chromium
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every benchmark against its hand-written baseline (a few minutes each on 2 cores): each script in
# benchmarks/ but _common.py, table.py and the handwritten_* baselines they run. Each merges its
# figures into benchmarks/results.json, then the README's table is printed from that file.
BENCHMARKS := $(filter-out benchmarks/_% benchmarks/handwritten_% benchmarks/table.py,$(wildcard benchmarks/*.py))
bench: setup
	@for b in $(BENCHMARKS); do echo "== $$b"; $(PY) $$b || exit 1; done
	$(PY) benchmarks/table.py

clean:
	rm -rf runs/ data/digits/.cache
