"""What several test files share: where the committed fixtures are (the repository alone, nothing beside it),
and how to start a process that meets file permissions as an ordinary user does."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1


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
