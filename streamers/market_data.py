"""The state the engine reads: every frame goes through its feed's pure parser and lands here.

`handle` never raises on bad input: a malformed frame is counted in `rejected` and skipped, a
well-formed Polymarket event of an unknown type in `unknown`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict, deque

import orjson

from core.errors import ParseError
from core.frames import (
    ASSETS,
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SOURCE,
    FEED_SPOT,
    Frame,
    MarketInfo,
)
from streamers import binance, polymarket, rtds
from streamers.futures_state import FuturesState
from streamers.polymarket import PolymarketBook

CHAINLINK_HISTORY_S = 40 * 60.0  # covers a whole 15-minute window plus the next one and slack
CHAINLINK_HISTORY_MAX = 4800  # hard cap: two updates per second over that span
MARKET_RETENTION_S = 3600.0  # ended markets (and their books) are dropped an hour after their end
RESOLVED_KEPT = 512  # resolved outcomes remembered (about 32 hours of four assets)


class MarketData:
    """Books, futures state, index prices and markets, built from frames of every feed."""

    def __init__(self, assets: tuple[str, ...] = ASSETS) -> None:
        self.assets = tuple(assets)
        self.messages = 0
        self.rejected = 0
        self.source_info: dict | None = None  # a recording's `source` header: what produced the data
        self.unknown = 0  # well-formed Polymarket events of an unknown event_type
        self.book_mismatches = 0  # times a book disagreed with the venue's stated best bid/ask
        self.last_reject: str | None = None  # the reason for the latest rejection, for logs
        self.forget()
        self._handlers = {
            FEED_FUTURES_MARKET: self._on_futures,
            FEED_FUTURES_PUBLIC: self._on_futures,
            FEED_SPOT: self._on_spot,
            FEED_POLYMARKET: self._on_polymarket,
            FEED_RTDS: self._on_rtds,
            FEED_DISCOVERY: self._on_discovery,
            FEED_SOURCE: self._on_source,
        }

    def forget(self) -> None:
        """Drop every market, book and price, keeping the counters: the frames that follow start afresh
        (a new episode of a library replay, whose time may lie before what was seen so far)."""
        self.markets: dict[str, MarketInfo] = {}
        self._books: dict[str, PolymarketBook] = {}
        self._futures = {a: FuturesState(a) for a in self.assets}
        self._spot: dict[str, float] = {}
        self._rtds_binance: dict[str, float] = {}
        self._chainlink: dict[str, deque[tuple[float, float]]] = {
            a: deque(maxlen=CHAINLINK_HISTORY_MAX) for a in self.assets
        }
        self._resolved: OrderedDict[str, str] = OrderedDict()
        self._symbol_asset: dict[str, str | None] = {}  # "btcusdt" -> "BTC"; None when not configured

    # ---- the engine's read API -----------------------------------------------------------------

    def book(self, token_id: str) -> PolymarketBook | None:
        return self._books.get(token_id)

    def futures(self, asset: str) -> FuturesState:
        return self._futures[asset]

    def spot_price(self, asset: str) -> float | None:
        return self._spot.get(asset)

    def rtds_binance_price(self, asset: str) -> float | None:
        """RTDS `crypto_prices` (Binance-sourced): kept apart because it does not resolve markets."""
        return self._rtds_binance.get(asset)

    def chainlink_price(self, asset: str) -> float | None:
        hist = self._chainlink.get(asset)
        return hist[-1][1] if hist else None

    def chainlink_latest_ts(self, asset: str) -> float | None:
        hist = self._chainlink.get(asset)
        return hist[-1][0] if hist else None

    def chainlink_price_at(self, asset: str, ts: float) -> float | None:
        """The last Chainlink price whose source timestamp is <= ts, within the kept history."""
        hist = self._chainlink.get(asset)
        if not hist:
            return None
        i = bisect_right(hist, ts, key=lambda entry: entry[0])
        return hist[i - 1][1] if i else None

    def resolved_outcome(self, condition_id: str) -> str | None:
        return self._resolved.get(condition_id)

    def restate(self, t: float, since: float | None = None) -> list[Frame]:
        """Frames at time `t`, in the venues' own formats, that rebuild this state in a fresh MarketData.

        What a live run receives when it starts: the discovery list of the markets not yet ended, a
        `book` snapshot of each of their tokens, each asset's 1m klines and the Chainlink prices from
        `since` on (the one before it included, so the price at `since` is known; default: the earliest
        open of those markets, so each one's price to beat is known). A rotated recording starts with
        these, so each of its files replays on its own.
        """
        from streamers.live import binance_symbol, chainlink_symbol, klines_frame_text

        open_markets = [info for info in self.markets.values() if info.end > t]
        if since is None:
            since = min((info.start for info in open_markets), default=t)
        frames = [Frame(t, FEED_DISCOVERY, orjson.dumps([info.to_dict() for info in open_markets]).decode())]
        events = []
        for info in open_markets:
            for token in (info.token_up, info.token_down):
                book = self._books.get(token)
                if book is None or book.needs_resync:
                    continue
                events.append({
                    "event_type": "book", "asset_id": token, "market": info.condition_id,
                    "bids": [{"price": repr(p), "size": repr(s)} for p, s in book.bids],
                    "asks": [{"price": repr(p), "size": repr(s)} for p, s in book.asks],
                    "timestamp": str(int(book.updated_at * 1000)), "tick_size": repr(book.tick_size),
                })
                if book.last_trade_price is not None:
                    events.append({
                        "event_type": "last_trade_price", "asset_id": token, "market": info.condition_id,
                        "price": repr(book.last_trade_price), "timestamp": str(int(book.updated_at * 1000)),
                    })
        if events:
            frames.append(Frame(t, FEED_POLYMARKET, orjson.dumps(events).decode()))
        ms = int(t * 1000)
        for asset in self.assets:
            bars = self._futures[asset].bars
            if bars:  # a REST klines body: open time, o, h, l, c, volume, close time, ..., taker buy volume
                rows = [[round((ct - 59.999) * 1000), str(c), str(c), str(c), str(c), "0", round(ct * 1000), "0", 0,
                         "0", "0", "0"] for ct, c in bars]
                frames.append(Frame(t, FEED_FUTURES_MARKET, klines_frame_text(asset, orjson.dumps(rows).decode())))
            hist = self._chainlink[asset]
            if hist:
                first = bisect_right(hist, since, key=lambda e: e[0])
                points = [{"timestamp": round(ts * 1000), "value": v} for ts, v in list(hist)[max(0, first - 1):]]
                frames.append(Frame(t, FEED_RTDS, orjson.dumps({
                    "topic": rtds.TOPIC_CHAINLINK, "type": "subscribe", "timestamp": ms,
                    "payload": {"symbol": chainlink_symbol(asset), "data": points},
                }).decode()))
            price = self._rtds_binance.get(asset)
            if price is not None:
                frames.append(Frame(t, FEED_RTDS, orjson.dumps({
                    "topic": rtds.TOPIC_BINANCE, "type": "update", "timestamp": ms,
                    "payload": {"symbol": binance_symbol(asset), "timestamp": ms, "value": price},
                }).decode()))
        return frames

    # ---- ingestion -----------------------------------------------------------------------------

    def handle(self, frame: Frame) -> None:
        """Parse one frame with its feed's parser and apply it; bad input is counted, never raised."""
        self.messages += 1
        handler = self._handlers.get(frame.feed)
        if handler is None:
            self._reject(f"unknown feed {frame.feed!r}")
            return
        try:
            handler(frame.msg, frame.t)
        except ParseError as exc:
            self._reject(str(exc))

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_reject = reason

    def _asset(self, symbol: str) -> str | None:
        try:
            return self._symbol_asset[symbol]
        except KeyError:
            asset = binance.asset_of_symbol(symbol)
            found = asset if asset in self._futures else None
            self._symbol_asset[symbol] = found
            return found

    def _on_futures(self, msg: str, t: float) -> None:
        for update in binance.handle_futures(msg):
            asset = self._asset(update.symbol)
            if asset is not None:
                self._futures[asset].apply(update, t)

    def _on_spot(self, msg: str, t: float) -> None:
        for trade in binance.handle_spot(msg):
            asset = self._asset(trade.symbol)
            if asset is not None:
                self._spot[asset] = trade.price

    def _book_for(self, token_id: str) -> PolymarketBook:
        book = self._books.get(token_id)
        if book is None:
            book = self._books[token_id] = PolymarketBook(token_id)
        return book

    def _on_polymarket(self, msg: str, t: float) -> None:
        # stated tops are checked once the whole frame is applied, against the last one given per token,
        # which holds whether the venue states them after each change or after the whole message
        stated: dict[str, tuple[float | None, float | None]] = {}
        for u in polymarket.handle(msg):
            if type(u) is polymarket.LevelChange:
                self._book_for(u.asset_id).set_level(u.side, u.price, u.size, t)
                if u.best_bid is not None or u.best_ask is not None:
                    stated[u.asset_id] = (u.best_bid, u.best_ask)
            elif isinstance(u, polymarket.BookSnapshot):
                self._book_for(u.asset_id).apply_snapshot(u.bids, u.asks, t, u.tick_size)
                stated.pop(u.asset_id, None)
            elif isinstance(u, polymarket.BestBidAsk):
                if self._book_for(u.asset_id).check_top(u.best_bid, u.best_ask):
                    self.book_mismatches += 1
            elif isinstance(u, polymarket.LastTrade):
                self._book_for(u.asset_id).last_trade_price = u.price
            elif isinstance(u, polymarket.TickSizeChange):
                book = self._book_for(u.asset_id)
                book.tick_size = u.new_tick_size
                book.updated_at = t
            elif isinstance(u, polymarket.MarketResolved):
                self._resolve(u)
            elif isinstance(u, polymarket.UnknownEvent):
                self.unknown += 1
            # NewMarket: discovery frames are the source of markets; the event only says one exists
        for asset_id, (best_bid, best_ask) in stated.items():
            if self._books[asset_id].check_top(best_bid, best_ask):
                self.book_mismatches += 1

    def _resolve(self, u: polymarket.MarketResolved) -> None:
        outcome: str | None = u.winning_outcome if u.winning_outcome in ("Up", "Down") else None
        info = self.markets.get(u.market)
        if outcome is None and info is not None:
            if u.winning_asset_id == info.token_up:
                outcome = "Up"
            elif u.winning_asset_id == info.token_down:
                outcome = "Down"
        if outcome is None:
            raise ParseError(f"market_resolved for {u.market} names no Up/Down winner")
        self._resolved[u.market] = outcome
        while len(self._resolved) > RESOLVED_KEPT:
            self._resolved.popitem(last=False)

    def _on_rtds(self, msg: str, t: float) -> None:
        for p in rtds.handle(msg):
            asset = rtds.asset_of_rtds_symbol(p.symbol)
            if asset not in self._futures:
                continue
            if p.topic == rtds.TOPIC_BINANCE:
                self._rtds_binance[asset] = p.value
                continue
            hist = self._chainlink[asset]
            if hist and p.timestamp <= hist[-1][0]:
                if p.timestamp == hist[-1][0]:
                    hist[-1] = (p.timestamp, p.value)
                continue  # older than what we hold (a re-sent dump): history only moves forward
            hist.append((p.timestamp, p.value))
            while hist[0][0] < p.timestamp - CHAINLINK_HISTORY_S:
                hist.popleft()

    def _on_source(self, msg: str, t: float) -> None:
        try:
            info = orjson.loads(msg)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"bad source header: {exc}") from None
        if not isinstance(info, dict):
            raise ParseError("bad source header: not a JSON object")
        self.source_info = info

    def _on_discovery(self, msg: str, t: float) -> None:
        try:
            rows = orjson.loads(msg)
            infos = [MarketInfo.from_dict(row) for row in rows]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ParseError(f"bad discovery frame: {exc!r}") from None
        for info in infos:
            self.markets[info.condition_id] = info
        for cid, info in list(self.markets.items()):
            if info.end < t - MARKET_RETENTION_S:
                del self.markets[cid]
                self._books.pop(info.token_up, None)
                self._books.pop(info.token_down, None)
