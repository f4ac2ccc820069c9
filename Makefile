# The two set-up commands are `make run` and `make test`: each creates .venv and installs
# what it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
BENCH ?= ../shared/bench
BENCH_ARGS ?=

.PHONY: install run test lint format typecheck bench check clean screenshot

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/chatrelay serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	@mkdir -p bench-results
	$(BIN)/python bench/parser_throughput.py | tee bench-results/parser-micro.txt
	$(BIN)/python bench/core_micro.py | tee bench-results/core-micro.txt
	$(BIN)/python bench/run_bench.py --bench $(BENCH) --doc docs/benchmarks.md \
		--micro bench-results/parser-micro.txt --micro bench-results/core-micro.txt $(BENCH_ARGS)

# docs/screenshot-page.png: the chat page mid-stream (needs /usr/bin/chromium).
screenshot: $(STAMP)
	$(BIN)/python -m tests.e2e.screenshot docs/screenshot-page.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
