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
	@echo "demo: a new rl agent trains from scratch for 4 simulated 15-minute windows (about a minute)."
	@echo "demo: 4 windows are far too few to learn anything, so expect it to lose money; this shows the machinery."
	$(PY) run.py --strategy rl --train --source sim --speed max --seed 1 --markets 4 --no-tui --save demo_model --overwrite --report logs/demo_report.json
	@echo "demo: to train properly (80 windows, the recipe that learned best): $(PY) run.py --strategy rl --train --features extended --gamma 1.0 --markets 80"
	@echo "demo: to evaluate that model (greedy, on seeds it never trained on): $(PY) run.py --strategy rl --load rl_model --seed 1001 --markets 20"

bench: $(STAMP)
	$(PY) benchmarks/bench_agent.py

clean:
	rm -rf $(VENV)
