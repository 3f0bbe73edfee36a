"""The PPO agent's former module, kept so existing imports work: everything now lives in `strategies.rl`."""

from strategies import rl
from strategies.rl import *  # noqa: F403 (the names this module gave before the split)
from strategies.rl.blas import one_blas_thread as _one_blas_thread
from strategies.rl.blas import openblas_threads as _openblas_threads
from strategies.rl.numpy_update import NumpyPPO as _NumpyPPO

__all__ = [*rl.__all__, "_NumpyPPO", "_one_blas_thread", "_openblas_threads"]
