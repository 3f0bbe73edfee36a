"""Live venue transports and LiveSource: raw text frames from the venues, stamped with the run's clock.

The transports never interpret market data. They connect (websockets' own reconnect loop), subscribe,
keep the connection alive, notice silent connections and reconnect, and hand every text frame on as
`Frame(clock.now(), feed, msg)`. Parsing is the job of the per-feed parsers downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.client import backoff
from websockets.exceptions import ConnectionClosed

from core.clock import Clock
from core.endpoints import Endpoints
from core.frames import (
    ASSETS,
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SPOT,
    Frame,
    MarketInfo,
)
from streamers.discovery import (
    Discovery,
    DiscoverySettings,
    RestFailure,
    RetryPolicy,
    VenueUnreachable,
    discovery_message,
    get_text,
    market_slug,
    window_start,
)

log = logging.getLogger(__name__)

Emit = Callable[[str, str], Awaitable[None]]  # (feed, raw text) -> queued

FUTURES_MARKET_STREAMS = ("aggTrade", "kline_1m", "markPrice@1s", "forceOrder")
FUTURES_PUBLIC_STREAMS = ("depth5@100ms", "bookTicker")
SPOT_STREAMS = ("aggTrade",)
# a combined-stream frame starts {"stream":"<name>","data":...}; only the name is read, for the watchdog
_STREAM_NAME = re.compile(r'"stream"\s*:\s*"([^"]+)"')


def binance_symbol(asset: str) -> str:
    return f"{asset.lower()}usdt"


def chainlink_symbol(asset: str) -> str:
    return f"{asset.lower()}/usd"


def combined_stream_url(base_path: str, assets: Sequence[str], streams: Sequence[str]) -> str:
    names = "/".join(f"{binance_symbol(a)}@{s}" for a in assets for s in streams)
    return f"{base_path}?streams={names}"


def klines_url(rest_base: str, asset: str, limit: int) -> str:
    return f"{rest_base}/fapi/v1/klines?symbol={binance_symbol(asset).upper()}&interval=1m&limit={limit}"


def klines_frame_text(asset: str, body: str) -> str:
    """Wrap a REST klines body like a combined-stream frame, since the body does not name its symbol."""
    return f'{{"stream":"{binance_symbol(asset)}@klines_rest","data":{body}}}'


# ---------------------------------------------------------------- settings and counters


@dataclass(frozen=True, slots=True)
class SocketSettings:
    open_timeout: float = 10.0  # wall seconds for the opening handshake
    close_timeout: float = 2.0  # wall seconds to wait for a close handshake from a dead peer
    ping_interval: float | None = 20.0  # websocket protocol pings (websockets does the work)
    ping_timeout: float | None = 20.0
    max_size: int = 2**22  # bytes per message
    reconnect_pause: float = 1.0  # wall seconds between a closed session and the next connect
    backoff_initial: float = 1.0  # wall seconds, first retry after a failed connect
    backoff_max: float = 60.0


@dataclass(frozen=True, slots=True)
class LiveSettings:
    socket: SocketSettings = SocketSettings()
    stream_silence: float = 30.0  # clock seconds a Binance stream may stay silent before a reconnect
    stream_silence_wall: float = 10.0  # ... and wall seconds too: a scaled clock must not trip on a busy host
    watchdog_every: float = 1.0  # clock seconds between watchdog checks
    watchdog_exempt: tuple[str, ...] = ("@forceorder",)  # liquidations are legitimately sparse
    min_wall_pause: float = 0.05  # wall floor for clock-based waits, so a fast scaled clock cannot spin
    polymarket_ping_every: float = 10.0  # wall seconds between text PINGs (venue requires about 10 s)
    polymarket_silence: float = 60.0  # wall seconds without any frame (PONG included) before a reconnect
    rtds_ping_every: float = 5.0
    rtds_ping_text: str = "ping"  # what the official RTDS client sends
    rtds_silence: float = 60.0
    futures_market_streams: tuple[str, ...] = FUTURES_MARKET_STREAMS
    futures_public_streams: tuple[str, ...] = FUTURES_PUBLIC_STREAMS
    spot_streams: tuple[str, ...] = SPOT_STREAMS
    klines_limit: int = 63  # a bar closed a full 60 minutes ago (for the 60-minute trend), plus the open one
    rest_retry: RetryPolicy = field(default_factory=RetryPolicy)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    check_timeout: float = 10.0
    queue_size: int = 100_000  # frames waiting for the engine; a full queue slows the readers


@dataclass(slots=True)
class LiveStats:
    reconnects: Counter[str] = field(default_factory=Counter)  # per feed
    watchdog_trips: int = 0
    messages: int = 0


# ---------------------------------------------------------------- one websocket with reconnects


@dataclass(frozen=True, slots=True)
class SocketContext:
    """What every socket client shares with its LiveSource."""

    emit: Emit
    stats: LiveStats
    settings: LiveSettings
    clock: Clock
    log_reconnects: bool = True


class SocketClient:
    """A websocket feed: connect, subscribe, read text frames, reconnect; subclasses add the venue's rules."""

    def __init__(self, venue: str, feed: str, url: str, ctx: SocketContext) -> None:
        self.venue = venue
        self.feed = feed
        self.url = url
        self.emit = ctx.emit
        self.stats = ctx.stats
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.log_reconnects = ctx.log_reconnects
        self.connections = 0
        self.silence: float | None = None  # wall seconds without a frame before a reconnect

    def _process_exception(self, exc: Exception) -> Exception | None:
        # before the first connection a failure means the venue is unreachable; after it, retry forever
        if self.connections == 0:
            return VenueUnreachable(self.venue, self.url.split("?")[0])
        log.debug("%s: connect failed (%s); retrying", self.venue, exc)
        return None

    def _note(self, text: str, *args: object) -> None:
        log.log(logging.WARNING if self.log_reconnects else logging.DEBUG, text, *args)

    async def run(self) -> None:
        s = self.settings.socket
        delays = functools.partial(backoff, initial_delay=s.backoff_initial, max_delay=s.backoff_max)
        async for ws in websockets.connect(
            self.url,
            process_exception=self._process_exception,
            reconnect_delays=delays,
            open_timeout=s.open_timeout,
            close_timeout=s.close_timeout,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            max_size=s.max_size,
        ):
            self.connections += 1
            if self.connections > 1:
                self.stats.reconnects[self.feed] += 1
                self._note("%s reconnected (%d reconnects)", self.venue, self.connections - 1)
            try:
                await self._session(ws)
            except ConnectionClosed as exc:
                self._note("%s connection closed: %s", self.venue, exc)
            await asyncio.sleep(s.reconnect_pause)

    async def _session(self, ws: ClientConnection) -> None:
        await self._on_open(ws)
        helpers = [asyncio.create_task(h) for h in self._helpers(ws)]
        try:
            while True:
                if self.silence is None:
                    raw = await ws.recv()
                else:
                    try:
                        async with asyncio.timeout(self.silence):
                            raw = await ws.recv()
                    except TimeoutError:
                        self.stats.watchdog_trips += 1
                        self._note("%s silent for %.0f s; reconnecting", self.venue, self.silence)
                        await ws.close()
                        return
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                self._on_text(text)
                await self.emit(self.feed, text)
        finally:
            for h in helpers:
                h.cancel()
            for result in await asyncio.gather(*helpers, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("%s: connection helper failed: %r", self.venue, result)
            self._on_close()

    async def _on_open(self, ws: ClientConnection) -> None:
        """Send subscriptions; called on every (re)connect before reading."""

    def _helpers(self, ws: ClientConnection) -> list[Coroutine[Any, Any, None]]:
        """Coroutines that live as long as one connection (pingers, watchdogs, warm-up)."""
        return []

    def _on_text(self, text: str) -> None:
        """Transport bookkeeping on a received frame (no market-data interpretation)."""

    def _on_close(self) -> None:
        """Forget per-connection state."""

    async def _clock_pause(self, seconds: float) -> None:
        """Sleep `seconds` of clock time (a scaled clock shortens the wall wait)."""
        target = self.clock.now() + seconds
        await asyncio.sleep(max(self.settings.min_wall_pause, self.clock.seconds_until(target)))

    async def _text_pinger(self, ws: ClientConnection, text: str, every: float) -> None:
        # keepalive is transport, not a trading decision: wall time is right here
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(every)
                await ws.send(text)


class BinanceStreamClient(SocketClient):
    """A Binance combined-stream socket with a per-stream silence watchdog (clock time).

    Since the 2026 routing split, a stream requested on the wrong path connects fine and then says
    nothing; a stream silent for `stream_silence` seconds is reported and the socket reconnected.
    """

    def __init__(
        self,
        venue: str,
        feed: str,
        url: str,
        ctx: SocketContext,
        streams: Sequence[str],
        warmup: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        super().__init__(venue, feed, url, ctx)
        exempt = self.settings.watchdog_exempt
        self.watched = tuple(s.lower() for s in streams if not any(s.lower().endswith(e) for e in exempt))
        self.warmup = warmup
        self.last_seen: dict[str, float] = {}
        self.last_seen_wall: dict[str, float] = {}
        self.silent_streams: tuple[str, ...] = ()  # the streams behind the latest watchdog trip

    def _helpers(self, ws: ClientConnection) -> list[Coroutine[Any, Any, None]]:
        helpers: list[Coroutine[Any, Any, None]] = [self._watchdog(ws)]
        if self.warmup is not None:
            helpers.append(self.warmup())
        return helpers

    def _on_text(self, text: str) -> None:
        m = _STREAM_NAME.search(text, 0, 200)
        if m:
            name = m.group(1).lower()
            self.last_seen[name] = self.clock.now()
            self.last_seen_wall[name] = time.monotonic()

    def _on_close(self) -> None:
        self.last_seen.clear()
        self.last_seen_wall.clear()

    async def _watchdog(self, ws: ClientConnection) -> None:
        connected_at, connected_wall = self.clock.now(), time.monotonic()
        limit, wall_limit = self.settings.stream_silence, self.settings.stream_silence_wall
        while True:
            await self._clock_pause(self.settings.watchdog_every)
            now, wall = self.clock.now(), time.monotonic()
            silent = tuple(
                s for s in self.watched
                if now - self.last_seen.get(s, connected_at) > limit
                and wall - self.last_seen_wall.get(s, connected_wall) > wall_limit
            )
            if silent:
                self.stats.watchdog_trips += 1
                self.silent_streams = silent
                self._note("%s: no message for %.0f s on %s; reconnecting", self.venue, limit, ", ".join(silent))
                await ws.close()
                return


class PolymarketMarketClient(SocketClient):
    """The CLOB market channel: subscribe on connect, text PING every 10 s, dynamic (un)subscribe."""

    def __init__(self, venue: str, feed: str, url: str, ctx: SocketContext) -> None:
        super().__init__(venue, feed, url, ctx)
        self.silence = self.settings.polymarket_silence
        self.assets: list[str] = []
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()  # orders the initial subscribe against later changes
        self._has_assets = asyncio.Event()

    async def run(self) -> None:
        # the venue drops a connection that does not subscribe, so wait for something to subscribe to
        await self._has_assets.wait()
        await super().run()

    async def set_assets(self, tokens: Sequence[str]) -> None:
        """Make the subscription equal `tokens`, sending only the difference on the open connection."""
        async with self._lock:
            wanted = list(dict.fromkeys(tokens))
            added = [t for t in wanted if t not in self.assets]
            removed = [t for t in self.assets if t not in wanted]
            self.assets = wanted
            if wanted:
                self._has_assets.set()
            if self._ws is None:
                return
            # a failed send is harmless: the reconnect subscribes the full current set
            with contextlib.suppress(ConnectionClosed):
                if added:
                    await self._ws.send(json.dumps(
                        {"assets_ids": added, "operation": "subscribe", "custom_feature_enabled": True}))
                if removed:
                    await self._ws.send(json.dumps({"assets_ids": removed, "operation": "unsubscribe"}))

    async def _on_open(self, ws: ClientConnection) -> None:
        async with self._lock:
            await ws.send(json.dumps({"assets_ids": self.assets, "type": "market", "custom_feature_enabled": True}))
            self._ws = ws

    def _helpers(self, ws: ClientConnection) -> list[Coroutine[Any, Any, None]]:
        return [self._text_pinger(ws, "PING", self.settings.polymarket_ping_every)]

    def _on_close(self) -> None:
        self._ws = None


class RtdsClient(SocketClient):
    """Polymarket RTDS: Chainlink prices (the resolution source), one filtered subscription per asset."""

    def __init__(self, venue: str, feed: str, url: str, ctx: SocketContext, assets: Sequence[str]) -> None:
        super().__init__(venue, feed, url, ctx)
        self.silence = self.settings.rtds_silence
        self.assets = tuple(assets)

    def subscribe_message(self) -> str:
        subs = [
            {"topic": "crypto_prices_chainlink", "type": "*",
             "filters": json.dumps({"symbol": chainlink_symbol(a)}, separators=(",", ":"))}
            for a in self.assets
        ]
        return json.dumps({"action": "subscribe", "subscriptions": subs})

    async def _on_open(self, ws: ClientConnection) -> None:
        await ws.send(self.subscribe_message())

    def _helpers(self, ws: ClientConnection) -> list[Coroutine[Any, Any, None]]:
        return [self._text_pinger(ws, self.settings.rtds_ping_text, self.settings.rtds_ping_every)]


# ---------------------------------------------------------------- the source


async def _probe_http(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    # any HTTP answer proves the venue is reachable
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        await resp.read()


async def _probe_ws(url: str, timeout: float) -> None:
    async with asyncio.timeout(timeout), websockets.connect(url, open_timeout=timeout, close_timeout=1.0):
        pass


class LiveSource:
    """Frames from the real venues (or anything speaking their protocols at the UPDOWN_* endpoints).

    Runs discovery, both Binance futures sockets (/market and /public), Binance spot, the Polymarket
    market channel and RTDS as tasks feeding one queue; follows discovery with (un)subscriptions.
    """

    virtual = False

    def __init__(
        self,
        clock: Clock,
        assets: Sequence[str] = ASSETS,
        endpoints: Endpoints | None = None,
        record_reconnects: bool = True,
        settings: LiveSettings | None = None,
    ) -> None:
        self.clock = clock
        self.assets = tuple(a.upper() for a in assets)
        self.endpoints = endpoints or Endpoints.from_env()
        self.record_reconnects = record_reconnects  # one log line per reconnect and watchdog trip
        self.settings = settings or LiveSettings()
        self.stats = LiveStats()
        self.markets: list[MarketInfo] = []
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(self.settings.queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._error: BaseException | None = None
        self._closed = False
        e = self.endpoints
        self.urls = {
            FEED_FUTURES_MARKET: combined_stream_url(
                f"{e.binance_futures_ws}/market/stream", self.assets, self.settings.futures_market_streams),
            FEED_FUTURES_PUBLIC: combined_stream_url(
                f"{e.binance_futures_ws}/public/stream", self.assets, self.settings.futures_public_streams),
            FEED_SPOT: combined_stream_url(f"{e.binance_spot_ws}/stream", self.assets, self.settings.spot_streams),
            FEED_POLYMARKET: f"{e.clob_ws}/ws/market",
            FEED_RTDS: e.rtds_ws,
        }
        self.clients: dict[str, SocketClient] = {}
        self.discovery: Discovery | None = None
        self.polymarket: PolymarketMarketClient | None = None

    # counters the report and dashboard read
    @property
    def reconnects(self) -> Counter[str]:
        return self.stats.reconnects

    @property
    def watchdog_trips(self) -> int:
        return self.stats.watchdog_trips

    @property
    def messages(self) -> int:
        return self.stats.messages

    async def check(self, timeout: float | None = None) -> None:
        """Raise VenueUnreachable naming the first venue that does not answer within `timeout` seconds."""
        t = self.settings.check_timeout if timeout is None else timeout
        e = self.endpoints
        slug = market_slug(self.assets[0], window_start(self.clock.now()))
        http = [
            ("Polymarket Gamma", e.gamma, f"{e.gamma}/events?slug={slug}"),
            ("Binance futures REST", e.binance_futures_rest,
             klines_url(e.binance_futures_rest, self.assets[0], 1)),
        ]
        sockets = [
            ("Binance futures websocket", self.urls[FEED_FUTURES_MARKET]),
            ("Binance futures websocket", self.urls[FEED_FUTURES_PUBLIC]),
            ("Binance spot websocket", self.urls[FEED_SPOT]),
            ("Polymarket CLOB websocket", self.urls[FEED_POLYMARKET]),
            ("Polymarket RTDS", self.urls[FEED_RTDS]),
        ]
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                *(_probe_http(session, url, t) for _, _, url in http),
                *(_probe_ws(url, t) for _, url in sockets),
                return_exceptions=True,
            )
        named = [(venue, base) for venue, base, _ in http] + [(v, url.split("?")[0]) for v, url in sockets]
        for (venue, url), result in zip(named, results, strict=True):
            if isinstance(result, BaseException):
                raise VenueUnreachable(venue, url) from result

    async def _emit(self, feed: str, msg: str) -> None:
        self.stats.messages += 1
        await self._queue.put(Frame(self.clock.now(), feed, msg))

    async def _on_markets(self, markets: list[MarketInfo]) -> None:
        self.markets = markets
        await self._emit(FEED_DISCOVERY, discovery_message(markets))
        assert self.polymarket is not None
        await self.polymarket.set_assets([t for m in markets for t in (m.token_up, m.token_down)])

    async def _warmup_klines(self) -> None:
        assert self._http is not None
        for asset in self.assets:
            url = klines_url(self.endpoints.binance_futures_rest, asset, self.settings.klines_limit)
            try:
                status, body = await get_text(self._http, url, self.settings.rest_retry)
            except RestFailure as exc:
                log.warning("futures warm-up for %s skipped: %s", asset, exc)
                continue
            if status != 200:
                log.warning("futures warm-up for %s skipped: HTTP %d from %s", asset, status, url)
                continue
            await self._emit(FEED_FUTURES_MARKET, klines_frame_text(asset, body))

    def _build_clients(self) -> None:
        ctx = SocketContext(self._emit, self.stats, self.settings, self.clock, self.record_reconnects)
        s = self.settings
        self.polymarket = PolymarketMarketClient(
            "Polymarket CLOB websocket", FEED_POLYMARKET, self.urls[FEED_POLYMARKET], ctx)
        self.clients = {
            FEED_FUTURES_MARKET: BinanceStreamClient(
                "Binance futures websocket", FEED_FUTURES_MARKET, self.urls[FEED_FUTURES_MARKET], ctx,
                streams=[f"{binance_symbol(a)}@{x}" for a in self.assets for x in s.futures_market_streams],
                warmup=self._warmup_klines),
            FEED_FUTURES_PUBLIC: BinanceStreamClient(
                "Binance futures websocket", FEED_FUTURES_PUBLIC, self.urls[FEED_FUTURES_PUBLIC], ctx,
                streams=[f"{binance_symbol(a)}@{x}" for a in self.assets for x in s.futures_public_streams]),
            FEED_SPOT: BinanceStreamClient(
                "Binance spot websocket", FEED_SPOT, self.urls[FEED_SPOT], ctx,
                streams=[f"{binance_symbol(a)}@{x}" for a in self.assets for x in s.spot_streams]),
            FEED_POLYMARKET: self.polymarket,
            FEED_RTDS: RtdsClient("Polymarket RTDS", FEED_RTDS, self.urls[FEED_RTDS], ctx, assets=self.assets),
        }

    async def _guard(self, coro: Awaitable[None]) -> None:
        """Run one client; a failure (unreachable venue, bug) ends the stream of frames with that error."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._error is None:
                self._error = exc
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    async def start(self) -> None:
        if self._tasks or self._closed:
            return
        self._http = aiohttp.ClientSession()
        self.discovery = Discovery(self.clock, self.endpoints, self.assets, self._http, self.settings.discovery)
        self._build_clients()
        coros = [self.discovery.run(self._on_markets), *(c.run() for c in self.clients.values())]
        self._tasks = [asyncio.create_task(self._guard(c)) for c in coros]

    async def frames(self) -> AsyncIterator[Frame]:
        await self.start()
        while not self._closed:
            if self._error is not None:
                raise self._error
            frame = await self._queue.get()
            if frame is not None:
                yield frame

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wakes a reader waiting in frames()
