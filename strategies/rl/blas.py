"""Two settings around the numpy update: one OpenBLAS thread, and no cyclic garbage collection."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

# numpy wheels bundle OpenBLAS under suffixed names; per-thread setting first (OpenBLAS >= 0.3.27)
_OPENBLAS_LOCAL = "openblas_set_num_threads_local"
_OPENBLAS_GLOBAL = [
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
]


def _swap_threads(setter: Callable[[int], None], getter: Callable[[], int], threads: int) -> int:
    previous = getter()
    setter(threads)
    return previous


def _find_openblas_threads_setter() -> Callable[[int], int] | None:
    """A function that sets numpy's OpenBLAS thread count and returns the previous one, if numpy has one.

    Prefers the per-thread setting; older OpenBLAS builds only have the process-wide one.
    """
    package = Path(np.__file__).parent
    for path in sorted([*package.parent.glob("numpy.libs/*openblas*"), *package.glob(".dylibs/*openblas*")]):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        local = getattr(lib, _OPENBLAS_LOCAL, None)
        if local is not None:
            local.argtypes, local.restype = [ctypes.c_int], ctypes.c_int
            return local
        for set_name, get_name in _OPENBLAS_GLOBAL:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int

                return partial(_swap_threads, setter, getter)
    return None


openblas_threads = _find_openblas_threads_setter()
"""Sets numpy's OpenBLAS thread count and returns the previous one; None where numpy has no OpenBLAS."""


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the update's matmuls on one OpenBLAS thread: on a shared 2-core machine 64-row products spent
    most of their time waking and syncing a second thread (the update ran up to 10x slower)."""
    if openblas_threads is None:
        yield
        return
    previous = openblas_threads(1)
    try:
        yield
    finally:
        openblas_threads(previous)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside an update: its passes cost a few % of the steps and the
    update creates no reference cycles (the collector runs again right after)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
