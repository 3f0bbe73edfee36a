"""Live transports and LiveSource against real loopback websocket and HTTP servers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from core.endpoints import Endpoints
from engine.clock import RealClock
from streamers.discovery import DiscoverySettings, RetryPolicy, VenueUnreachable, market_slug, window_start
from streamers.frames import (
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SPOT,
    Frame,
)
from streamers.live import (
    BinanceStreamClient,
    LiveSettings,
    LiveSource,
    LiveStats,
    PolymarketMarketClient,
    RtdsClient,
    SocketContext,
    SocketSettings,
)
from tests.test_discovery import gamma_event, gamma_market

pytestmark = pytest.mark.timeout(30)

MARKET_STREAMS = {"aggTrade", "kline_1m", "markPrice@1s", "forceOrder"}  # what /market serves
PUBLIC_STREAMS = {"depth5@100ms", "bookTicker"}  # what /public serves
KLINES = [[1767225540000, "87900.1", "87950.0", "87880.2", "87912.5", "12.3", 1767225599999,
           "1081234.5", 812, "6.1", "536000.1", "0"]]

FAST = LiveSettings(
    socket=SocketSettings(open_timeout=2.0, close_timeout=0.5, reconnect_pause=0.05, backoff_initial=0.05),
    stream_silence=0.5,
    stream_silence_wall=0.5,
    watchdog_every=0.05,
    polymarket_ping_every=0.1,
    rtds_ping_every=0.1,
    rest_retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02, timeout=2.0),
    discovery=DiscoverySettings(poll_interval=0.2, min_wall_pause=0.05,
                                retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02, timeout=2.0)),
    check_timeout=2.0,
)


def dead_url(scheme: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"{scheme}://127.0.0.1:{s.getsockname()[1]}"


class FakeVenues:
    """Every venue on loopback: one websocket server (routed by path prefix) and one HTTP server.

    Binance sockets behave like the routed 2026 venue: a stream requested on the wrong path, or
    listed in `silent`, connects fine and then never sends anything.
    """

    def __init__(self, silent: tuple[str, ...] = ()) -> None:
        self.silent = set(silent)
        self.paths: list[str] = []  # websocket request paths, in connection order
        self.received: dict[str, list[list[str]]] = defaultdict(list)  # venue -> per connection messages
        self.open: dict[str, ServerConnection] = {}
        self.klines_queries: list[dict[str, str]] = []
        self.gamma_events: dict[str, dict] = {}
        app = web.Application()
        app.router.add_get("/gamma/events", self.handle_events)
        app.router.add_get("/gamma/markets", self.handle_markets)
        app.router.add_get("/rest/fapi/v1/klines", self.handle_klines)
        self.http = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> FakeVenues:
        self.ws_server = await serve(self.handle_ws, "127.0.0.1", 0)
        await self.http.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ws_server.close()
        await self.ws_server.wait_closed()
        await self.http.close()

    def endpoints(self, **overrides: str) -> Endpoints:
        ws = f"ws://127.0.0.1:{self.ws_server.sockets[0].getsockname()[1]}"
        http = str(self.http.make_url("")).rstrip("/")
        values = {"gamma": f"{http}/gamma", "clob": f"{http}/clob", "clob_ws": f"{ws}/clob", "rtds_ws": f"{ws}/rtds",
                  "binance_futures_ws": f"{ws}/fut", "binance_futures_rest": f"{http}/rest",
                  "binance_spot_ws": f"{ws}/spot"}
        values.update(overrides)
        return Endpoints(**values)

    def add_market(self, asset: str, start: int, token_up: str, token_down: str) -> None:
        slug = market_slug(asset, start)
        market = gamma_market(slug=slug, clobTokenIds=json.dumps([token_up, token_down]))
        self.gamma_events[slug] = gamma_event(market)

    async def handle_events(self, request: web.Request) -> web.Response:
        event = self.gamma_events.get(request.query.get("slug", ""))
        return web.json_response([] if event is None else [event])

    async def handle_markets(self, request: web.Request) -> web.Response:
        return web.json_response([])  # this Gamma lists its markets on /events only

    async def handle_klines(self, request: web.Request) -> web.Response:
        self.klines_queries.append(dict(request.query))
        return web.json_response(KLINES)

    async def handle_ws(self, ws: ServerConnection) -> None:
        path = ws.request.path
        self.paths.append(path)
        route = urlsplit(path).path
        venue = {"/fut/market/stream": "market", "/fut/public/stream": "public", "/spot/stream": "spot",
                 "/clob/ws/market": "clob", "/rtds": "rtds"}[route]
        messages: list[str] = []
        self.received[venue].append(messages)
        self.open[venue] = ws
        try:
            if venue in ("market", "public", "spot"):
                await self.binance(ws, venue, parse_qs(urlsplit(path).query)["streams"][0].split("/"))
            else:
                await self.polymarket(ws, venue, messages)
        except ConnectionClosed:
            pass

    async def binance(self, ws: ServerConnection, venue: str, streams: list[str]) -> None:
        served = {"market": MARKET_STREAMS, "public": PUBLIC_STREAMS, "spot": {"aggTrade"}}[venue]
        talking = [s for s in streams if s.split("@", 1)[1] in served and s not in self.silent
                   and not s.endswith("@forceOrder")]  # liquidations: none happen in this market
        while True:
            for s in talking:
                await ws.send(json.dumps({"stream": s, "data": {"e": "x", "s": s.split("@")[0].upper()}}))
            await asyncio.sleep(0.02)

    async def polymarket(self, ws: ServerConnection, venue: str, messages: list[str]) -> None:
        async for text in ws:
            messages.append(text)
            if text in ("PING", "ping"):
                await ws.send(text.replace("I", "O").replace("i", "o"))


def context(emitted: list[tuple[str, str]], settings: LiveSettings = FAST) -> SocketContext:
    async def emit(feed: str, msg: str) -> None:
        emitted.append((feed, msg))

    return SocketContext(emit, LiveStats(), settings, RealClock())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ---------------------------------------------------------------- Binance


def test_binance_silent_stream_trips_watchdog_and_socket_reconnects():
    async def scenario():
        async with FakeVenues(silent=("btcusdt@markPrice@1s",)) as venues:
            emitted: list[tuple[str, str]] = []
            ctx = context(emitted)
            url = f"{venues.endpoints().binance_futures_ws}/market/stream?streams=btcusdt@aggTrade/" \
                  "btcusdt@markPrice@1s/btcusdt@forceOrder"
            client = BinanceStreamClient("Binance futures websocket", FEED_FUTURES_MARKET, url, ctx,
                                         streams=["btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@forceOrder"])
            task = asyncio.create_task(client.run())
            # the venue sees the second connection before the client counts it: wait for the client's side
            await until(lambda: len(venues.received["market"]) >= 2 and ctx.stats.reconnects[FEED_FUTURES_MARKET] >= 1)
            await stop(task)
            return client, ctx.stats, emitted

    client, stats, emitted = asyncio.run(scenario())
    assert stats.watchdog_trips >= 1
    assert stats.reconnects[FEED_FUTURES_MARKET] >= 1
    assert client.silent_streams == ("btcusdt@markprice@1s",)  # forceOrder is exempt
    assert emitted and all(feed == FEED_FUTURES_MARKET for feed, _ in emitted)


def test_binance_streams_that_all_talk_never_trip_the_watchdog():
    async def scenario():
        async with FakeVenues() as venues:
            ctx = context([])
            streams = ["btcusdt@depth5@100ms", "btcusdt@bookTicker"]
            url = f"{venues.endpoints().binance_futures_ws}/public/stream?streams={'/'.join(streams)}"
            client = BinanceStreamClient("Binance futures websocket", FEED_FUTURES_PUBLIC, url, ctx, streams=streams)
            task = asyncio.create_task(client.run())
            await asyncio.sleep(1.2)  # more than twice the silence limit
            await stop(task)
            return ctx.stats

    stats = asyncio.run(scenario())
    assert stats.watchdog_trips == 0 and stats.messages == 0 and not stats.reconnects


# ---------------------------------------------------------------- Polymarket market channel


def test_polymarket_subscribes_pings_and_changes_subscriptions_without_reconnecting():
    async def scenario():
        async with FakeVenues() as venues:
            emitted: list[tuple[str, str]] = []
            ctx = context(emitted)
            client = PolymarketMarketClient("Polymarket CLOB websocket", FEED_POLYMARKET,
                                            f"{venues.endpoints().clob_ws}/ws/market", ctx)
            task = asyncio.create_task(client.run())
            await client.set_assets(["up1", "down1"])
            await until(lambda: ("polymarket_market", "PONG") in emitted)
            await client.set_assets(["up1", "down1", "up2", "down2"])
            await client.set_assets(["up2", "down2"])
            await until(lambda: len([m for m in venues.received["clob"][0] if m != "PING"]) >= 3)
            await stop(task)
            return venues.received["clob"], ctx.stats

    connections, stats = asyncio.run(scenario())
    assert len(connections) == 1 and not stats.reconnects
    messages = [json.loads(m) for m in connections[0] if m != "PING"]
    assert messages == [
        {"assets_ids": ["up1", "down1"], "type": "market", "custom_feature_enabled": True},
        {"assets_ids": ["up2", "down2"], "operation": "subscribe", "custom_feature_enabled": True},
        {"assets_ids": ["up1", "down1"], "operation": "unsubscribe"},
    ]
    assert "PING" in connections[0]


def test_polymarket_reconnects_after_server_kill_and_resubscribes_the_full_set():
    async def scenario():
        async with FakeVenues() as venues:
            ctx = context([])
            client = PolymarketMarketClient("Polymarket CLOB websocket", FEED_POLYMARKET,
                                            f"{venues.endpoints().clob_ws}/ws/market", ctx)
            task = asyncio.create_task(client.run())
            await client.set_assets(["up1", "down1"])
            await until(lambda: venues.received["clob"] and venues.received["clob"][0])
            await client.set_assets(["up1", "down1", "up2", "down2"])
            await until(lambda: len(venues.received["clob"][0]) >= 2)
            await venues.open["clob"].close(code=1011)
            await until(lambda: len(venues.received["clob"]) >= 2 and venues.received["clob"][1])
            await stop(task)
            return venues.received["clob"], ctx.stats

    connections, stats = asyncio.run(scenario())
    assert stats.reconnects[FEED_POLYMARKET] == 1
    assert json.loads(connections[1][0]) == {
        "assets_ids": ["up1", "down1", "up2", "down2"], "type": "market", "custom_feature_enabled": True}


def test_polymarket_silence_watchdog_reconnects_a_dead_connection():
    settings = LiveSettings(socket=FAST.socket, polymarket_ping_every=60.0, polymarket_silence=0.3)

    async def scenario():
        async with FakeVenues() as venues:
            ctx = context([], settings)
            client = PolymarketMarketClient("Polymarket CLOB websocket", FEED_POLYMARKET,
                                            f"{venues.endpoints().clob_ws}/ws/market", ctx)
            task = asyncio.create_task(client.run())
            await client.set_assets(["up1", "down1"])
            await until(lambda: len(venues.received["clob"]) >= 2 and ctx.stats.reconnects[FEED_POLYMARKET] >= 1)
            await stop(task)
            return ctx.stats

    stats = asyncio.run(scenario())
    assert stats.watchdog_trips >= 1 and stats.reconnects[FEED_POLYMARKET] >= 1


# ---------------------------------------------------------------- RTDS


def test_rtds_subscribes_to_chainlink_prices_per_asset_and_pings():
    async def scenario():
        async with FakeVenues() as venues:
            emitted: list[tuple[str, str]] = []
            client = RtdsClient("Polymarket RTDS", FEED_RTDS, venues.endpoints().rtds_ws, context(emitted),
                                assets=("BTC", "XRP"))
            task = asyncio.create_task(client.run())
            await until(lambda: (FEED_RTDS, "pong") in emitted)
            await stop(task)
            return venues.received["rtds"][0]

    messages = asyncio.run(scenario())
    assert json.loads(messages[0]) == {"action": "subscribe", "subscriptions": [
        {"topic": "crypto_prices_chainlink", "type": "*", "filters": '{"symbol":"btc/usd"}'},
        {"topic": "crypto_prices_chainlink", "type": "*", "filters": '{"symbol":"xrp/usd"}'},
    ]}
    assert "ping" in messages[1:]


# ---------------------------------------------------------------- LiveSource end to end


def test_live_source_uses_routed_paths_follows_discovery_and_emits_klines_warmup():
    async def scenario():
        async with FakeVenues() as venues:
            clock = RealClock()
            start = window_start(clock.now())
            venues.add_market("BTC", start, "tokup", "tokdown")
            venues.add_market("BTC", start + 900, "nextup", "nextdown")
            source = LiveSource(clock, ("BTC",), venues.endpoints(), settings=FAST)
            frames: list[Frame] = []
            feeds_needed = {FEED_DISCOVERY, FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_SPOT, FEED_POLYMARKET,
                            FEED_RTDS}
            stream = source.frames()
            try:
                async with asyncio.timeout(10):
                    async for frame in stream:
                        frames.append(frame)
                        if feeds_needed <= {f.feed for f in frames} and any(
                                "klines_rest" in f.msg for f in frames):
                            break
            finally:
                await stream.aclose()
                await source.close()
            leftover = [t for t in asyncio.all_tasks() if not t.done() and "/streamers/" in
                        getattr(getattr(t.get_coro(), "cr_code", None), "co_filename", "")]
            return venues, frames, source, leftover, start

    venues, frames, source, leftover, start = asyncio.run(scenario())
    assert leftover == []
    queries = {urlsplit(p).path: parse_qs(urlsplit(p).query)["streams"][0].split("/")
               for p in venues.paths if "streams=" in p}
    assert queries == {
        "/fut/market/stream": ["btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@markPrice@1s", "btcusdt@forceOrder"],
        "/fut/public/stream": ["btcusdt@depth5@100ms", "btcusdt@bookTicker"],
        "/spot/stream": ["btcusdt@aggTrade"],
    }
    assert venues.klines_queries[0] == {"symbol": "BTCUSDT", "interval": "1m", "limit": "63"}
    warmup = next(f for f in frames if "klines_rest" in f.msg)
    assert warmup.feed == FEED_FUTURES_MARKET
    assert json.loads(warmup.msg) == {"stream": "btcusdt@klines_rest", "data": KLINES}
    discovery = json.loads(next(f for f in frames if f.feed == FEED_DISCOVERY).msg)
    assert (discovery[0]["asset"], discovery[0]["start"], discovery[0]["token_up"]) == ("BTC", start, "tokup")
    subscribe = json.loads(venues.received["clob"][0][0])
    assert subscribe["type"] == "market" and subscribe["assets_ids"][:2] == ["tokup", "tokdown"]
    assert source.messages >= len(frames) and source.watchdog_trips == 0
    assert all(abs(f.t - frames[0].t) < 15 for f in frames)  # stamped with the run's clock


def test_live_source_check_names_the_unreachable_venue():
    async def scenario():
        async with FakeVenues() as venues:
            dead = dead_url("ws")
            source = LiveSource(RealClock(), ("BTC",), venues.endpoints(rtds_ws=dead), settings=FAST)
            await LiveSource(RealClock(), ("BTC",), venues.endpoints(), settings=FAST).check()
            with pytest.raises(VenueUnreachable) as info:
                await source.check()
            return str(info.value), dead

    message, dead = asyncio.run(scenario())
    assert message == f"could not reach Polymarket RTDS at {dead}; check the network or use --source sim"


def test_live_source_frames_raise_when_a_venue_is_unreachable_at_startup():
    async def scenario():
        async with FakeVenues() as venues:
            dead = dead_url("ws")
            source = LiveSource(RealClock(), ("BTC",), venues.endpoints(binance_spot_ws=dead), settings=FAST)
            try:
                async with asyncio.timeout(10):
                    async for _ in source.frames():
                        pass
            finally:
                await source.close()

    with pytest.raises(VenueUnreachable, match=r"^could not reach Binance spot websocket at ws://127\.0\.0\.1"):
        asyncio.run(scenario())

