"""How much does the simulated maker give away? `fair_value` beside an oracle that knows the true odds.

    python -m benchmarks.maker_edge --seeds 7777,7778 --windows 10 [--sim-profile lagged] [--latency-ms 300]

Both strategies run through the engine with book fills, fees and the paper latency, on the same
held-out seeds. `fair_value` is the rule strategy as users run it: a digital from the Chainlink index
with its realized volatility. `oracle` follows the same rules (margin, fee, exits) but reads the true
UP probability from inside the simulator: the digital of the current index with the model's own
diffusion, seasonality and jumps. On the realistic profile that is the maker's own fair value before
its quoting noise, tick rounding and requote hysteresis, so the oracle's PnL is what those give away to
a perfectly informed taker; on `lagged` it also collects the maker's seconds of lag.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.learning import run_engine
from core.frames import ASSETS
from engine.engine import EngineConfig
from sim.market import SimMarket
from sim.profiles import ProfileError, SimProfile, load_profile
from sim.source import SimSource
from strategies.base import MarketState
from strategies.baselines import FairValueStrategy


class OracleFairValue(FairValueStrategy):
    """FairValueStrategy whose fair value is the simulator's true UP probability (a benchmark device:
    it reads the simulator's internals, which no real strategy can)."""

    name = "oracle"

    def __init__(self, sim: SimMarket, margin: float = 0.03) -> None:
        super().__init__(margin=margin)
        self.sim = sim

    def fair_up(self, state: MarketState) -> float | None:
        sim = self.sim
        for mk in sim._markets.values():
            meta = mk.meta
            now = meta.end - state.seconds_left
            # the simulator runs in lockstep with the engine: its last message is within a tick of `now`
            # (the previous and the next window of the asset are listed too, 900 s away)
            if meta.asset != state.asset or mk.strike is None or abs(now - sim.now) > 1.0:
                continue
            s = min(int(now), sim._sec)  # never a second the simulator has not published yet
            path = sim._assets[meta.asset].path
            return path.up_probability(s, mk.strike, meta.end - s, sim._season.remaining_from(s - meta.start),
                                       1.0, True)
        return None


async def _run(name: str, seed: int, windows: int, profile: SimProfile, latency_ms: float, log_dir: str) -> dict:
    source = SimSource(seed, ASSETS, background=False, profile=profile)
    strategy = OracleFairValue(source.market) if name == "oracle" else FairValueStrategy()
    cfg = EngineConfig(size=100.0, max_windows=windows, log_dir=log_dir, run_id=f"{name}_{seed}", seed=seed,
                       source_name="sim", strategy_name=name, latency_ms=latency_ms)
    return await run_engine(strategy, cfg, source)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="7777,7778", help="held-out simulator seeds (comma list)")
    p.add_argument("--windows", type=int, default=10, help="15-minute windows per seed (four assets each)")
    p.add_argument("--sim-profile", default=None, help="realistic (default), lagged, or a JSON profile")
    p.add_argument("--latency-ms", type=float, default=300.0, help="paper fill latency (default 300, as run.py)")
    args = p.parse_args(argv)
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        profile = load_profile(args.sim_profile)
    except (ValueError, ProfileError) as exc:
        print(f"maker_edge: {exc}", file=sys.stderr)
        return 2
    logs = tempfile.mkdtemp(prefix="maker_edge_")
    print(f"profile {profile.name}, latency {args.latency_ms:g} ms, book fills, $50 positions, seeds {seeds} x "
          f"{args.windows} windows x {len(ASSETS)} assets (logs in {logs})")
    for name in ("fair_value", "oracle"):
        pnl = fees = 0.0
        trades = asset_windows = 0
        for seed in seeds:
            report = asyncio.run(_run(name, seed, args.windows, profile, args.latency_ms, logs))
            pnl, fees, trades = pnl + report["pnl"], fees + report["fees"], trades + report["trades"]
            asset_windows += report["windows"] * len(ASSETS)
            print(f"  {name:<10} seed {seed}: PnL ${report['pnl']:+,.2f}, {report['trades']} trades")
        per = pnl / asset_windows if asset_windows else float("nan")
        print(f"{name:<10} ${per:+,.2f} per asset-window (total ${pnl:+,.2f} after ${fees:,.2f} fees, {trades} "
              f"trades, {asset_windows} asset-windows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
