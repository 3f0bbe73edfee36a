"""Where a sweep's trials run (one after another here, or as Ray tasks) and Ray Tune's searcher: the parts of
`benchmarks/sweep.py` that touch Ray."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = "val_pnl"  # what a search maximises: the net PnL on the validation seeds
INSTALL_HINT = "pip install -e '.[scale]'"


class SweepError(Exception):
    """Bad sweep input, as one sentence (exit code 2)."""


# ---- where trials run ------------------------------------------------------------------------------------


class Sequential:
    """Runs each job in this process when it is submitted."""

    name = "one after another in this process"
    slots = 1

    def __init__(self) -> None:
        self._done: list[tuple[int, dict | BaseException]] = []

    def submit(self, key: int, function: Callable[..., dict], *args: Any) -> None:
        try:
            self._done.append((key, function(*args)))
        except Exception as exc:  # a failed trial is reported, the sweep goes on
            self._done.append((key, exc))

    def next_done(self) -> tuple[int, dict | BaseException]:
        return self._done.pop(0)

    def close(self) -> None:
        """Nothing to release."""


class OnRay:
    """Runs each job as a Ray task (one CPU each by default) and hands back results as they finish."""

    def __init__(self, ray: Any, cpus_per_trial: float, address: str | None) -> None:
        self.ray = ray
        self._pending: dict[Any, int] = {}
        self._remote: dict[Callable, Any] = {}
        self._cpus = cpus_per_trial
        cpus = ray.cluster_resources().get("CPU", 1.0)
        self.slots = max(1, int(cpus // cpus_per_trial))
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        self.name = f"Ray tasks on {where} ({cpus:g} CPUs, {cpus_per_trial:g} per trial)"

    def submit(self, key: int, function: Callable[..., dict], *args: Any) -> None:
        remote = self._remote.get(function)
        if remote is None:
            remote = self._remote[function] = self.ray.remote(num_cpus=self._cpus)(function)
        self._pending[remote.remote(*args)] = key

    def next_done(self) -> tuple[int, dict | BaseException]:
        (ref,), _ = self.ray.wait(list(self._pending), num_returns=1)
        key = self._pending.pop(ref)
        try:
            return key, self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            return key, exc

    def close(self) -> None:
        self.ray.shutdown()


def start_ray(args: argparse.Namespace) -> Any:
    """The `ray` module, connected; None when Ray is not installed (the caller says so and runs sequentially)."""
    if args.ray_address is None:
        # a local instance listens on loopback only (Ray otherwise binds the machine's network address)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        return None
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    if args.ray_address:
        # the cluster's workers get this repository's code (files git ignores stay behind)
        runtime_env: dict[str, Any] = {"working_dir": str(ROOT), "excludes": [".git", "logs", "*.safetensors", "*.npz"]}
    else:
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
    try:
        # "local" starts a new instance even where `ray start` left one (ray.init() would join that)
        ray.init(address=args.ray_address or "local", runtime_env=runtime_env, include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="WARNING")
    except Exception as exc:  # ConnectionError, TimeoutError, ValueError for a malformed address, ...
        where = f"the Ray cluster at {args.ray_address}" if args.ray_address else "a local Ray instance"
        raise SweepError(f"could not start or reach {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}") \
            from None
    return ray



def searcher_for(args: argparse.Namespace, space: dict[str, Any]) -> Any:
    """Ray Tune's OptunaSearch over the space: TPE, or Optuna's random sampler."""
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise SweepError(f"--search uses Ray Tune's OptunaSearch: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=args.search_seed) if args.search == "optuna"
               else optuna.samplers.RandomSampler(seed=args.search_seed))
    searcher = OptunaSearch(metric=OBJECTIVE, mode="max", sampler=sampler)
    searcher.set_search_properties(OBJECTIVE, "max", space)
    return searcher
