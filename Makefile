# The two set-up commands of README.md. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints-cpu.txt

.PHONY: demo test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The product's main job on its default: a sample clip -> out/demo.mp4 + out/demo.jsonl.
demo: $(BIN)/python
	$(PIP) -e .
	$(BIN)/python -m tools.demo

# Lint and the whole test suite (pytest exits 5 when it collects no test: that fails too).
test: $(BIN)/python
	$(PIP) -e '.[dev]'
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
