# Two entry points: `make demo` (set up + seed 003's quick start on the bundled digits)
# and `make test` (set up + the test suite). Both work from a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3
STUDY := digits_optimization

.PHONY: setup demo test lint data chromium clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv
	@test -x $(PY) || uv venv -q $(VENV) --python $(PYTHON)
	VIRTUAL_ENV=$(abspath $(VENV)) uv pip install -q --compile-bytecode -e ".[dev,postgres]"
	@touch $@

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

clean:
	rm -rf runs/ data/digits/.cache
