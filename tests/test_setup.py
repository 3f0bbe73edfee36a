"""`make setup`: its own choice of Python (the first of python3.13, 3.12, 3.11, python3 that runs and is
>= 3.11) and package metadata that builds without deprecation warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

MAKE = shutil.which("make") or "make"
SHIM = "#!/bin/sh\necho \"pyenv: $(basename $0): command not found\" >&2\nexit 127\n"  # on PATH, but no Python
TOO_OLD = "#!/bin/sh\nexit 1\n"  # stands for a Python below 3.11: the version check fails


def _bin(tmp_path: Path, pythons: dict[str, str | None]) -> Path:
    """A PATH folder holding only the given names: a script text, or None for the real interpreter."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, script in pythons.items():
        if script is None:
            (folder / name).symlink_to(sys.executable)
        else:
            (folder / name).write_text(script)
            (folder / name).chmod(0o755)
    return folder


def _make(tmp_path: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    return subprocess.run([MAKE, *args, "setup"], cwd=project, env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("pythons", "chosen"),
    [
        ({"python3.13": SHIM, "python3.12": TOO_OLD, "python3": None}, "python3"),
        ({"python3.13": SHIM, "python3.12": None, "python3.11": None, "python3": None}, "python3.12"),
    ],
    ids=["only-python3", "newest-that-runs"],
)
def test_make_picks_the_first_python_that_runs_and_is_3_11_or_newer(
    tmp_path: Path, pythons: dict[str, str | None], chosen: str
) -> None:
    proc = _make(tmp_path, _bin(tmp_path, pythons), "-n")
    assert proc.returncode == 0, proc.stderr
    assert f"\n{chosen} -m venv .venv" in f"\n{proc.stdout}", proc.stdout


def test_make_without_python_3_11_or_newer_says_which_versions_work(tmp_path: Path) -> None:
    proc = _make(tmp_path, _bin(tmp_path, {"python3.13": SHIM, "python3.11": SHIM, "python3": TOO_OLD}))
    assert proc.returncode != 0
    assert "no Python 3.11 or newer found" in proc.stderr and "3.11, 3.12 or 3.13" in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "project" / ".venv")


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """A license table makes setuptools >= 77 warn on every install; the SPDX string needs >= 77."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]
