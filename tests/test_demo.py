"""`make demo` tells the truth in context: what the user is looking at, and the two commands that train
properly and evaluate, which must be the README's recipe and commands run.py accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import run
from tests.conftest import ROOT


def demo_lines() -> list[str]:
    """What `make demo` would echo and run, without running it."""
    proc = subprocess.run(["make", "-n", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def echoed(lines: list[str]) -> list[str]:
    return [shlex.split(ln)[1] for ln in lines if ln.startswith("echo ")]


def run_args(sentence: str) -> list[str]:
    """The run.py arguments of the command at the end of a sentence ('...: .venv/bin/python run.py ...')."""
    command = shlex.split(sentence.rsplit(": ", 1)[1])
    assert Path(command[0]).name.startswith("python") and command[1] == "run.py", sentence
    return command[2:]


def test_demo_says_it_is_a_short_training_run_from_scratch_expected_to_lose():
    lines = demo_lines()
    (command,) = [ln for ln in lines if "run.py" in ln and not ln.startswith("echo ")]
    args = shlex.split(command)
    assert args[args.index("--markets") + 1] == "4" and "--train" in args and "--load" not in args
    before = " ".join(echoed(lines[: lines.index(command)]))
    assert "from scratch" in before and "4 simulated 15-minute windows" in before and "lose money" in before


def test_demo_ends_with_the_readme_recipe_and_an_evaluation_command_run_py_accepts():
    lines = demo_lines()
    (command,) = [ln for ln in lines if "run.py" in ln and not ln.startswith("echo ")]
    after = echoed(lines[lines.index(command) + 1:])
    (train,) = [s for s in after if "train properly" in s]
    (evaluate,) = [s for s in after if "evaluate" in s]
    readme = (ROOT / "README.md").read_text()
    recipe = re.search(r"^python run\.py (.+?)\s+# the recipe that learned best", readme, re.MULTILINE)
    assert recipe is not None
    assert run_args(train) == shlex.split(recipe.group(1))
    train_opts = run.validate(run.build_parser().parse_args(run_args(train)))
    eval_opts = run.validate(run.build_parser().parse_args(run_args(evaluate)))
    assert train_opts.args.train and not eval_opts.args.train
    assert eval_opts.args.load == train_opts.save_name  # it evaluates the model that the recipe saves
    assert eval_opts.args.seed not in (None, 0)  # on a market the recipe (sim seed 0) never trained on
