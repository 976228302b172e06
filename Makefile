# Two commands do everything on a fresh machine:
#   make demo   — set up, then run the example pipeline, interrupt it and resume it
#   make test   — set up, then run lint, type checks and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shared tests examples benchmarks emulators
	$(BIN)/mypy shared/resumable

typecheck: $(STAMP)
	$(BIN)/mypy shared/resumable

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared/resumable
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not emulators"

bench: $(STAMP)
	$(BIN)/python benchmarks/w1_inprocess.py

clean:
	rm -rf $(VENV) build *.egg-info shared/*.egg-info .pytest_cache .mypy_cache .ruff_cache
