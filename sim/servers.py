"""The simulator's venues: loopback servers that speak the real protocols, paced by a scaled clock.

`SimServers.start()` opens, on 127.0.0.1 ephemeral ports, the Binance futures websocket (routed
`/market` and `/public` paths) and REST, the Binance spot websocket, the Polymarket CLOB market
channel and REST, RTDS and Gamma, and returns the `UPDOWN_*` endpoint mapping. One pacing task walks
`SimMarket.events()` and hands each event's text, when the clock reaches its time, to the outboxes of
the connections that asked for it; one writer task per connection drains its outbox, so a slow client
never holds up the others or the pacing. The connections, their router and the server-side faults are
in `sim/connections.py`, the REST apps in `sim/rest.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from core.clock import RealClock
from core.endpoints import ENDPOINT_VARIABLES
from core.frames import (
    ASSETS,
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SPOT,
)
from sim import rest
from sim.connections import Conn, Faults, Router, ServerStats
from sim.faults import FaultSpec
from sim.market import SimMarket
from sim.messages import SimEvent
from sim.profiles import SimProfile

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# most events handed to outboxes before the pacing task lets the loop serve sockets again
PACING_BATCH = 2_000
# the CLOB market channel closes connections that never subscribe
CLOB_SUBSCRIBE_TIMEOUT_S = 10.0
# market-channel events only sent to subscribers that set custom_feature_enabled
CUSTOM_FEATURE_EVENTS = frozenset({"best_bid_ask", "new_market", "market_resolved"})
RTDS_ALL_SYMBOLS = "*"
# falling this many clock seconds behind means the speed is more than the machine can serve
LAG_WARNING_S = 30.0

# which feed a Binance futures websocket path serves; the unrouted legacy path only gets /public data
FUTURES_WS_PATHS = {
    "/market/stream": FEED_FUTURES_MARKET,
    "/public/stream": FEED_FUTURES_PUBLIC,
    "/stream": FEED_FUTURES_PUBLIC,
}
SPOT_WS_PATHS = {"/stream": FEED_SPOT}

def _report_pacer_end(task: asyncio.Task) -> None:
    """The event stream is infinite, so a pacer that ends on its own has crashed: say so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("simulator pacing stopped: %r", task.exception())


def _event_type(msg: str) -> str | None:
    try:
        doc = orjson.loads(msg)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, list):
        doc = doc[0] if doc else None
    return doc.get("event_type") if isinstance(doc, dict) else None


def _rtds_symbols(subscription: object) -> list[str]:
    """Symbols one RTDS subscription asks for: `filters` is JSON text `{"symbol": "btc/usd"}`, empty = all."""
    if not isinstance(subscription, dict) or subscription.get("topic") != "crypto_prices_chainlink":
        return []
    filters = subscription.get("filters")
    if not filters:
        return [RTDS_ALL_SYMBOLS]
    try:
        parsed = orjson.loads(filters) if isinstance(filters, str) else filters
    except orjson.JSONDecodeError:
        return []
    symbol = parsed.get("symbol") if isinstance(parsed, dict) else None
    return [symbol.lower()] if isinstance(symbol, str) else []


