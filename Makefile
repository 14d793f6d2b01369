# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install pinned dependencies and MovieLens-100K, run the main job
#   make test   - the same set-up plus Ray, Flower and the test tools, then the full test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.cdrsim-core
STAMP  := $(VENV)/.cdrsim-installed
# The main job: PrivNet on ML-100K, the undefended transfer, the adversary, LDP, BlurMe and the
# target alone on two worker processes, 15 epochs each (the README's table: up to the paper's 50
# epochs, 5 seeds; `make demo DEMO="--scenario privnet --jobs 2"` runs every variant).
DEMO   ?= --scenario privnet --jobs 2 --set epochs=15 --variants lambda=0 lambda=1 ldp blurme target-only

export FLWR_TELEMETRY_ENABLED = 0
export FLWR_DISABLE_UPDATE_CHECK = 1
export RAY_ENABLE_UV_RUN_RUNTIME_ENV = 0

.PHONY: demo lint test test-fast bench install clean

install: $(STAMP)

# torch pinned, in the same resolution as the project: an unpinned torch pulls a multi-GB CUDA
# build. MovieLens-100K comes from the recbole wheel without its dependencies (they would pin
# an old Ray). pip byte-compiles what it installs: where PYTHONDONTWRITEBYTECODE is set (as on
# some CI machines) nothing is cached later, and every process of a run (Ray workers, Flower
# party hosts, --jobs workers) would compile torch, Ray and Flower again from source. The
# venv's own pip is recent enough (PEP 660 editable installs), so it is not upgraded first.
# The main job needs the core only ($(CORE)); the tests, the benchmarks and the Ray and Flower
# runtimes need the `test` extra, which adds Ray, Flower and the test tools ($(STAMP)).
define install_project
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 -e '$(1)'
	$(BIN)/python -m pip install -q --no-deps recbole==1.2.1
endef

$(CORE): pyproject.toml
	$(call install_project,.)
	touch $(CORE)

$(STAMP): pyproject.toml
	$(call install_project,.[test])
	touch $(CORE) $(STAMP)

demo: $(CORE)
	$(BIN)/python -m sim.run $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_protocol.py --quick
	$(BIN)/python bench/bench_runtime.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
