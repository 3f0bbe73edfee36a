"""Replay of a recording library at `--speed max` beside the simulator it was recorded from: decisions per second.

Records `--windows` simulator windows into hourly parts (as `--record 'DIR/%Y%m%d-%H.jsonl.gz'` would), then runs
the same strategy alternately on the simulator and on the replay of those parts, `--repeat` times each, back to
back in this process, so both see the same machine load. Training (`--train`) starts a fresh agent with the same
seed for every run.

    python benchmarks/bench_replay.py --strategy rl --train --windows 8 --repeat 2
    python benchmarks/bench_replay.py --strategy fair_value --windows 8 --assets BTC,ETH,SOL,XRP

Per run: windows, decisions, wall seconds, decisions per wall second (the report's figure), and the CPU seconds
of this process and of its children (the simulator runs in a child process; the replay has none). The
replay's figure includes its scan of the library (read once before the first frame).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.learning import run_engine
from engine.engine import EngineConfig
from engine.sources import virtual_source
from sim.source import SimSource
from strategies import STRATEGY_NAMES, create_strategy
from streamers.frames import ASSETS, WINDOW_SECONDS
from streamers.market_data import MarketData
from streamers.recording import RotatingRecorder


def record_library(folder: Path, seed: int, assets: tuple[str, ...], windows: int) -> list[str]:
    """The simulator's frames for `windows` windows (and 30 s), written as the engine records them, in hourly parts."""
    sim = SimSource(seed, assets, background=False)
    md = MarketData(assets)
    stop = sim.start_time + windows * WINDOW_SECONDS + 30
    with RotatingRecorder(str(folder / "%Y%m%d-%H.jsonl.gz"), {"source": "sim", "seed": seed}, md.restate) as rec:
        for frame in sim.iter_frames():
            if frame.t > stop:
                break
            rec.write(frame)
            md.handle(frame)
    return rec.paths


def cpu_seconds() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def one_run(kind: str, args: argparse.Namespace, assets: tuple[str, ...], library: str) -> dict:
    strategy = create_strategy(args.strategy, seed=args.seed)
    if args.train:
        strategy.train()
    source = virtual_source(kind, seed=args.seed, assets=assets, recordings=library, warn=lambda _: None)
    cfg = EngineConfig(size=100.0, assets=assets, train=args.train, log_dir=None, max_windows=args.windows,
                       strategy_name=args.strategy)

    cpu0, child0 = cpu_seconds()
    start = time.perf_counter()
    report = asyncio.run(run_engine(strategy, cfg, source))
    wall = time.perf_counter() - start
    cpu1, child1 = cpu_seconds()
    return {"source": kind, "windows": report["windows"], "decisions": report["decisions"], "wall_s": wall,
            "decisions_per_s": report["decisions"] / wall, "cpu_s": cpu1 - cpu0, "child_cpu_s": child1 - child0,
            "trades": report["trades"], "pnl": report["pnl"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="rl")
    p.add_argument("--train", action="store_true", help="train the agent during every run (rl)")
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--assets", default="BTC,ETH")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also write the runs as JSON")
    args = p.parse_args(argv)
    assets = tuple(a for a in ASSETS if a in args.assets.upper().split(","))
    with tempfile.TemporaryDirectory(prefix="bench_replay_") as tmp:
        parts = record_library(Path(tmp), args.seed, assets, args.windows)
        print(f"recorded {args.windows} windows of {','.join(assets)} (seed {args.seed}) into {len(parts)} parts; "
              f"{args.strategy}{' --train' if args.train else ''}, {args.repeat} run(s) each, alternating")
        runs = []
        for _ in range(args.repeat):
            for kind in ("sim", "replay"):
                run = one_run(kind, args, assets, tmp)
                runs.append(run)
                print(f"  {kind:<7} {run['windows']:>3} windows {run['decisions']:>8,} decisions {run['wall_s']:>7.1f} s "
                      f"{run['decisions_per_s']:>8,.0f} decisions/s  CPU {run['cpu_s']:.1f} s + child "
                      f"{run['child_cpu_s']:.1f} s  (PnL {run['pnl']:+,.0f}, {run['trades']} trades)", flush=True)
    for kind in ("sim", "replay"):
        rates = [r["decisions_per_s"] for r in runs if r["source"] == kind]
        print(f"{kind}: median {statistics.median(rates):,.0f} decisions/s over {len(rates)} run(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
