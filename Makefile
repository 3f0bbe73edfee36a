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
	@echo "demo: a new rl agent trains from scratch for 4 simulated 15-minute windows (about a minute)."
	@echo "demo: 4 windows are far too few to learn anything, so expect it to lose money; this shows the machinery."
	$(PY) run.py --strategy rl --train --source sim --speed max --seed 1 --markets 4 --no-tui --save demo_model --report logs/demo_report.json
	@echo "demo: to train properly (80 windows, the recipe that learned best): $(PY) run.py --strategy rl --train --features extended --gamma 1.0 --markets 80"
	@echo "demo: to evaluate that model (greedy, on seeds it never trained on): $(PY) run.py --strategy rl --load rl_model --seed 1001 --markets 20"

bench: $(STAMP)
	$(PY) benchmarks/bench_agent.py

clean:
	rm -rf $(VENV)
