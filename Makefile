# One command sets up everything on a machine with only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench clean

$(STAMP): pyproject.toml
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
	$(PY) run.py --strategy rl --train --source sim --speed max --seed 1 --markets 4 --no-tui --save demo_model --report logs/demo_report.json

bench: $(STAMP)
	$(PY) benchmarks/bench_agent.py

clean:
	rm -rf $(VENV)
