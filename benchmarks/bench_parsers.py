"""Parser throughput on one core: Binance aggTrade frames through parser + FuturesState, Polymarket
price_change frames through parser + PolymarketBook, and both through MarketData.handle.

Usage: python benchmarks/bench_parsers.py [--frames N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.frames import FEED_FUTURES_MARKET, FEED_POLYMARKET, Frame
from streamers.binance import handle_futures
from streamers.futures_state import FuturesState
from streamers.market_data import MarketData
from streamers.polymarket import LevelChange, PolymarketBook
from streamers.polymarket import handle as handle_polymarket

T0 = 1_767_225_600.0
UP = "65818619657568813474341868652308942079804919287380422192892211131408793125422"
DOWN = "52114319501245915516055106046884209969926127482827954674443846427813813222426"


def agg_trade_frames(n: int, rng: random.Random) -> list[tuple[float, str]]:
    out = []
    price = 87_000.0
    for i in range(n):
        price += rng.choice((-0.1, 0.0, 0.1))
        t = T0 + i * 0.01
        data = {"e": "aggTrade", "E": int(t * 1000), "a": 1_108_933_367 + i, "s": "BTCUSDT", "p": f"{price:.2f}",
                "q": f"{rng.expovariate(100.0):.3f}", "f": 1_987_119_093 + i, "l": 1_987_119_093 + i,
                "T": int(t * 1000) - 5, "m": rng.random() < 0.5}
        out.append((t, orjson.dumps({"stream": "btcusdt@aggTrade", "data": data}).decode()))
    return out


def price_change_frames(n: int, rng: random.Random) -> list[tuple[float, str]]:
    out = []
    for i in range(n):
        t = T0 + i * 0.01
        bid = rng.randint(40, 50) / 100
        changes = [
            {"asset_id": UP, "price": f"{bid:.2f}", "size": str(rng.choice((0, 10, 25, 120))), "side": "BUY",
             "hash": "56621a12", "best_bid": "0.5", "best_ask": "0.51"},
            {"asset_id": DOWN, "price": f"{1 - bid:.2f}", "size": str(rng.choice((0, 10, 25, 120))), "side": "SELL",
             "hash": "18957", "best_bid": "0.49", "best_ask": "0.5"},
        ]
        msg = {"event_type": "price_change", "market": "0xbd31", "timestamp": str(int(t * 1000)),
               "price_changes": changes}
        out.append((t, orjson.dumps(msg).decode()))
    return out


def rate(label: str, n: int, run: Callable[[], None]) -> None:
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    print(f"{label:<58} {n / elapsed:>12,.0f} msg/s  ({elapsed * 1e6 / n:.2f} us/msg)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=200_000)
    n = parser.parse_args().frames
    rng = random.Random(7)
    trades = agg_trade_frames(n, rng)
    changes = price_change_frames(n, rng)

    def futures() -> None:
        state = FuturesState("BTC")
        for t, raw in trades:
            for u in handle_futures(raw):
                state.apply(u, t)

    def books() -> None:
        up, down = PolymarketBook(UP), PolymarketBook(DOWN)
        by_token = {UP: up, DOWN: down}
        for t, raw in changes:
            for u in handle_polymarket(raw):
                if type(u) is LevelChange:
                    book = by_token[u.asset_id]
                    book.set_level(u.side, u.price, u.size, t)
                    book.check_top(u.best_bid, u.best_ask)

    trade_frames = [Frame(t, FEED_FUTURES_MARKET, raw) for t, raw in trades]
    change_frames = [Frame(t, FEED_POLYMARKET, raw) for t, raw in changes]

    def market_data(frames: list[Frame]) -> Callable[[], None]:
        def run() -> None:
            md = MarketData()
            for f in frames:
                md.handle(f)

        return run

    print(f"{n:,} frames each, one core (Python {sys.version.split()[0]})")
    rate("Binance aggTrade: parser + FuturesState.apply", n, futures)
    rate("Polymarket price_change (2 levels): parser + book", n, books)
    rate("Binance aggTrade via MarketData.handle", n, market_data(trade_frames))
    rate("Polymarket price_change via MarketData.handle", n, market_data(change_frames))


if __name__ == "__main__":
    main()
