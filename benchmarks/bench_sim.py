"""Simulator throughput at full speed: market seconds and frames per wall second, in-process.

    python benchmarks/bench_sim.py --seconds 3600 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.frames import ASSETS
from sim.faults import FaultSpec
from sim.source import SimSource


def bench(seed: int, seconds: int, assets: tuple[str, ...] = ASSETS, faults: FaultSpec | None = None) -> dict:
    """Consume `seconds` of simulated market from SimSource and time it."""
    t_build = time.perf_counter()
    source = SimSource(seed, assets, faults)
    t0 = time.perf_counter()
    end = source.start_time + seconds
    feeds: Counter[str] = Counter()
    n = 0
    for frame in source.iter_frames():
        if frame.t >= end:
            break
        feeds[frame.feed] += 1
        n += 1
    wall = time.perf_counter() - t0
    return {
        "setup_s": t0 - t_build,
        "wall_s": wall,
        "frames": n,
        "market_seconds_per_s": seconds / wall,
        "frames_per_s": n / wall,
        "frames_per_market_second": n / seconds,
        "feeds": dict(feeds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3600, help="simulated seconds to consume")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="", help="e.g. garbage=0.001")
    args = parser.parse_args(argv)
    r = bench(args.seed, args.seconds, faults=FaultSpec.parse(args.faults))
    print(f"setup {r['setup_s'] * 1000:.0f} ms; {args.seconds} market seconds in {r['wall_s']:.2f} s")
    print(f"{r['market_seconds_per_s']:.0f} market seconds per wall second")
    print(f"{r['frames_per_s']:.0f} frames per wall second ({r['frames_per_market_second']:.1f} per market second)")
    for feed, count in sorted(r["feeds"].items()):
        print(f"  {feed:<24}{count / args.seconds:>7.2f} per market second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
