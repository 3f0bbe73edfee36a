"""Pure parser for the Polymarket CLOB market channel, and the L2 book it maintains per token.

A frame is `PONG`, one event object, or a JSON array of events (the initial snapshot). All numbers
arrive as strings, prices sometimes without a leading zero (".48"); levels come in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from core.errors import ParseError

BUY = "BUY"  # bid side
SELL = "SELL"  # ask side
_EPS = 1e-9


# records are not frozen: a frozen dataclass costs ~6x more to build, and a window parses ~60k of them
@dataclass(slots=True)
class BookSnapshot:
    asset_id: str
    market: str  # condition id
    bids: tuple[tuple[float, float], ...]  # as received; PolymarketBook sorts
    asks: tuple[tuple[float, float], ...]
    timestamp: float  # venue time, unix seconds (0.0 when absent)
    tick_size: float | None


@dataclass(slots=True)
class LevelChange:
    """One price level's new total size (0 removes it); best_bid/best_ask after it when the venue says."""

    asset_id: str
    market: str
    side: str  # BUY (bids) or SELL (asks)
    price: float
    size: float
    best_bid: float | None
    best_ask: float | None
    timestamp: float


@dataclass(slots=True)
class TickSizeChange:
    asset_id: str
    market: str
    old_tick_size: float
    new_tick_size: float
    timestamp: float


@dataclass(slots=True)
class LastTrade:
    asset_id: str
    market: str
    price: float
    size: float
    side: str  # taker side
    timestamp: float


@dataclass(slots=True)
class BestBidAsk:
    asset_id: str
    market: str
    best_bid: float
    best_ask: float
    timestamp: float


@dataclass(slots=True)
class NewMarket:
    market: str
    asset_ids: tuple[str, ...]
    outcomes: tuple[str, ...]
    slug: str
    timestamp: float


@dataclass(slots=True)
class MarketResolved:
    market: str
    asset_ids: tuple[str, ...]
    winning_asset_id: str
    winning_outcome: str
    timestamp: float


@dataclass(slots=True)
class UnknownEvent:
    """A well-formed event whose `event_type` this parser does not know (counted, then skipped)."""

    event_type: str


PolymarketUpdate = (
    BookSnapshot | LevelChange | TickSizeChange | LastTrade | BestBidAsk | NewMarket | MarketResolved | UnknownEvent
)

_PARSE_FAILURES = (KeyError, TypeError, ValueError, IndexError, AttributeError)


def _ts(ev: dict) -> float:
    ts = ev.get("timestamp")
    return float(ts) / 1000.0 if ts else 0.0


def _market(ev: dict) -> str:
    return str(ev.get("market", ""))


def _asset_ids(ev: dict) -> tuple[str, ...]:
    return tuple(str(a) for a in ev.get("assets_ids") or ())


def _opt_price(value: object) -> float | None:
    return None if value is None or value == "" else float(value)  # type: ignore[arg-type]


def _levels(rows: list | None) -> tuple[tuple[float, float], ...]:
    if not rows:
        return ()
    return tuple((float(r["price"]), float(r["size"])) for r in rows)


def _side(value: object) -> str:
    if value in (BUY, SELL):  # the venue's own spelling: skip the normalising below
        return value  # type: ignore[return-value]
    side = str(value).upper()
    if side not in (BUY, SELL):
        raise ValueError(f"side {value!r}")
    return side


def _price_change(ev: dict, out: list) -> None:
    market = str(ev.get("market", ""))
    ts = _ts(ev)
    if "price_changes" in ev:
        for c in ev["price_changes"]:
            bb, ba = c.get("best_bid"), c.get("best_ask")
            out.append(
                LevelChange(
                    str(c["asset_id"]),
                    market,
                    _side(c["side"]),
                    float(c["price"]),
                    float(c["size"]),
                    None if bb is None or bb == "" else float(bb),  # _opt_price, inlined: ~10 per frame
                    None if ba is None or ba == "" else float(ba),
                    ts,
                )
            )
    else:  # legacy schema (before 2025-09-15): one asset at the top level, no best bid/ask
        asset_id = str(ev["asset_id"])
        for c in ev["changes"]:
            side, price, size = _side(c["side"]), float(c["price"]), float(c["size"])
            out.append(LevelChange(asset_id, market, side, price, size, None, None, ts))


