"""What several test files share: where the repository and its committed fixtures are (nothing beside it), the
published reference models copied somewhere writable, the command line run in-process or as a real process, and
how to start a process that meets file permissions as an ordinary user does."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "run.py"
FIXTURES = ROOT / "tests" / "fixtures"
PHASE5 = FIXTURES / "reference_phase5"  # the reference project's published model: rl_model
PHASE3 = FIXTURES / "reference_phase3"  # its older model that this project refuses: rl_model_prob_pnl

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1


def copy_model(folder: Path, name: str, to: Path, as_name: str | None = None) -> Path:
    """Copy a published model pair (`name`.safetensors + `name`_stats.npz) into `to`, writable, as `as_name`
    (default: its own name); returns the path without extension, as --load takes it."""
    target = as_name or name
    for suffix in (".safetensors", "_stats.npz"):
        shutil.copy(folder / f"{name}{suffix}", to / f"{target}{suffix}")
        os.chmod(to / f"{target}{suffix}", 0o644)
    return to / target


@pytest.fixture
def phase5_model(tmp_path: Path) -> Path:
    """The reference project's published model, copied into the test's folder as rl_model."""
    return copy_model(PHASE5, "rl_model", tmp_path)


@dataclass(frozen=True)
class Ran:
    """What an entry point did, read like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _fd2_into(sink: BinaryIO) -> Iterator[None]:
    """Descriptor 2 into `sink`: the stderr of the processes a run starts (the simulator) is read with its own."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def call_main(main: Callable[[list[str]], int], *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Ran:
    """An entry point's `main(argv)` in this process, as a shell would run it: in `cwd`, with `env` added, its
    stdout and stderr read back, and SIGINT/SIGTERM left as they were (run.py ignores both once a run ends)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as child_err:
        with (contextlib.chdir(cwd), _patched_env(env or {}), contextlib.redirect_stdout(out),
              contextlib.redirect_stderr(err), _fd2_into(child_err)):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's --help
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
        child_err.seek(0)
        children = child_err.read().decode(errors="replace")
    return Ran(code, out.getvalue(), err.getvalue() + children)


@contextlib.contextmanager
def _patched_env(env: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Ran:
    """`python run.py ARGS` in this process: run.main returns the exit code and leaves nothing behind."""
    import run

    return call_main(run.main, *args, cwd=cwd, env=env)


def run_cli_process(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 240,
                    **popen) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS` as a real process, for what only a process has: its own signals, environment,
    modules or permissions."""
    return subprocess.run([sys.executable, str(RUN_PY), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **popen)


def one_sentence(proc: Ran | subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a run that exited with `code`, with no traceback."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _drop_root_override() -> None:
    """In the child before exec: without CAP_DAC_OVERRIDE, root obeys a folder's or file's write bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def as_ordinary_user() -> Callable[[], None] | None:
    """preexec_fn for subprocess: None for an ordinary user; for root on Linux (CI containers), drop the
    capability that lets root write into read-only folders, so chmod 0o555 means read-only to the child."""
    if os.geteuid() != 0:
        return None
    if not sys.platform.startswith("linux"):
        raise RuntimeError("run the tests as an ordinary user: root ignores read-only permissions here")
    return _drop_root_override

