# `make run` and `make test` work from a fresh clone with only Python >= 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/dual4090_pcie4.toml
PY_DIRS := $(wildcard simulator tests calibration experiments benchmarks)

.PHONY: run test check lint typecheck bench experiments clean bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sim run --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

typecheck: $(STAMP)
	$(BIN)/mypy

# compile the package once: where PYTHONDONTWRITEBYTECODE is set, every process (each `sim`,
# each sweep worker, each CLI test) would otherwise compile every module it imports again
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q $(PY_DIRS) > /dev/null

test: lint typecheck bytecode
	$(BIN)/python -m pytest

# the developer's fast loop: lint, types and every test not marked slow (CI runs `make test`),
# on CHECK_JOBS processes (pytest-xdist; CHECK_JOBS=0 runs them in this process)
CHECK_JOBS ?= 2
check: lint typecheck bytecode
	$(BIN)/python -m pytest -m "not slow" -q -n $(CHECK_JOBS)

# `make bench BENCH_FLAGS=--quick` leaves out the 100,000-request run
bench: bytecode
	$(BIN)/python -m benchmarks.run $(BENCH_FLAGS)

# every experiments/<name>/run.py: its tables, plots and the numbers in its README
EXPERIMENTS := $(patsubst experiments/%/run.py,%,$(wildcard experiments/*/run.py))
experiments: $(STAMP)
	@for e in $(EXPERIMENTS); do echo "== experiments/$$e"; \
	  $(BIN)/python -m experiments.$$e.run || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
