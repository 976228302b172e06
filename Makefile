# Two commands do everything on a fresh machine:
#   make demo   — set up, then run the video data-prep pipeline event-driven on the local
#                 cloud (emulators), kill one step's function instance mid-step, and watch
#                 the run resume and finish (make demo-inprocess: the in-process demo)
#   make test   — set up, then run lint, type checks and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: chromium setup demo demo-inprocess test lint typecheck unit fuzz sim sim-mutations soak burn bench bench-serverless bench-map bench-emulators clean emulators emulators-cycles

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/serverless_demo.py

demo-inprocess: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check shared tests examples benchmarks emulators
	$(BIN)/mypy shared/resumable emulators

typecheck: $(STAMP)
	$(BIN)/mypy shared/resumable emulators

# The UI's browser tests (tests/ui) drive Debian's chromium: as root (CI) this installs it;
# elsewhere it says how, and those tests skip saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the UI's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null \
	      || echo "note: chromium could not be installed: the UI's browser tests will skip"; \
	  else \
	    echo "note: chromium is not installed (as root: make chromium): the UI's browser tests will skip"; \
	  fi; }

# pytest starts the local cloud (emulators/) once for the tests that need it and stops it at
# the end, also when tests fail or the run is interrupted (Ctrl-C, SIGTERM). It runs under
# coverage (pyproject.toml: branch, subprocesses measured); the per-module table is printed
# whether the tests pass or not. tests/coverage_floor.py then fails the target when a module
# is under its floor (85%, the core modules 95%), listing each; the exit code is pytest's
# when the tests failed.
COVERAGE_FILE ?= $(CURDIR)/.coverage
export COVERAGE_FILE

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/mypy shared/resumable emulators
	$(BIN)/lint-imports
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest; status=$$?; \
	$(BIN)/coverage combine --quiet && $(BIN)/coverage report; \
	$(BIN)/python -m tests.coverage_floor || [ $$status -ne 0 ] || status=1; \
	exit $$status

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not emulators"

# The fuzzers of tests/fuzz beyond CI's few seconds each: FUZZ_EXAMPLES examples per target,
# randomized from SEED (printed; `make fuzz SEED=...` replays a run). Each example is
# bounded in time and memory by tests/fuzz/budget.py, so no overall timeout.
FUZZ_EXAMPLES ?= 2000
SEED ?= $(shell date +%s)
fuzz: $(STAMP)
	@echo "fuzzing with $(FUZZ_EXAMPLES) examples per target, seed $(SEED)"
	RESUMABLE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider tests/fuzz \
		--hypothesis-seed=$(SEED) --hypothesis-show-statistics --timeout=0

# The local cloud in the foreground: prints the export lines, Ctrl-C stops everything.
emulators: $(STAMP)
	$(BIN)/python -m emulators start

# Acceptance check: 20 start/stop cycles of the local cloud, failing on any leftover.
emulators-cycles: $(STAMP)
	$(BIN)/python -m emulators cycles -n 20

# The deterministic simulation beyond CI's budget (2000 serverless schedules, 600
# in-process): `make sim SEEDS=100000 START=0`; a failure prints its seed and a replay.
SEEDS ?= 20000
START ?= 0
sim: $(STAMP)
	$(BIN)/python -m tests.simulation --seeds $(SEEDS) --start $(START)
	$(BIN)/python -m tests.simulation --inprocess --seeds $(SEEDS) --start $(START)

# Break each guard of the protocol on purpose and show the simulation finds it.
sim-mutations: $(STAMP)
	$(BIN)/python -m tests.simulation.mutations --budget 2000

# The chaos soak on the local stack (tests/soak; a short one runs with the tests):
# SOAK_RUNS concurrent runs while SOAK_KILLS step functions are SIGKILLed, messages are
# duplicated, runs cancelled and resumed and storage requests failed; then every run is
# checked. SOAK_SEED draws the plan. Prints a summary; exits non-zero on any failure.
SOAK_RUNS ?= 100
SOAK_KILLS ?= 50
SOAK_SEED ?= 0
soak: $(STAMP)
	SOAK_RUNS=$(SOAK_RUNS) SOAK_KILLS=$(SOAK_KILLS) SOAK_SEED=$(SOAK_SEED) $(BIN)/python -m tests.soak

# CI on a clean clone of HEAD, PASSES times in a row (5 unless `make burn PASSES=N`), each
# beside a CPU-burning loop per core (.ci/burn; about 30 minutes a pass on 2 cores): no
# test may depend on a quiet machine.
burn:
	.ci/burn

bench: $(STAMP)
	$(BIN)/python benchmarks/w1_inprocess.py

bench-serverless: $(STAMP)
	$(BIN)/python benchmarks/w2_w3_serverless.py

# W4: a map step over 1,000 items on the local stack (benchmarks/w4_map.py).
bench-map: $(STAMP)
	$(BIN)/python benchmarks/w4_map.py

# Latencies of the local cloud (the emulator probes in tests/emulators pin behaviour only).
bench-emulators: $(STAMP)
	$(BIN)/python benchmarks/emulator_probes.py

clean:
	rm -rf $(VENV) build *.egg-info shared/*.egg-info .pytest_cache .mypy_cache .ruff_cache
