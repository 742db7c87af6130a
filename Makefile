# Two entry points for humans and CI; each bootstraps .venv from the hashed lock file.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock
STAMP  := $(VENV)/.installed

.PHONY: quickstart test lint fuzz-api lock bench bench-server clean

$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/strongroom quickstart

test: $(STAMP) lint
	$(BIN)/python -m pytest

# Schemathesis against a fresh server's own OpenAPI document: 5xx pass, then every check
# (>= 10,000 cases each, fixed seed, a few minutes); see docs/api.md.
fuzz-api: $(STAMP)
	$(BIN)/python tests/fuzz/run_schemathesis.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/bandit -q -c pyproject.toml -r src

bench: $(STAMP)
	$(BIN)/python bench/bench_registry.py

# Serving overhead vs a bare app and MLServer, with wrk (apt-get install wrk); see bench/README.md.
bench-server: $(STAMP)
	$(BIN)/python bench/bench_server.py $(BENCH_ARGS)

# Regenerate the lock file (needs uv: pip install uv).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	    --universal --output-file $(LOCK)

clean:
	rm -rf $(VENV)