def _book(ev: dict, out: list) -> None:
    bids = ev["bids"] if "bids" in ev else ev["buys"]
    asks = ev["asks"] if "asks" in ev else ev["sells"]
    out.append(
        BookSnapshot(
            str(ev["asset_id"]),
            _market(ev),
            _levels(bids),
            _levels(asks),
            _ts(ev),
            _opt_price(ev.get("tick_size")),
        )
    )


# each parser reads the fields in the record's order, so a frame with several bad fields names the same one
def _last_trade_price(ev: dict, out: list) -> None:
    asset_id, market, price = str(ev["asset_id"]), _market(ev), float(ev["price"])
    size = float(ev.get("size") or 0.0)
    out.append(LastTrade(asset_id, market, price, size, str(ev.get("side", "")), _ts(ev)))


def _best_bid_ask(ev: dict, out: list) -> None:
    asset_id, market = str(ev["asset_id"]), _market(ev)
    out.append(BestBidAsk(asset_id, market, float(ev["best_bid"]), float(ev["best_ask"]), _ts(ev)))


def _tick_size_change(ev: dict, out: list) -> None:
    asset_id, market, old = str(ev["asset_id"]), _market(ev), float(ev["old_tick_size"])
    out.append(TickSizeChange(asset_id, market, old, float(ev["new_tick_size"]), _ts(ev)))


def _market_resolved(ev: dict, out: list) -> None:
    market, asset_ids, winner = str(ev["market"]), _asset_ids(ev), str(ev["winning_asset_id"])
    out.append(MarketResolved(market, asset_ids, winner, str(ev.get("winning_outcome", "")), _ts(ev)))


def _new_market(ev: dict, out: list) -> None:
    market, asset_ids = str(ev["market"]), _asset_ids(ev)
    outcomes = tuple(str(o) for o in ev.get("outcomes") or ())
    out.append(NewMarket(market, asset_ids, outcomes, str(ev.get("slug", "")), _ts(ev)))


# event_type -> the parser that appends its records
_PARSERS: dict[str, Callable[[dict, list], None]] = {
    "price_change": _price_change,
    "book": _book,
    "last_trade_price": _last_trade_price,
    "best_bid_ask": _best_bid_ask,
    "tick_size_change": _tick_size_change,
    "market_resolved": _market_resolved,
    "new_market": _new_market,
}


def _event(ev: dict, out: list) -> None:
    kind = ev["event_type"]
    parse = _PARSERS.get(kind) if type(kind) is str else None  # an unhashable type is unknown, not malformed
    if parse is None:
        out.append(UnknownEvent(str(kind)))
    else:
        parse(ev, out)


def handle(raw: str | bytes) -> list[PolymarketUpdate]:
    """Parse one market-channel frame into updates; `PONG` gives none."""
    if raw == "PONG" or raw == b"PONG":
        return []
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"polymarket frame is not JSON: {exc}") from None
    events = msg if type(msg) is list else [msg]
    out: list[PolymarketUpdate] = []
    try:
        for ev in events:
            _event(ev, out)
    except _PARSE_FAILURES as exc:
        raise ParseError(f"bad polymarket event: {exc!r}") from None
    return out


