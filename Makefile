# The two commands of README.md: `make run` (the main job) and `make test` (the test suite).
# Both create .venv on first use; PYTHON picks the interpreter (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint fast clean

install: $(STAMP)

# requirements.lock pins every transitive package to the set tested together, so pip does not
# spend minutes resolving; torch is the CPU wheel unless a CUDA build of 2.13.0 is already there.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25"
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlra demo

lint: $(STAMP)
	$(BIN)/ruff check mlra tests
	$(BIN)/ruff format --check mlra tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# the suite without the tests that load the real base model
fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

clean:
	rm -rf $(VENV) .mlra .pytest_cache .mypy_cache .ruff_cache
