"""Pure parser for Polymarket's RTDS crypto price frames (Chainlink, the resolution source, and Binance).

Envelope `{"topic", "type", "timestamp", "payload"}`; a payload is one price
`{"symbol", "timestamp", "value"}` or the initial dump `{"symbol", "data": [{"timestamp", "value"}, ...]}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from core.errors import ParseError

TOPIC_CHAINLINK = "crypto_prices_chainlink"
TOPIC_BINANCE = "crypto_prices"
_KEEPALIVE = frozenset(("", "ping", "pong", "PING", "PONG"))


# records are not frozen: a frozen dataclass costs ~6x more to build, and a window parses ~60k of them
@dataclass(slots=True)
class IndexPrice:
    topic: str  # TOPIC_CHAINLINK or TOPIC_BINANCE: kept apart, only Chainlink resolves markets
    symbol: str  # as sent: "btc/usd" (Chainlink) or "btcusdt" (Binance)
    timestamp: float  # source time, unix seconds
    value: float


def asset_of_rtds_symbol(symbol: str) -> str:
    """Map "btc/usd" or "btcusdt" to "BTC"."""
    return symbol.split("/", 1)[0].upper().removesuffix("USDT")


def _price(topic: str, symbol: str, ts: object, value: object) -> IndexPrice:
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"price {value!r}")
    return IndexPrice(topic, symbol, float(ts) / 1000.0, v)  # type: ignore[arg-type]


def handle(raw: str | bytes) -> list[IndexPrice]:
    """Parse one RTDS frame; keepalive text gives no updates."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if raw.strip() in _KEEPALIVE:
        return []
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"rtds frame is not JSON: {exc}") from None
    if type(msg) is not dict:
        raise ParseError("rtds frame is not a JSON object")
    topic = msg.get("topic")
    if topic != TOPIC_CHAINLINK and topic != TOPIC_BINANCE:
        raise ParseError(f"unknown rtds topic {topic!r}")
    try:
        payload = msg["payload"]
        symbol = str(payload["symbol"]).lower()
        if "data" in payload:
            return [_price(topic, symbol, p["timestamp"], p["value"]) for p in payload["data"]]
        return [_price(topic, symbol, payload["timestamp"], payload["value"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ParseError(f"bad rtds payload: {exc!r}") from None
