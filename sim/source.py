"""`SimSource`: the simulator in-process, as a virtual-clock Source (no sockets, as fast as possible)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

from sim.faults import FaultSpec
from sim.market import SimMarket
from streamers.frames import ASSETS, FEED_DISCOVERY, FEED_FUTURES_MARKET, Frame

WARMUP_KLINES = 120  # 1m bars of futures history before start_time (the features need 61)
YIELD_EVERY = 512  # frames between cooperative yields to the event loop


class SimSource:
    """Frames of `SimMarket(seed)`: first each asset's klines warm-up frame and the discovery list, then
    the venue messages with a discovery frame wherever the market list changes."""

    virtual = True

    def __init__(self, seed: int, assets: Sequence[str] = ASSETS, faults: FaultSpec | None = None) -> None:
        self.market = SimMarket(seed, assets, faults)
        self._closed = False

    @property
    def start_time(self) -> int:
        return self.market.start_time

    def iter_frames(self) -> Iterator[Frame]:
        """The same frames as `frames()`, synchronously (benchmarks and tests)."""
        market = self.market
        t0 = float(market.start_time)
        for asset in market.assets:
            symbol = f"{asset.lower()}usdt"
            body = market.klines_rest_body(symbol, None, WARMUP_KLINES)
            yield Frame(t0, FEED_FUTURES_MARKET, '{"stream":"' + symbol + '@klines_rest","data":' + body + "}")
        first = market.discovery_json(t0)
        yield Frame(t0, FEED_DISCOVERY, first)
        for ev in market.timeline():
            if ev.feed == FEED_DISCOVERY and ev.msg == first:
                first = ""  # the list at t0 was already sent
                continue
            yield Frame(ev.t, ev.feed, ev.msg)

    async def frames(self) -> AsyncIterator[Frame]:
        for n, frame in enumerate(self.iter_frames(), 1):
            if self._closed:
                return
            yield frame
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let other tasks (dashboard, signals) run between batches

    async def close(self) -> None:
        self._closed = True
