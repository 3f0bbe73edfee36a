"""Pure parsers for Binance combined-stream frames: USD-M futures (/market, /public) and spot.

Every parser takes the raw text of one frame and returns typed updates; anything malformed or
unrecognised raises `ParseError`, which `MarketData` counts as rejected and skips.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from core.errors import ParseError


# records are not frozen: a frozen dataclass costs ~6x more to build, and a window parses ~60k of them
@dataclass(slots=True)
class AggTrade:
    symbol: str  # lowercase stream symbol, e.g. "btcusdt"
    price: float
    qty: float
    is_sell: bool  # m=true: the buyer was the maker, so the taker (aggressor) sold
    trade_time: float  # exchange trade time, unix seconds


@dataclass(slots=True)
class Kline:
    symbol: str
    open_time: float  # unix seconds
    close_time: float  # unix seconds (Binance's xx:59.999)
    open: float
    high: float
    low: float
    close: float
    volume: float  # base volume
    taker_buy_volume: float  # base volume bought by takers
    closed: bool  # x=true: the final update of the bar


@dataclass(slots=True)
class KlineHistory:
    """The warm-up REST /fapi/v1/klines body; its last row may still be open (close_time after now)."""

    symbol: str
    bars: tuple[Kline, ...]


@dataclass(slots=True)
class MarkPrice:
    symbol: str
    mark_price: float
    index_price: float
    funding_rate: float


@dataclass(slots=True)
class Liquidation:
    symbol: str
    side: str  # "SELL": a long was liquidated; "BUY": a short was
    price: float
    qty: float


@dataclass(slots=True)
class DepthSnapshot:
    """A partial-book (top N) snapshot: levels best first as (price, qty)."""

    symbol: str
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@dataclass(slots=True)
class BookTicker:
    symbol: str
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


@dataclass(slots=True)
class SpotTrade:
    symbol: str
    price: float
    qty: float
    is_sell: bool
    trade_time: float


FuturesUpdate = AggTrade | Kline | KlineHistory | MarkPrice | Liquidation | DepthSnapshot | BookTicker

_PARSE_FAILURES = (KeyError, TypeError, ValueError, IndexError, AttributeError)


def asset_of_symbol(symbol: str) -> str:
    """Map a Binance symbol ("btcusdt", "BTCUSDT") to the bot's asset name ("BTC")."""
    return symbol.upper().removesuffix("USDT")


def _levels(rows: list) -> tuple[tuple[float, float], ...]:
    return tuple([(float(p), float(q)) for p, q in rows])  # a list first: tuple(genexpr) is slower


def _combined(raw: str | bytes) -> tuple[str, object] | None:
    """Unwrap `{"stream", "data"}`; None for a subscription ack, which carries no data."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"binance frame is not JSON: {exc}") from None
    if type(msg) is not dict:
        raise ParseError("binance frame is not a JSON object")
    stream = msg.get("stream")
    if stream is None:
        if "result" in msg and "id" in msg:
            return None
        if "code" in msg:
            raise ParseError(f"binance error frame: {msg.get('code')} {msg.get('msg')}")
        raise ParseError("binance frame has no stream")
    if type(stream) is not str or "@" not in stream or "data" not in msg:
        raise ParseError(f"binance frame has a bad stream or no data: {stream!r}")
    return stream, msg["data"]


def _kline_row(symbol: str, row: list) -> Kline:
    return Kline(
        symbol=symbol,
        open_time=row[0] / 1000.0,
        close_time=row[6] / 1000.0,
        open=float(row[1]),
        high=float(row[2]),
        low=float(row[3]),
        close=float(row[4]),
        volume=float(row[5]),
        taker_buy_volume=float(row[9]),
        closed=True,
    )


def _futures_event(stream: str, symbol: str, data: dict) -> FuturesUpdate:
    kind = data["e"]
    if kind == "aggTrade":
        return AggTrade(symbol, float(data["p"]), float(data["q"]), data["m"] is True, data["T"] / 1000.0)
    if kind == "depthUpdate":
        # partial-book streams (`@depth5`, `@depth20@100ms`) are snapshots; a diff stream needs a local book
        if not stream.partition("@depth")[2][:1].isdigit():
            raise ParseError(f"diff-depth stream {stream!r} is not supported (use @depth5/@depth20)")
        return DepthSnapshot(symbol, _levels(data["b"]), _levels(data["a"]))
    if kind == "bookTicker":
        return BookTicker(symbol, float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]))
    if kind == "kline":
        k = data["k"]
        return Kline(
            symbol=symbol,
            open_time=k["t"] / 1000.0,
            close_time=k["T"] / 1000.0,
            open=float(k["o"]),
            high=float(k["h"]),
            low=float(k["l"]),
            close=float(k["c"]),
            volume=float(k["v"]),
            taker_buy_volume=float(k["V"]),
            closed=k["x"] is True,
        )
    if kind == "markPriceUpdate":
        return MarkPrice(symbol, float(data["p"]), float(data["i"]), float(data["r"]))
    if kind == "forceOrder":
        o = data["o"]
        return Liquidation(symbol, str(o["S"]), float(o["ap"]), float(o["q"]))
    raise ParseError(f"unknown binance futures event {kind!r} on {stream!r}")


def handle_futures(raw: str | bytes) -> list[FuturesUpdate]:
    """Parse one frame of the futures /market or /public combined socket (or the warm-up wrapper)."""
    unwrapped = _combined(raw)
    if unwrapped is None:
        return []
    stream, data = unwrapped
    symbol = stream[: stream.index("@")]
    try:
        if type(data) is dict:
            return [_futures_event(stream, symbol, data)]
        if type(data) is list and stream.endswith("@klines_rest"):
            return [KlineHistory(symbol, tuple(_kline_row(symbol, row) for row in data))]
    except _PARSE_FAILURES as exc:
        raise ParseError(f"bad binance futures payload on {stream!r}: {exc!r}") from None
    raise ParseError(f"unexpected binance futures data on {stream!r}")


def handle_spot(raw: str | bytes) -> list[SpotTrade]:
    """Parse one frame of the spot combined socket (`@aggTrade` or `@trade`)."""
    unwrapped = _combined(raw)
    if unwrapped is None:
        return []
    stream, data = unwrapped
    try:
        kind = data["e"]
        if kind == "aggTrade" or kind == "trade":
            symbol = stream[: stream.index("@")]
            return [SpotTrade(symbol, float(data["p"]), float(data["q"]), data["m"] is True, data["T"] / 1000.0)]
    except _PARSE_FAILURES as exc:
        raise ParseError(f"bad binance spot payload on {stream!r}: {exc!r}") from None
    raise ParseError(f"unknown binance spot event {kind!r} on {stream!r}")
