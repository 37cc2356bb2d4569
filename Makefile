# A thin front for the harness: each target calls the real tool.
#   make up      a primary (127.0.0.1:5433) and a streaming standby (:5434)
#   make test    the whole suite (unit tests and scenarios)
PG_VERSION   ?= 17
PG_IMAGE     ?=
PRIMARY_PORT ?= 5433
STANDBY_PORT ?= 5434
NAME         ?= pgharness
PYTHON       ?= python3
VENV         ?= .venv
PYTEST_ARGS  ?=
WORKERS      ?= auto
BENCH_RUNS   ?= 5
N            ?= 5
SOAK_ARGS    ?=
SHUFFLE      ?=
SEED         ?=
ALONE_ARGS   ?=
ALONE_JOBS   ?= 1
MARKERS      ?= streaming archive readonly promotion slots logical pitr backup failover sync crash degraded cascade hot_standby security downstream lifecycle cli
MATRIX_VERSIONS ?= 13 15 17 18
MATRIX_DIR   ?= test-results/matrix
MATRIX_FROM  ?=
export PG_VERSION PG_IMAGE PRIMARY_PORT STANDBY_PORT

BIN     := $(VENV)/bin
HARNESS := $(BIN)/pgharness

.PHONY: help venv image up down test test-alone test-families test-matrix test-provision test-remote soak unit lint format docs bench bench-upgrade clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create the virtual environment with the harness and its tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

image: venv ## Build the node image for PG_VERSION (or on PG_IMAGE); cached on its inputs
	$(HARNESS) image

up: venv ## Start exercise 26-1's primary and standby; print connection strings
	$(HARNESS) up --name $(NAME)

down: venv ## Remove the `make up` environment (its containers, volumes, network only)
	$(HARNESS) down --name $(NAME)

test: image ## Run the whole suite on WORKERS pytest-xdist workers (auto: two per core, within what the engine holds; 0: serially)
	$(BIN)/pytest -n $(WORKERS) $(PYTEST_ARGS)

test-alone: image ## Each scenario file alone, in a pytest run of its own (ALONE_JOBS=2: two such runs at a time; ALONE_ARGS="-n 2" on workers): no file's verdict may depend on the others
	@mkdir -p test-results/alone; ls tests/scenarios/test_*.py | xargs -n 1 -P $(ALONE_JOBS) sh -c \
	    'out=test-results/alone/$$(basename "$$0" .py).log; \
	    if $(BIN)/pytest -q -p no:cacheprovider $(ALONE_ARGS) "$$0" >"$$out" 2>&1; then \
	        echo "### $$0 alone: $$(tail -n 1 "$$out")"; \
	    else echo "### $$0 alone FAILED:"; cat "$$out"; exit 1; fi'

test-families: image ## Each marker family alone (MARKERS), over every scenario file (ALONE_ARGS="-n 2" on workers)
	@status=0; for m in $(MARKERS); do \
	    echo "### -m $$m"; $(BIN)/pytest -q -p no:cacheprovider $(ALONE_ARGS) -m $$m tests/scenarios || status=1; \
	done; exit $$status

test-matrix: venv ## Run the suite on each of MATRIX_VERSIONS in turn; table under MATRIX_DIR (MATRIX_FROM=JUNIT.xml: a run already made on PG_VERSION, its column too)
	@rm -rf $(MATRIX_DIR) && mkdir -p $(MATRIX_DIR)
	@$(if $(MATRIX_FROM),cp $(MATRIX_FROM) $(MATRIX_DIR)/pg$(PG_VERSION).xml)
	@status=0; for v in $(MATRIX_VERSIONS); do \
	    echo "### PostgreSQL $$v"; \
	    $(MAKE) --no-print-directory image PG_VERSION=$$v || exit 1; \
	    $(MAKE) --no-print-directory test PG_VERSION=$$v \
	        PYTEST_ARGS="$(PYTEST_ARGS) --junitxml=$(MATRIX_DIR)/pg$$v.xml" || status=1; \
	done; \
	$(BIN)/python -m pgharness.matrix $(MATRIX_DIR) || status=1; \
	exit $$status

test-remote: image ## Streaming, promotion, failover, the CLI and a downstream job on a second engine in a network namespace, then one run over both (root)
	PYTHON=$(BIN)/python bash .ci/test-remote $(PYTEST_ARGS)

test-provision: venv ## Check .ci/provision on a fresh Debian bookworm root: it would change no installed package (root)
	$(BIN)/pytest tests/provision $(PYTEST_ARGS)

soak: image ## Run the suite N times (SOAK_ARGS="-m failover" for a family; SHUFFLE=1 each round in its own order, SEED=N to replay); failures per 1000 runs, each with its seed and evidence
	$(BIN)/python -m pgharness.soak --rounds $(N) --dir test-results/soak $(if $(SHUFFLE),--shuffle) $(if $(SEED),--seed $(SEED)) -- $(SOAK_ARGS)

unit: venv ## Run the unit tests only (no Docker needed)
	$(BIN)/pytest -m 'not docker' tests/unit $(PYTEST_ARGS)

lint: venv ## ruff (lint and format check), mypy (strict on harness/ and bench/), no function of harness/ over cyclomatic complexity 20
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/xenon --max-absolute C harness
	@mkdir -p .mypy-path && ln -sfn ../harness .mypy-path/pgharness
	$(BIN)/mypy

format: venv ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: venv ## The documentation site (Sphinx) into docs/_build/html; any warning is an error, and every public name must be in its API reference
	rm -rf docs/_build
	$(BIN)/python -m sphinx -E -W --keep-going -b html -q docs docs/_build/html
	$(BIN)/python docs/check_api.py docs/_build/html

bench: image ## Time a primary + standby to the first replicated row (BENCH_RUNS runs), each fault's apply and undo, upgrades by method, pgharness up against the floor, then the suite's CPU profile
	$(BIN)/python bench/startup.py --runs $(BENCH_RUNS) --no-suite
	$(BIN)/python bench/faults.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/upgrade.py
	$(BIN)/python bench/floor.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/profile.py

bench-upgrade: venv ## Time major upgrades by pg_upgrade mode and standby method (UPGRADE_ARGS="--from 13 --to 15 --scale 10")
	$(BIN)/python bench/upgrade.py $(UPGRADE_ARGS)

clean: ## Remove the virtual environment and test results
	rm -rf $(VENV) test-results docs/_build .pytest_cache .mypy_cache .mypy-path .ruff_cache
