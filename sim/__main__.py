"""`python -m sim`: serve the simulated venues on loopback until Ctrl+C or SIGTERM.

Prints one `export UPDOWN_...=...` line per endpoint plus `UPDOWN_CLOCK`, so a shell can
`eval "$(python -m sim --seed 1 --speed 60 | head -8)"` and point the live clients at the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Sequence

from core.frames import ASSETS
from sim.faults import FaultSpec
from sim.profiles import ProfileError, load_profile
from sim.servers import SimServers


class _ArgumentParser(argparse.ArgumentParser):
    """Bad arguments: one sentence on stderr and exit 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"python -m sim: {message}; see python -m sim --help.\n")


class UsageError(ValueError):
    """An argument that parses but makes no sense; its text is the sentence shown to the user."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(prog="python -m sim", description="Serve the simulated venues on 127.0.0.1.")
    parser.add_argument("--seed", type=int, default=1, help="market seed (the content depends only on it)")
    parser.add_argument("--speed", default="1", help="clock speed, times real time (> 0)")
    parser.add_argument("--assets", default=",".join(ASSETS), help="comma-separated subset of BTC,ETH,SOL,XRP")
    parser.add_argument("--sim-faults", default="", help="fault rates, e.g. drop=0.001,garbage=0.001,stall=0.01")
    parser.add_argument("--sim-profile", default="realistic",
                        help="market model: realistic (default), lagged (what-if, not real) or a JSON profile file")
    args = parser.parse_args(argv)
    try:
        speed = float(args.speed)
    except ValueError:
        speed = math.nan
    if not (math.isfinite(speed) and speed > 0):
        raise UsageError(
            f"--speed must be a positive number of times real time (the servers run on a real clock, "
            f"so there is no 'max'), got {args.speed!r}."
        )
    args.speed = speed
    assets = tuple(a.strip().upper() for a in args.assets.split(",") if a.strip())
    unknown = [a for a in assets if a not in ASSETS]
    if not assets or unknown:
        raise UsageError(f"--assets must be a comma-separated subset of {','.join(ASSETS)}, got {args.assets!r}.")
    args.assets = assets
    try:
        args.sim_faults = FaultSpec.parse(args.sim_faults) if args.sim_faults else None
    except ValueError as exc:
        raise UsageError(f"--sim-faults is not valid: {exc}.") from exc
    try:
        args.sim_profile = load_profile(args.sim_profile)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    return args


async def _serve(args: argparse.Namespace) -> None:
    servers = SimServers(args.seed, args.speed, assets=args.assets, faults=args.sim_faults, profile=args.sim_profile)
    endpoints = await servers.start()
    clock = servers.clock
    for variable, url in endpoints.items():
        print(f"export {variable}={url}")
    print(f"export UPDOWN_CLOCK={clock.wall_origin!r},{clock.sim_origin!r},{clock.speed!r}", flush=True)
    # stdout stays eval-able; the human line goes to stderr
    print(
        f"python -m sim: serving seed {args.seed} ({','.join(args.assets)}, profile {args.sim_profile.name}) "
        f"at {args.speed:g}x on 127.0.0.1; "
        "Ctrl+C to stop.",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await servers.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse_args(argv)
    except UsageError as exc:
        print(f"python -m sim: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except OSError as exc:
        print(f"python -m sim: could not open a loopback server ({exc.strerror or exc}).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