class SimServers:
    """The simulated venues on loopback, serving one `SimMarket` at `speed` times real time."""

    def __init__(
        self,
        seed: int,
        speed: float,
        assets: Sequence[str] = ASSETS,
        faults: FaultSpec | None = None,
        profile: SimProfile | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.seed = seed
        self.speed = float(speed)
        self.assets = tuple(assets)
        self.sim = SimMarket(seed, assets=self.assets, faults=faults, profile=profile)
        self.clock = RealClock(self.speed, sim_origin=self.sim.start_time)
        self.stats: dict[str, ServerStats] = {
            name: ServerStats()
            for name in (
                "binance_futures_ws",
                "binance_spot_ws",
                "clob_ws",
                "rtds_ws",
                "binance_futures_rest",
                "clob_rest",
                "gamma",
            )
        }
        self.clob_subscribe_timeout_s = CLOB_SUBSCRIBE_TIMEOUT_S
        self.events_paced = 0  # events handed to the router (delivered, or nobody asked for them)
        self.last_event_time: float | None = None  # market time of the latest of those
        self._open: set[Conn] = set()
        self._pause_requested = False
        self._warned_behind = False
        self._parked = asyncio.Event()
        self._resume = asyncio.Event()
        self._faults = Faults(faults, seed)
        self._router = Router()
        self._symbols = {f"{asset}USDT" for asset in self.assets}
        self._ws_servers: list[Server] = []
        self._runners: list[web.AppRunner] = []
        self._pacer: asyncio.Task | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        """Open every server and start pacing; returns `UPDOWN_*` variable -> base URL."""
        urls = {
            "gamma": await self._serve_rest(rest.gamma_app(self.sim, lambda: self.clock.now(), self.stats["gamma"])),
            "clob": await self._serve_rest(rest.clob_rest_app(self.sim, self.stats["clob_rest"])),
            "clob_ws": await self._serve_ws(self._clob_handler, {"/ws/market"}),
            "rtds_ws": await self._serve_ws(self._rtds_handler, None),
            "binance_futures_ws": await self._serve_ws(self._futures_handler, set(FUTURES_WS_PATHS)),
            "binance_futures_rest": await self._serve_rest(
                rest.futures_rest_app(self.sim, self._symbols, self.stats["binance_futures_rest"])
            ),
            "binance_spot_ws": await self._serve_ws(self._spot_handler, set(SPOT_WS_PATHS)),
        }
        endpoints = {ENDPOINT_VARIABLES[name][0]: url for name, url in urls.items()}
        # the sim's time starts now, when clients can first connect
        self.clock = RealClock(self.speed, sim_origin=self.sim.start_time)
        self._pacer = asyncio.create_task(self._pace(), name="sim-pacer")
        self._pacer.add_done_callback(_report_pacer_end)
        return endpoints

    async def stop(self) -> None:
        """Stop pacing, close every connection and server."""
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
            self._pacer = None
        for server in self._ws_servers:
            server.close()
        for server in self._ws_servers:
            await server.wait_closed()
        self._ws_servers.clear()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _serve_ws(
        self, handler: Callable[[ServerConnection], Awaitable[None]], paths: set[str] | None
    ) -> str:
        """A websocket server; `paths` are the paths it serves (None: any, as RTDS answers on the root)."""

        def process_request(connection: ServerConnection, request: Request) -> Response | None:
            if paths is None or urlsplit(request.path).path in paths:
                return None
            # refused at the handshake, as the real hosts answer an unknown path
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain")]), b"Not Found\n")

        server = await serve(
            handler,
            HOST,
            0,
            compression=None,  # the venues' market streams are uncompressed; deflate costs CPU at high speed
            process_request=process_request,
        )
        self._ws_servers.append(server)
        port = next(iter(server.sockets)).getsockname()[1]
        return f"ws://{HOST}:{port}"

    async def _serve_rest(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self._runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://{HOST}:{port}"

    @property
    def stalls(self) -> int:
        """Feed stalls injected so far by the stall fault."""
        return self._faults.stalls

    # ---- pacing ----------------------------------------------------------------------------------

    async def _pace(self) -> None:
        """Hand each event to its subscribers once the clock reaches its time."""
        faults = self._faults
        handed = 0
        # the generator applies an event's state change when it yields it, so parking between routing
        # one event and asking for the next leaves the simulator's state equal to what was delivered
        for event in self.sim.events():
            while (wait := self.clock.seconds_until(event.t)) > 0:
                if faults.stall:
                    self._release_held(self.clock.now())
                await asyncio.sleep(wait)
                handed = 0
            if faults.stall:
                self._release_held(event.t)
                if event.feed in faults.held and faults.is_stalled(event.feed, event.t):
                    faults.held[event.feed].append(event)
                    continue
            self._route(event)
            handed += 1
            if handed >= PACING_BATCH:
                handed = 0
                self._warn_if_behind(event.t)
                await asyncio.sleep(0)  # let writers and handlers run during a long catch-up
            if self._pause_requested:
                self._release_held(math.inf)  # a paused market has sent everything up to now
                self._parked.set()
                await self._resume.wait()

    def _warn_if_behind(self, t: float) -> None:
        lag = self.clock.now() - t
        if lag > LAG_WARNING_S and not self._warned_behind:
            self._warned_behind = True
            log.warning(
                "the simulator is %.0f s of market time behind its clock: --speed %g is more than this machine "
                "can serve; events arrive late and in bursts",
                lag,
                self.speed,
            )

    async def pause(self) -> None:
        """Hold delivery at an event boundary and wait until every outbox is written to its socket.

        Afterwards the simulator's books equal what its subscribers were sent (for tests and demos);
        the clock keeps running, and `resume()` delivers the backlog at once.
        """
        self._resume.clear()
        self._parked.clear()
        self._pause_requested = True
        parked = asyncio.ensure_future(self._parked.wait())
        assert self._pacer is not None, "pause() needs started servers"
        await asyncio.wait({parked, self._pacer}, return_when=asyncio.FIRST_COMPLETED)
        if not parked.done():
            parked.cancel()
            raise RuntimeError("the simulator's pacing has stopped")
        while any(conn.outbox for conn in self._open):
            await asyncio.sleep(0.01)

    def resume(self) -> None:
        self._pause_requested = False
        self._resume.set()

    def drop_connections(self, server: str | None = None) -> int:
        """Kill every open websocket (of one server, e.g. "clob_ws"), as a network failure would; returns how many."""
        victims = [conn for conn in self._open if server is None or conn.server == server]
        for conn in victims:
            conn.stats.dropped += 1
            conn.ws.transport.abort()
        return len(victims)

    def _release_held(self, now: float) -> None:
        """Deliver, in order, what stalled feeds held back once their stall is over at `now`."""
        faults = self._faults
        for feed, held in faults.held.items():
            if held and now >= faults.stalled_until[feed]:
                while held:
                    self._route(held.popleft())

    def _route(self, event: SimEvent) -> None:
        """Give one event's text to every connection subscribed to it."""
        feed = event.feed
        router = self._router
        if feed == FEED_POLYMARKET:
            targets: set[Conn] = set()
            if "new_market" in event.msg and _event_type(event.msg) == "new_market":
                # announces a market nobody can have subscribed to yet: every custom-feature subscriber gets it
                targets = {c for c in self._open if c.feed == FEED_POLYMARKET and c.custom_features}
            for asset_id in event.asset_ids:
                targets |= router.subscribers(feed, asset_id)
            if (
                targets
                and any(not c.custom_features for c in targets)
                and _event_type(event.msg) in CUSTOM_FEATURE_EVENTS
            ):
                targets = {c for c in targets if c.custom_features}
        elif feed == FEED_RTDS:
            if event.symbol is None:
                return
            targets = router.subscribers(feed, event.symbol) | router.subscribers(feed, RTDS_ALL_SYMBOLS)
        elif event.stream is not None:
            targets = router.subscribers(feed, event.stream)
        else:
            return
        self.events_paced += 1
        self.last_event_time = event.t
        if not targets:
            return
        if self._faults.drop:
            for conn in targets:
                self._faults.deliver(conn, event.msg)
        else:
            for conn in targets:
                conn.push(event.msg)

    # ---- websocket handlers ----------------------------------------------------------------------

    async def _run_conn(self, conn: Conn, reader: Awaitable[None]) -> None:
        """Run a connection's writer beside its reader; whichever ends first ends both."""
        conn.stats.connections += 1
        self._open.add(conn)
        writer = asyncio.create_task(conn.write_forever())
        writer.add_done_callback(conn.on_writer_done)
        try:
            await reader
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(conn)
            self._router.forget(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    async def _futures_handler(self, ws: ServerConnection) -> None:
        await self._binance_handler(ws, FUTURES_WS_PATHS, "binance_futures_ws")

    async def _spot_handler(self, ws: ServerConnection) -> None:
        await self._binance_handler(ws, SPOT_WS_PATHS, "binance_spot_ws")

    async def _binance_handler(self, ws: ServerConnection, paths: dict[str, str], server: str) -> None:
        """Combined streams from `?streams=a/b/c` and live SUBSCRIBE; the path decides which feed it gets.

        A stream that belongs to the other routed path is accepted and acknowledged but never
        delivered, which is how the real routed endpoints fail.
        """
        url = urlsplit(ws.request.path)
        conn = Conn(ws, paths[url.path], server, self.stats[server])
        streams = [s for value in parse_qs(url.query).get("streams", []) for s in value.split("/") if s]
        self._router.add(conn, streams)
        await self._run_conn(conn, self._binance_reader(conn))

    async def _binance_reader(self, conn: Conn) -> None:
        async for raw in conn.ws:
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                conn.push('{"code":2,"msg":"Invalid JSON."}')
                continue
            if not isinstance(request, dict):
                conn.push('{"code":2,"msg":"Invalid request."}')
                continue
            method, params, request_id = request.get("method"), request.get("params"), request.get("id")
            stream_params = [p for p in params if isinstance(p, str)] if isinstance(params, list) else []
            if method == "SUBSCRIBE":
                self._router.add(conn, stream_params)
                conn.push(orjson.dumps({"result": None, "id": request_id}).decode())
            elif method == "UNSUBSCRIBE":
                self._router.remove(conn, stream_params)
                conn.push(orjson.dumps({"result": None, "id": request_id}).decode())
            elif method == "LIST_SUBSCRIPTIONS":
                conn.push(orjson.dumps({"result": sorted(conn.keys), "id": request_id}).decode())
            else:
                conn.push(orjson.dumps({"code": 2, "msg": f"Invalid request: unknown method {method!r}"}).decode())

    async def _clob_handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws, FEED_POLYMARKET, "clob_ws", self.stats["clob_ws"])
        await self._run_conn(conn, self._clob_reader(conn))

    async def _clob_reader(self, conn: Conn) -> None:
        """Market channel: first frame subscribes (else closed after 10 s), then dynamic (un)subscribe."""
        ws = conn.ws
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.clob_subscribe_timeout_s
        subscribed = False
        while True:
            if subscribed:
                raw = await ws.recv()
            else:
                try:
                    raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    await ws.close(1008, "no subscription")
                    return
            if raw in ("PING", "ping"):
                conn.push("PONG")
                continue
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                conn.push("INVALID OPERATION")
                continue
            assets = request.get("assets_ids") if isinstance(request, dict) else None
            if not isinstance(assets, list):
                conn.push("INVALID OPERATION")
                continue
            token_ids = [a for a in assets if isinstance(a, str)]
            if request.get("custom_feature_enabled") is True:
                conn.custom_features = True
            operation = request.get("operation")
            if operation == "unsubscribe":
                self._router.remove(conn, token_ids)
                continue
            if operation not in (None, "subscribe") or (
                operation is None and str(request.get("type", "")).lower() != "market"
            ):
                conn.push("INVALID OPERATION")
                continue
            subscribed = True
            added = self._router.add(conn, token_ids)
            books = [book for book in (self.sim.book_event(t) for t in added) if book is not None]
            if books:
                # the snapshot is one frame holding a JSON array of `book` events, as the venue sends it
                conn.push("[" + ",".join(books) + "]")

    async def _rtds_handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws, FEED_RTDS, "rtds_ws", self.stats["rtds_ws"])
        await self._run_conn(conn, self._rtds_reader(conn))

    async def _rtds_reader(self, conn: Conn) -> None:
        async for raw in conn.ws:
            if raw in ("ping", "PING"):
                conn.push("pong" if raw == "ping" else "PONG")
                continue
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(request, dict) or not isinstance(request.get("subscriptions"), list):
                continue
            symbols = [s for sub in request["subscriptions"] for s in _rtds_symbols(sub)]
            if request.get("action") == "subscribe":
                self._router.add(conn, symbols)
            elif request.get("action") == "unsubscribe":
                self._router.remove(conn, symbols)
