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
# The --show tests open real windows on a virtual X server: Debian's xvfb and xdotool are installed here when
# missing on a machine where that can be done (root with apt-get, as in CI); elsewhere those tests skip, saying why.
# The BlazePose teacher's own environment (.venv-teacher: ~40 MB from PyPI, plus the heavy model from npm where
# npm exists) is made or checked first, and its tests must run: POSESTREAM_REQUIRE_TEACHER=1 fails their skips.
test: $(BIN)/python
	@command -v Xvfb >/dev/null && command -v xdotool >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xdotool >/dev/null; } || \
	  echo "make test: no Xvfb/xdotool and cannot install them: the window tests will be skipped"
	$(PIP) -e '.[dev]'
	$(BIN)/python -m stream.cli teacher setup --venv .venv-teacher
	$(BIN)/ruff check .
	POSESTREAM_REQUIRE_TEACHER=1 $(BIN)/python -m pytest
