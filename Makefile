# One command sets up everything on a machine with Python >= 3.11 and make.
# PYTHON: the first of these that runs and is 3.11 or newer (a name that does not run, such as a
# pyenv shim for a version not installed, is passed over); `make PYTHON=/path/to/python` overrides.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11 or newer found (tried python3.13, python3.12, python3.11," \
		"python3); updown needs Python 3.11, 3.12 or 3.13: install one, or run make PYTHON=/path/to/python3.X" >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) run.py --strategy rl --train --source sim --speed max --seed 1 --markets 4 --no-tui --save demo_model --overwrite --report logs/demo_report.json

bench: $(STAMP)
	$(PY) benchmarks/bench_agent.py

clean:
	rm -rf $(VENV)
