"""The packages import one way: each module imports only its own package and the layers below it, read
from the import statements of every module (those inside functions and TYPE_CHECKING blocks included)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

_BELOW_ENGINE = {"core", "streamers", "persistence", "strategies"}
_ALL_BUT_TESTS = _BELOW_ENGINE | {"sim", "engine", "venues", "benchmarks", "run"}
# package (or top-level module) -> the project packages it may import besides itself
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "streamers": {"core"},
    "persistence": {"core"},
    "sim": {"core", "streamers"},
    "strategies": {"core", "streamers", "persistence"},
    "engine": _BELOW_ENGINE | {"sim"},  # the gym env and the rollout workers build simulator sources
    "venues": _BELOW_ENGINE | {"sim", "engine"},
    "benchmarks": _ALL_BUT_TESTS,
    "run": _ALL_BUT_TESTS,
}
PROJECT = set(MAY_IMPORT) | {"tests"}


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _modules(root: Path) -> list[tuple[str, Path]]:
    """(layer, file) for the top-level modules and every module of the top-level packages."""
    out = [(p.stem, p) for p in sorted(root.glob("*.py"))]
    for package in sorted(p.parent for p in root.glob("*/__init__.py")):
        if package.name != "tests":
            out += [(package.name, p) for p in sorted(package.rglob("*.py"))]
    return out


def layer_violations(root: Path) -> list[str]:
    """One line per import that goes up or sideways, and per package the table does not place."""
    problems = []
    for layer, path in _modules(root):
        where = path.relative_to(root)
        if layer not in MAY_IMPORT:
            problems.append(f"{where}: package {layer!r} has no place in MAY_IMPORT")
            continue
        for line, name in _imported(ast.parse(path.read_text(), str(path))):
            if name in PROJECT and name != layer and name not in MAY_IMPORT[layer]:
                problems.append(f"{where}:{line}: {layer} imports {name}")
    return problems


def test_no_package_imports_from_a_package_above_it():
    assert layer_violations(ROOT) == []


def test_an_upward_import_inside_a_function_is_reported(tmp_path):
    for package, text in {
        "core": "",
        "engine": "",
        "sim": "def start():\n    from engine.clock import RealClock\n    return RealClock()\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "servers.py").write_text(text)

    assert layer_violations(tmp_path) == ["sim/servers.py:2: sim imports engine"]


def test_the_engine_importing_a_venue_and_an_unplaced_package_are_reported(tmp_path):
    for package in ("engine", "venues", "plugins"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "engine" / "engine.py").write_text("import venues.polymarket.broker\n")

    assert layer_violations(tmp_path) == [
        "engine/engine.py:1: engine imports venues",
        "plugins/__init__.py: package 'plugins' has no place in MAY_IMPORT",
    ]
