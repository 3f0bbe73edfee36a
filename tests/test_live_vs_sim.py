"""End to end on loopback: the real live clients against the simulator's servers, connections killed mid-stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from sim.servers import SimServers
from streamers.endpoints import Endpoints
from streamers.frames import FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_POLYMARKET, FEED_RTDS, FEED_SPOT
from streamers.live import LiveSettings, LiveSource, SocketSettings
from streamers.market_data import MarketData

ASSETS = ("BTC", "ETH")
SPEED = 120.0
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


def test_live_clients_recover_from_killed_connections_and_rebuild_the_simulators_books():
    servers = SimServers(seed=11, speed=SPEED, assets=ASSETS)
    md = MarketData(ASSETS)
    feeds_seen: dict[str, int] = {}

    async def main() -> None:
        endpoints = await servers.start()
        source = LiveSource(
            servers.clock, ASSETS, Endpoints.from_env(endpoints), record_reconnects=False, settings=QUICK_RECONNECTS
        )

        async def consume() -> None:
            async for frame in source.frames():
                md.handle(frame)
                feeds_seen[frame.feed] = feeds_seen.get(frame.feed, 0) + 1

        consumer = asyncio.create_task(consume())
        try:
            current = [m for m in servers.sim.markets_at(servers.clock.now()) if m.asset in ASSETS]
            tokens = [t for m in current for t in (m.token_up, m.token_down)]

            def books_ready() -> bool:
                return all((b := md.book(t)) is not None and not b.needs_resync for t in tokens)

            await wait_for(books_ready, 10, "the first book snapshots")
            await wait_for(lambda: all(md.chainlink_price(a) for a in ASSETS), 10, "Chainlink prices")

            # every websocket dies mid-stream; the clients must come back with their subscriptions
            assert servers.drop_connections() >= 5
            seen_at_kill = dict(feeds_seen)
            await asyncio.sleep(0.3)
            assert servers.drop_connections("clob_ws") == 1  # and the market channel once more
            await wait_for(
                lambda: all(
                    feeds_seen.get(feed, 0) > seen_at_kill.get(feed, 0) + 20
                    for feed in (FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_SPOT, FEED_POLYMARKET, FEED_RTDS)
                ),
                10,
                "every feed to flow again after the reconnects",
            )
            await asyncio.sleep(1.0)

            await servers.pause()
            # once the client has read everything it was sent, its books are the simulator's books
            await wait_for(
                lambda: all((md.book(t).bids, md.book(t).asks) == sim_book(servers, t) for t in tokens),
                5,
                "the client's books to equal the simulator's",
            )
            for t in tokens:
                assert md.book(t).bids and md.book(t).asks
            assert sum(source.reconnects.values()) >= 6
            assert source.reconnects[FEED_POLYMARKET] >= 2
        finally:
            servers.resume()
            await source.close()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await servers.stop()

    asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert md.rejected == 0, md.last_reject
    assert md.book_mismatches == 0
    for asset in ASSETS:
        assert md.futures(asset).last_price is not None
        assert md.spot_price(asset) is not None
    assert {m.asset for m in md.markets.values()} == set(ASSETS)
