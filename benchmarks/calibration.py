"""Compare the simulator's statistics with the real ones of DESIGN.md's calibration table.

    python benchmarks/calibration.py --windows 20 --seed 1

The Polymarket figures come from the sim's own market-channel messages (the same texts a client
receives), rebuilt into a 1-second UP top of book; the return figures from the RTDS chainlink ticks
at window starts, plus a long index-only run (--return-windows) since kurtosis needs many windows.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.market import SimMarket
from sim.model import ASSET_PARAMS, WINDOW, AssetPath, ModelParams
from streamers.frames import ASSETS, FEED_POLYMARKET, FEED_RTDS

BUCKETS = ((600, 900), (300, 600), (60, 300), (0, 60))  # seconds left, [lo, hi)

REAL = {
    "spread_q10": 0.01,
    "spread_q50": 0.01,
    "spread_q90": 0.02,
    "spread_q99": 0.04,
    "mid_change_share": 0.47,
    "mid_change_q50": 0.01,
    "mid_change_q90": 0.03,
    "mid_change_q99": 0.09,
    "abs_dev_600_900": 0.14,
    "abs_dev_300_600": 0.26,
    "abs_dev_60_300": 0.37,
    "abs_dev_0_60": 0.46,
    "brier_600_900": 0.215,
    "brier_300_600": 0.166,
    "brier_60_300": 0.079,
    "brier_0_60": 0.019,
    "ret_std_BTC": 0.0022,
    "ret_std_ETH": 0.0029,
    "ret_std_SOL": 0.0033,
    "ret_std_XRP": 0.0028,
    "excess_kurtosis": 12.5,
    "up_share": 0.495,
}


@dataclass(slots=True)
class _Market:
    asset: str
    up: str
    start: int
    end: int
    bid: float | None = None
    ask: float | None = None
    outcome: int | None = None  # 1 Up, 0 Down
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # (second, bid, ask)


def _top(levels: list[dict], best: str) -> float | None:
    prices = [float(lv["price"]) for lv in levels]
    if not prices:
        return None
    return max(prices) if best == "max" else min(prices)


def measure(
    seed: int, windows: int, assets: tuple[str, ...] = ASSETS, model: ModelParams | None = None
) -> dict[str, float]:
    """Run the sim for `windows` 15-minute windows and compute the Polymarket and return statistics."""
    sim = SimMarket(seed, assets, model=model)
    end_time = sim.start_time + windows * WINDOW + 5
    markets: dict[str, _Market] = {}  # condition id -> market
    by_up: dict[str, _Market] = {}
    window_prices: dict[str, dict[int, float]] = {a: {} for a in assets}
    rtds_asset = {ASSET_PARAMS[a].rtds_symbol: a for a in assets}
    next_sample = sim.start_time
    for ev in sim.events():
        if ev.t >= end_time:
            break
        while next_sample <= ev.t:  # the top as it stood at each whole second
            for mk in markets.values():
                if mk.start <= next_sample < mk.end and mk.bid is not None and mk.ask is not None:
                    mk.samples.append((next_sample, mk.bid, mk.ask))
            next_sample += 1
        if ev.feed == FEED_RTDS:
            payload = orjson.loads(ev.msg)["payload"]
            sec = payload["timestamp"] // 1000
            if sec % WINDOW == 0:
                window_prices[rtds_asset[payload["symbol"]]][sec] = float(payload["value"])
            continue
        if ev.feed != FEED_POLYMARKET:
            continue
        msg = orjson.loads(ev.msg)
        kind = msg.get("event_type")
        if kind == "new_market":
            slug = msg["slug"]
            start = int(slug.rsplit("-", 1)[1])
            mk = _Market(slug.split("-", 1)[0].upper(), msg["assets_ids"][0], start, start + WINDOW)
            markets[msg["market"]] = mk
            by_up[mk.up] = mk
        elif kind == "book" and msg["asset_id"] in by_up:
            mk = by_up[msg["asset_id"]]
            mk.bid, mk.ask = _top(msg["bids"], "max"), _top(msg["asks"], "min")
        elif kind == "price_change":
            for ch in msg["price_changes"]:
                mk = by_up.get(ch["asset_id"])
                if mk is not None:
                    mk.bid, mk.ask = float(ch["best_bid"]), float(ch["best_ask"])
        elif kind == "market_resolved":
            mk = markets[msg["market"]]
            mk.outcome = 1 if msg["winning_outcome"] == "Up" else 0
    return _statistics([m for m in markets.values() if m.outcome is not None], window_prices)


def _statistics(markets: list[_Market], window_prices: dict[str, dict[int, float]]) -> dict[str, float]:
    spreads, changes, steps = [], [], 0
    dev: dict[tuple[int, int], list[float]] = {b: [] for b in BUCKETS}
    brier: dict[tuple[int, int], list[float]] = {b: [] for b in BUCKETS}
    for mk in markets:
        prev_mid = None
        prev_sec = None
        for sec, bid, ask in mk.samples:
            mid = (bid + ask) / 2.0
            spreads.append(ask - bid)
            if prev_mid is not None and sec == prev_sec + 1:
                steps += 1
                if abs(mid - prev_mid) > 1e-9:
                    changes.append(abs(mid - prev_mid))
            prev_mid, prev_sec = mid, sec
            left = mk.end - sec
            for b in BUCKETS:
                if b[0] < left <= b[1]:
                    dev[b].append(abs(mid - 0.5))
                    brier[b].append((mid - mk.outcome) ** 2)
    out: dict[str, float] = {}
    if spreads:
        q = np.quantile(spreads, [0.1, 0.5, 0.9, 0.99])
        out.update(spread_q10=q[0], spread_q50=q[1], spread_q90=q[2], spread_q99=q[3])
    if steps:
        out["mid_change_share"] = len(changes) / steps
    if changes:
        q = np.quantile(changes, [0.5, 0.9, 0.99])
        out.update(mid_change_q50=q[0], mid_change_q90=q[1], mid_change_q99=q[2])
    for lo, hi in BUCKETS:
        if dev[(lo, hi)]:
            out[f"abs_dev_{lo}_{hi}"] = float(np.mean(dev[(lo, hi)]))
            out[f"brier_{lo}_{hi}"] = float(np.mean(brier[(lo, hi)]))
    ups = [mk.outcome for mk in markets]
    if ups:
        out["up_share_run"] = float(np.mean(ups))
    for asset, prices in window_prices.items():
        secs = sorted(prices)
        rets = [math.log(prices[b] / prices[a]) for a, b in itertools.pairwise(secs) if b - a == WINDOW]
        if len(rets) > 1:
            out[f"ret_std_run_{asset}"] = float(np.std(rets))
    return {k: float(v) for k, v in out.items()}


def return_statistics(seed: int, windows: int, assets: tuple[str, ...] = ASSETS) -> dict[str, float]:
    """15-minute log-return std per asset, pooled excess kurtosis and Up share from the index alone."""
    out: dict[str, float] = {}
    pooled, ups = [], []
    for k, asset in enumerate(assets):
        rng = np.random.default_rng([seed, 1000 + k])
        path = AssetPath(ASSET_PARAMS[asset], ModelParams(), rng, 0, keep_s=windows * WINDOW + WINDOW)
        path.ensure(windows * WINDOW)
        prices = np.asarray(path.prices[: windows * WINDOW + 1 : WINDOW])
        rets = np.diff(np.log(prices))
        out[f"ret_std_{asset}"] = float(np.std(rets))
        pooled.append(rets / np.std(rets))
        ups.append(rets >= 0.0)
    z = np.concatenate(pooled)
    out["excess_kurtosis"] = float(np.mean(z**4) / np.mean(z**2) ** 2 - 3.0)
    out["up_share"] = float(np.mean(np.concatenate(ups)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=20, help="15-minute windows of the full simulation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--return-windows", type=int, default=3000, help="windows of the index-only run")
    args = parser.parse_args(argv)
    if args.windows < 1 or args.return_windows < 10:
        parser.error("--windows must be at least 1 and --return-windows at least 10")
    t0 = time.perf_counter()
    stats = measure(args.seed, args.windows)
    t1 = time.perf_counter()
    stats.update(return_statistics(args.seed, args.return_windows))
    t2 = time.perf_counter()
    print(f"seed {args.seed}: {args.windows} windows x {len(ASSETS)} assets in {t1 - t0:.1f} s; "
          f"index-only returns over {args.return_windows} windows in {t2 - t1:.1f} s")  # fmt: skip
    print(f"{'statistic':<22}{'sim':>10}{'real':>10}{'ratio':>8}")
    for key, real in REAL.items():
        sim = stats.get(key)
        if sim is None:
            print(f"{key:<22}{'-':>10}{real:>10.4g}{'-':>8}")
            continue
        print(f"{key:<22}{sim:>10.4g}{real:>10.4g}{sim / real:>8.2f}")
    for key in sorted(k for k in stats if k not in REAL):
        print(f"{key:<22}{stats[key]:>10.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
