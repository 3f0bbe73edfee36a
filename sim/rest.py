"""The simulator's REST venues as aiohttp apps: Gamma (events, markets), the CLOB (market rules, book)
and Binance futures klines, answering from `SimMarket` with the venues' own bodies and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from sim.connections import ServerStats
from sim.market import SimMarket

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: str | bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def counted(stats: ServerStats, handler: Handler) -> Handler:
    """`handler`, counting each request and response in `stats`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        stats.connections += 1
        response = await handler(request)
        stats.messages += 1
        return response

    return handle


def gamma_app(sim: SimMarket, now: Callable[[], float], stats: ServerStats) -> web.Application:
    """Gamma's `/events` and `/markets` by slug, as listed at clock time `now()`."""

    async def events(request: web.Request) -> web.Response:
        body = sim.gamma_event_json(request.query.get("slug", ""), now())
        return json_response(body or "[]")

    async def markets(request: web.Request) -> web.Response:
        body = sim.gamma_markets_json(request.query.get("slug", ""), now())
        return json_response(body or "[]")

    app = web.Application()
    app.router.add_get("/events", counted(stats, events))
    app.router.add_get("/markets", counted(stats, markets))
    return app


def clob_rest_app(sim: SimMarket, stats: ServerStats) -> web.Application:
    """The CLOB's `/markets/{condition_id}` and `/book?token_id=`."""

    async def market(request: web.Request) -> web.Response:
        body = sim.clob_market_json(request.match_info["condition_id"])
        if body is None:
            return json_response(b'{"error":"market not found"}', status=404)
        return json_response(body)

    async def book(request: web.Request) -> web.Response:
        token_id = request.query.get("token_id", "")
        if not token_id:
            return json_response(b'{"error":"Invalid token id"}', status=400)
        body = sim.book_json(token_id)
        if body is None:
            return json_response(
                b'{"error":"No orderbook exists for the requested token id"}', status=404
            )
        return json_response(body)

    app = web.Application()
    app.router.add_get("/markets/{condition_id}", counted(stats, market))
    app.router.add_get("/book", counted(stats, book))
    return app


def futures_rest_app(sim: SimMarket, symbols: set[str], stats: ServerStats) -> web.Application:
    """Binance futures `/fapi/v1/klines` for `symbols` (upper case, e.g. BTCUSDT)."""

    async def klines(request: web.Request) -> web.Response:
        query = request.query
        symbol = query.get("symbol", "")
        if symbol not in symbols:
            return json_response(b'{"code":-1121,"msg":"Invalid symbol."}', status=400)
        if query.get("interval") != "1m":
            return json_response(b'{"code":-1120,"msg":"Invalid interval."}', status=400)
        try:
            limit = int(query.get("limit", "500"))
            end_time = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return json_response(
                b'{"code":-1100,"msg":"Illegal characters found in a parameter."}', status=400
            )
        if not 1 <= limit <= 1500:
            return json_response(b'{"code":-1130,"msg":"Data sent for parameter \'limit\' is not valid."}', 400)
        # the simulator caps the bars at its own time, as the venue only has closed bars up to now
        return json_response(sim.klines_rest_body(symbol, end_time, limit))

    app = web.Application()
    app.router.add_get("/fapi/v1/klines", counted(stats, klines))
    return app