class PolymarketBook:
    """The L2 book of one outcome token: price -> size per side, sorted views built lazily."""

    __slots__ = (
        "_ask_best",
        "_ask_best_stale",
        "_asks",
        "_bid_best",
        "_bid_best_stale",
        "_bids",
        "_sorted_asks",
        "_sorted_bids",
        "last_trade_price",
        "mismatches",
        "needs_resync",
        "tick_size",
        "token_id",
        "updated_at",
    )

    def __init__(self, token_id: str, tick_size: float = 0.01) -> None:
        self.token_id = token_id
        self.tick_size = tick_size
        self.updated_at = 0.0
        self.last_trade_price: float | None = None
        # no snapshot yet: the book cannot be trusted until the first `book` event
        self.needs_resync = True
        self.mismatches = 0
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._sorted_bids: list[tuple[float, float]] | None = None
        self._sorted_asks: list[tuple[float, float]] | None = None
        self._bid_best: float | None = None
        self._ask_best: float | None = None
        self._bid_best_stale = False
        self._ask_best_stale = False

    def apply_snapshot(
        self,
        bids: tuple[tuple[float, float], ...],
        asks: tuple[tuple[float, float], ...],
        t: float,
        tick_size: float | None = None,
    ) -> None:
        """Replace both sides with a full snapshot; this is what clears `needs_resync`."""
        self._bids = {p: s for p, s in bids if s > 0.0}
        self._asks = {p: s for p, s in asks if s > 0.0}
        self._sorted_bids = self._sorted_asks = None
        self._bid_best_stale = self._ask_best_stale = True
        if tick_size:
            self.tick_size = tick_size
        self.needs_resync = False
        self.updated_at = t

    def set_level(self, side: str, price: float, size: float, t: float) -> None:
        """Set the total size resting at `price` on one side; size 0 removes the level."""
        if side == BUY:
            levels = self._bids
            self._sorted_bids = None
            if size > 0.0:
                levels[price] = size
                if not self._bid_best_stale and (self._bid_best is None or price > self._bid_best):
                    self._bid_best = price
            elif levels.pop(price, None) is not None and price == self._bid_best:
                self._bid_best_stale = True
        else:
            levels = self._asks
            self._sorted_asks = None
            if size > 0.0:
                levels[price] = size
                if not self._ask_best_stale and (self._ask_best is None or price < self._ask_best):
                    self._ask_best = price
            elif levels.pop(price, None) is not None and price == self._ask_best:
                self._ask_best_stale = True
        self.updated_at = t

    def check_top(self, best_bid: float | None, best_ask: float | None) -> bool:
        """Compare the venue's stated top of book with ours; True when this starts a mismatch.

        The venue writes an empty side as best_bid 0 and best_ask 0 or 1.
        """
        ok = True
        if best_bid is not None:
            ours = self.best_bid
            ok = abs(best_bid - ours) < _EPS if ours is not None else best_bid < _EPS
        if ok and best_ask is not None:
            ours = self.best_ask
            ok = abs(best_ask - ours) < _EPS if ours is not None else (best_ask < _EPS or best_ask > 1.0 - _EPS)
        if ok or self.needs_resync:
            return False
        self.needs_resync = True
        self.mismatches += 1
        return True

    @property
    def best_bid(self) -> float | None:
        if self._bid_best_stale:
            self._bid_best = max(self._bids) if self._bids else None
            self._bid_best_stale = False
        return self._bid_best

    @property
    def best_ask(self) -> float | None:
        if self._ask_best_stale:
            self._ask_best = min(self._asks) if self._asks else None
            self._ask_best_stale = False
        return self._ask_best

    @property
    def mid(self) -> float | None:
        bid, ask = self.best_bid, self.best_ask
        if bid is None or ask is None:
            return None
        return (bid + ask) / 2.0

    def imbalance(self, levels: int) -> float:
        """(bid size - ask size) / total over the best `levels` of each side, in [-1, 1]; 0 when empty."""
        bid = sum(s for _, s in self.bids[:levels])
        ask = sum(s for _, s in self.asks[:levels])
        return (bid - ask) / (bid + ask) if bid + ask > 0.0 else 0.0

    @property
    def bids(self) -> list[tuple[float, float]]:
        """(price, size) best (highest) first; a shared cached list, so do not modify it."""
        if self._sorted_bids is None:
            self._sorted_bids = sorted(self._bids.items(), reverse=True)
        return self._sorted_bids

    @property
    def asks(self) -> list[tuple[float, float]]:
        """(price, size) best (lowest) first; a shared cached list, so do not modify it."""
        if self._sorted_asks is None:
            self._sorted_asks = sorted(self._asks.items())
        return self._sorted_asks
