"""End-to-end `--source sim --speed max` throughput and memory: the Engine, SimSource and MarketData that
run.py wires, driven in this process (no CLI start-up in the figures).

    python benchmarks/bench_e2e.py --strategy rl --train --windows 50 --seed 1
    python benchmarks/bench_e2e.py --strategy fair_value --windows 50 --repeat 3
    python benchmarks/bench_e2e.py --strategy rl --windows 10 --in-process-sim   # one core, no child

Prints decisions per second overall (the report's `decisions_per_second`) and per 10-window segment;
the CPU seconds of the engine process and of the simulator process (SimSource generates the market in
a child process by default). On a shared machine the scheduler gives one login session a fair share
however many processes it runs, so the wall-clock rate there is bounded by the two processes' CPU
together; decisions per engine CPU second is the rate once each process has a core of its own.
RSS as each segment ends: `peak` is `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the engine process's
high-water mark so far), `now` its resident set from /proc/self/statm, and the simulator process's
VmHWM and VmRSS from /proc/PID/status. The snapshots are taken by a monitor task that wakes every
20 ms of wall time (the engine yields to the event loop every 512 frames), so a segment boundary is
seen within about 20 ms of the window's settlement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.clock import VirtualClock
from core.frames import ASSETS
from engine.engine import Engine, EngineConfig
from engine.sources import virtual_source
from sim.source import SimSource
from strategies import STRATEGY_NAMES, create_strategy
from streamers.market_data import MarketData

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_POLL_S = 0.02  # monitor period: a timer, so waiting on the simulator process is not a busy loop


def peak_rss_mb() -> float:
    """High-water resident set of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident set right now, from /proc (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_KB / 1024.0
    except OSError:
        return 0.0


def process_rss_mb(pid: int | None) -> tuple[float, float]:
    """(peak, current) resident set of another process from /proc/PID/status; zeros when unknown."""
    if pid is None:
        return 0.0, 0.0
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024.0
    except OSError:
        return 0.0, 0.0
    return values.get("VmHWM", 0.0), values.get("VmRSS", 0.0)


@dataclass(frozen=True)
class Segment:
    windows: int  # windows resolved when the snapshot was taken
    wall_s: float  # wall seconds since the engine started
    decisions: int
    updates: int
    peak_rss_mb: float
    rss_mb: float
    sim_peak_rss_mb: float = 0.0  # the simulator process (0 with the in-process simulator)
    sim_rss_mb: float = 0.0


def _snapshot(engine: Engine, source: SimSource, t0: float) -> Segment:
    stats = engine.stats
    return Segment(stats.windows, time.perf_counter() - t0, stats.decisions, stats.updates,
                   peak_rss_mb(), current_rss_mb(), *process_rss_mb(source.pid))


async def _monitor(engine: Engine, source: SimSource, every: int, segments: list[Segment], t0: float) -> None:
    """Snapshot stats and RSS each time another `every` windows have resolved."""
    next_mark = every
    while True:
        if engine.stats.windows >= next_mark:
            segments.append(_snapshot(engine, source, t0))
            next_mark = (engine.stats.windows // every + 1) * every
        await asyncio.sleep(_POLL_S)


async def run_once(strategy_name: str, train: bool, windows: int, seed: int, every: int,
                   assets: tuple[str, ...], log_dir: str | None, background_sim: bool = True,
                   ) -> tuple[dict, list[Segment]]:
    """One engine run over `windows` simulated windows; returns its report and the segment snapshots."""
    strategy = create_strategy(strategy_name, seed=seed)
    cfg = EngineConfig(
        size=100.0, max_windows=windows, assets=assets, train=train, log_dir=log_dir,
        seed=seed, source_name="sim", strategy_name=strategy_name,
    )
    source = virtual_source("sim", seed=seed, assets=assets, background=background_sim)
    engine = Engine(strategy, source, VirtualClock(), MarketData(assets), cfg)
    segments: list[Segment] = []
    cpu0, sim0 = _cpu_seconds(resource.RUSAGE_SELF), _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    monitor = asyncio.create_task(_monitor(engine, source, every, segments, t0))
    try:
        report = await engine.run()
        if not segments or segments[-1].windows != engine.stats.windows:
            segments.append(_snapshot(engine, source, t0))
    finally:
        monitor.cancel()
        await source.close()  # reaps the simulator process, so its CPU time shows in RUSAGE_CHILDREN
    report["cpu_seconds"] = {
        "engine_process": _cpu_seconds(resource.RUSAGE_SELF) - cpu0,
        "simulator_process": _cpu_seconds(resource.RUSAGE_CHILDREN) - sim0,
    }
    return report, segments


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def print_run(report: dict, segments: list[Segment]) -> None:
    print(f"  overall: {report['decisions']:,} decisions in {report['wall_seconds']:.2f} s = "
          f"{report['decisions_per_second']:,.0f} decisions/s; {report['windows']} windows, "
          f"{report.get('updates', 0)} PPO updates, {report['feed']['messages']:,} frames")
    cpu = report["cpu_seconds"]
    print(f"  CPU: engine process {cpu['engine_process']:.2f} s = "
          f"{report['decisions'] / max(1e-9, cpu['engine_process']):,.0f} decisions per CPU second; "
          f"simulator process {cpu['simulator_process']:.2f} s")
    prev = Segment(0, 0.0, 0, 0, 0.0, 0.0)
    for s in segments:
        wall = max(1e-9, s.wall_s - prev.wall_s)
        print(f"  windows {prev.windows + 1:>3}-{s.windows:<3} {(s.decisions - prev.decisions) / wall:>8,.0f} decisions/s"
              f"  ({s.updates - prev.updates} updates, {wall:.2f} s)"
              f"  RSS peak {s.peak_rss_mb:.0f} MB, now {s.rss_mb:.0f} MB"
              + (f"; sim process peak {s.sim_peak_rss_mb:.0f} MB, now {s.sim_rss_mb:.0f} MB" if s.sim_rss_mb else ""))
        prev = s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", default="rl", choices=STRATEGY_NAMES)
    parser.add_argument("--train", action="store_true", help="train the rl agent while running")
    parser.add_argument("--windows", type=int, default=50, help="15-minute windows to run (--markets)")
    parser.add_argument("--every", type=int, default=10, help="windows per reported segment")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs (seeds seed, seed+1, ...); prints the median")
    parser.add_argument("--assets", default=",".join(ASSETS))
    parser.add_argument("--no-logs", action="store_true", help="skip the CSV logs (the CLI always writes them)")
    parser.add_argument("--in-process-sim", action="store_true",
                        help="generate the market in this process (SimSource background=False), one core only")
    args = parser.parse_args(argv)
    if args.train and args.strategy != "rl":
        parser.error("--train needs --strategy rl")
    assets = tuple(a.strip().upper() for a in args.assets.split(",") if a.strip())
    rates = []
    mode = "train" if args.train else "eval"
    for i in range(args.repeat):
        seed = args.seed + i
        with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
            report, segments = asyncio.run(run_once(
                args.strategy, args.train, args.windows, seed, args.every, assets,
                None if args.no_logs else tmp, not args.in_process_sim,
            ))
        where = "in-process sim" if args.in_process_sim else "sim in a child process"
        print(f"{args.strategy} ({mode}) seed {seed}, {args.windows} windows, {where}:")
        print_run(report, segments)
        rates.append(report["decisions_per_second"])
    if args.repeat > 1:
        print(f"median of {args.repeat} runs: {statistics.median(rates):,.0f} decisions/s "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
