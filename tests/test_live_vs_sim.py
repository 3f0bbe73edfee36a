"""End to end on loopback: the real live clients against the simulator's servers, connections killed mid-stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from core.endpoints import Endpoints
from sim.faults import FaultSpec
from sim.servers import SimServers
from streamers.frames import FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_POLYMARKET, FEED_RTDS, FEED_SPOT
from streamers.live import LiveSettings, LiveSource, SocketSettings
from streamers.market_data import MarketData

ASSETS = ("BTC", "ETH")
SPEED = 120.0
SOCKET_FEEDS = (FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_SPOT, FEED_POLYMARKET, FEED_RTDS)
# reconnect quickly: at 120x a one-second pause is two minutes of market time
QUICK_RECONNECTS = LiveSettings(socket=SocketSettings(reconnect_pause=0.05, backoff_initial=0.05, backoff_max=0.5))


def sim_book(servers: SimServers, token_id: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The simulator's own book for a token, best first, as (price, size) floats."""
    body = json.loads(servers.sim.book_json(token_id))
    bids = sorted(((float(x["price"]), float(x["size"])) for x in body["bids"]), reverse=True)
    asks = sorted((float(x["price"]), float(x["size"])) for x in body["asks"])
    return bids, asks


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class LiveRun:
    """A LiveSource pointed at SimServers, its frames applied to a MarketData as the engine would."""

    def __init__(self, servers: SimServers) -> None:
        self.servers = servers
        self.md = MarketData(ASSETS)
        self.feeds_seen: dict[str, int] = dict.fromkeys(SOCKET_FEEDS, 0)
        self.source: LiveSource | None = None
        self.tokens: list[str] = []

    def books_ready(self) -> bool:
        return all((b := self.md.book(t)) is not None and not b.needs_resync for t in self.tokens)

    def books_equal_the_simulators(self) -> bool:
        return all((self.md.book(t).bids, self.md.book(t).asks) == sim_book(self.servers, t) for t in self.tokens)

    async def wait_for_flow(self, frames_per_feed: int) -> None:
        """Wait until every socket feed delivered `frames_per_feed` more frames than now."""
        before = dict(self.feeds_seen)
        await wait_for(
            lambda: all(self.feeds_seen[f] >= before[f] + frames_per_feed for f in SOCKET_FEEDS),
            10,
            "every feed to flow",
        )

    def run(self, scenario: Callable[[LiveRun], Awaitable[None]]) -> None:
        async def main() -> None:
            endpoints = await self.servers.start()
            self.source = LiveSource(
                self.servers.clock, ASSETS, Endpoints.from_env(endpoints), record_reconnects=False,
                settings=QUICK_RECONNECTS,
            )

            async def consume() -> None:
                async for frame in self.source.frames():
                    self.md.handle(frame)
                    if frame.feed in self.feeds_seen:
                        self.feeds_seen[frame.feed] += 1

            consumer = asyncio.create_task(consume())
            try:
                now = self.servers.clock.now()
                current = [m for m in self.servers.sim.markets_at(now) if m.start <= now < m.end]
                self.tokens = [t for m in current for t in (m.token_up, m.token_down)]
                await wait_for(self.books_ready, 10, "the first book snapshots")
                await scenario(self)
                await self.servers.pause()
                # once the client has read everything it was sent, its books are the simulator's books
                await wait_for(self.books_equal_the_simulators, 5, "the client's books to equal the simulator's")
            finally:
                self.servers.resume()
                await self.source.close()
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
                await self.servers.stop()

        asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_live_clients_recover_from_killed_connections_and_rebuild_the_simulators_books():
    async def scenario(run: LiveRun) -> None:
        await wait_for(lambda: all(run.md.chainlink_price(a) for a in ASSETS), 10, "Chainlink prices")
        # every websocket dies mid-stream; the clients must come back with their subscriptions
        assert run.servers.drop_connections() >= 5
        await asyncio.sleep(0.3)
        assert run.servers.drop_connections("clob_ws") == 1  # and the market channel once more
        await run.wait_for_flow(20)
        await asyncio.sleep(1.0)

    run = LiveRun(SimServers(seed=11, speed=SPEED, assets=ASSETS))
    run.run(scenario)
    md = run.md
    assert sum(run.source.reconnects.values()) >= 6
    assert run.source.reconnects[FEED_POLYMARKET] >= 2
    assert md.rejected == 0, md.last_reject
    assert md.book_mismatches == 0
    for token in run.tokens:
        assert md.book(token).bids and md.book(token).asks
    for asset in ASSETS:
        assert md.futures(asset).last_price is not None
        assert md.spot_price(asset) is not None
    assert {m.asset for m in md.markets.values()} == set(ASSETS)


def test_live_clients_ride_out_random_drops_stalls_and_garbage_with_books_intact():
    async def scenario(run: LiveRun) -> None:
        await wait_for(lambda: run.servers.stats["clob_ws"].dropped >= 2, 10, "drop faults on the market channel")
        await run.wait_for_flow(20)

    servers = SimServers(seed=12, speed=SPEED, assets=ASSETS, faults=FaultSpec.parse("drop=0.003,garbage=0.01,stall=0.002"))
    run = LiveRun(servers)
    run.run(scenario)
    # malformed frames are counted and skipped by the parsers, never applied to a book
    assert run.md.rejected > 0
    assert run.source.reconnects[FEED_POLYMARKET] >= 2
    assert sum(stats.dropped for stats in servers.stats.values()) >= 2
    assert servers.stalls > 0


def test_live_clients_follow_the_window_rollover_and_see_the_simulators_resolution():
    first_window: list = []

    async def scenario(run: LiveRun) -> None:
        servers = run.servers
        first_window.extend(m for m in servers.sim.markets_at(servers.clock.now()) if m.start == servers.sim.start_time)
        # past the first window's end and its resolution, well into the second window
        await wait_for(lambda: servers.clock.now() > servers.sim.start_time + 900 + 60, 20, "the second window")
        now = servers.clock.now()
        second = [m for m in servers.sim.markets_at(now) if m.start <= now < m.end]
        assert {m.start for m in second} == {servers.sim.start_time + 900}
        run.tokens = [t for m in second for t in (m.token_up, m.token_down)]
        await wait_for(run.books_ready, 10, "snapshots of the second window's books")

    servers = SimServers(seed=13, speed=300.0, assets=ASSETS)  # 16 minutes of market in about 3 s
    run = LiveRun(servers)
    run.run(scenario)
    assert {m.asset for m in first_window} == set(ASSETS)
    for market in first_window:
        slug = f"{market.asset.lower()}-updown-15m-{market.start}"
        gamma = json.loads(servers.sim.gamma_event_json(slug, servers.clock.now()))[0]["markets"][0]
        outcome_prices = json.loads(gamma["outcomePrices"])
        assert outcome_prices in (["1", "0"], ["0", "1"])  # settled on the venue
        assert run.md.resolved_outcome(market.condition_id) == ("Up" if outcome_prices == ["1", "0"] else "Down")
