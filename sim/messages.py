"""The venues' own message texts, formatted exactly as they send them (strings where they send strings).

Hot-path messages are f-strings (the simulator emits tens of thousands a second); rare ones and
REST bodies go through json.dumps with compact separators.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sim.model import AssetParams

FEE_SCHEDULE = {"exponent": 1, "rate": 0.07, "takerOnly": True, "rebateRate": 0.2}
TAKER_BASE_FEE_BPS = 1000
MIN_ORDER_SIZE = 5


@dataclass(slots=True)  # not frozen: built for every message, and frozen __init__ costs ~6x
class SimEvent:
    t: float  # sim time, unix seconds
    feed: str  # one of core.frames.FEEDS except "discovery"
    msg: str  # exact text the venue would send on that socket
    stream: str | None  # Binance stream name (e.g. "btcusdt@aggTrade") for routing
    asset_ids: tuple[str, ...] = ()  # Polymarket token ids this message concerns
    symbol: str | None = None  # RTDS symbol, e.g. "btc/usd"


# what the simulator's emitters append for a second: (time, message or None, action to run at that time)
Entry = tuple[float, SimEvent | None, Callable[[], None] | None]


def _pm_price_text(milli: int) -> str:
    if milli <= 0:
        return "0"
    if milli >= 1000:
        return "1"
    return f"0.{milli:03d}".rstrip("0")


PM_PRICE: tuple[str, ...] = tuple(_pm_price_text(i) for i in range(1001))  # thousandths -> "0.53"


def pm_size(size: float) -> str:
    """Share sizes as Polymarket prints them: up to 2 decimals, no trailing zeros ("30", "219.5")."""
    s = f"{size:.2f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def pm_hash(n: int) -> str:
    """A stable 40-hex-digit book hash (the venue's is a content hash; ours only has to look like one)."""
    return f"{((n + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC8341082276B) & ((1 << 160) - 1):040x}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True, frozen=True)
class MarketMeta:
    """The static description of one 15-minute Up/Down market."""

    asset: str
    name: str  # "Bitcoin"
    slug: str  # "btc-updown-15m-1767225600"
    market_id: str  # Gamma numeric id, as a string
    event_id: str
    condition_id: str  # "0x" + 64 hex
    question_id: str
    token_up: str
    token_down: str
    start: int
    end: int
    listed: int  # unix second the market appeared

    @property
    def question(self) -> str:
        a = datetime.fromtimestamp(self.start, UTC)
        b = datetime.fromtimestamp(self.end, UTC)
        return f"{self.name} Up or Down - {a:%B} {a.day}, {a:%H:%M}-{b:%H:%M} UTC"

    @property
    def description(self) -> str:
        return (
            f'This market will resolve to "Up" if the {self.name} price at the end of the time range '
            "specified in the title is greater than or equal to the price at the beginning of that range. "
            'Otherwise, it will resolve to "Down". The resolution source for this market is information '
            f"from Chainlink, specifically the {self.asset}/USD data stream."
        )

    @property
    def resolution_source(self) -> str:
        return f"https://data.chain.link/streams/{self.asset.lower()}-usd"


def compact_json(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------- Binance futures and spot


def _levels(levels: list[tuple[str, str]]) -> str:
    return ",".join(f'["{p}","{q}"]' for p, q in levels)


def futures_agg_trade(
    a: AssetParams, e_ms: int, agg_id: int, price: str, qty: str, first: int, last: int, t_ms: int, maker: bool
) -> str:
    m = "true" if maker else "false"
    return (
        f'{{"stream":"{a.symbol}@aggTrade","data":{{"e":"aggTrade","E":{e_ms},"a":{agg_id},"s":"{a.symbol.upper()}",'
        f'"p":"{price}","q":"{qty}","nq":"{qty}","f":{first},"l":{last},"T":{t_ms},"m":{m}}}}}'
    )


def spot_agg_trade(
    a: AssetParams, e_ms: int, agg_id: int, price: str, qty: str, first: int, last: int, t_ms: int, maker: bool
) -> str:
    m = "true" if maker else "false"
    return (
        f'{{"stream":"{a.symbol}@aggTrade","data":{{"e":"aggTrade","E":{e_ms},"s":"{a.symbol.upper()}","a":{agg_id},'
        f'"p":"{price}","q":"{qty}","f":{first},"l":{last},"T":{t_ms},"m":{m},"M":true}}}}'
    )


def futures_depth5(
    a: AssetParams,
    e_ms: int,
    t_ms: int,
    first_id: int,
    last_id: int,
    prev_id: int,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
) -> str:
    return (
        f'{{"stream":"{a.symbol}@depth5@100ms","data":{{"e":"depthUpdate","E":{e_ms},"T":{t_ms},'
        f'"s":"{a.symbol.upper()}","U":{first_id},"u":{last_id},"pu":{prev_id},'
        f'"b":[{_levels(bids)}],"a":[{_levels(asks)}]}}}}'
    )


def futures_book_ticker(
    a: AssetParams, update_id: int, e_ms: int, t_ms: int, bid: str, bid_qty: str, ask: str, ask_qty: str
) -> str:
    return (
        f'{{"stream":"{a.symbol}@bookTicker","data":{{"e":"bookTicker","u":{update_id},"E":{e_ms},"T":{t_ms},'
        f'"s":"{a.symbol.upper()}","b":"{bid}","B":"{bid_qty}","a":"{ask}","A":"{ask_qty}"}}}}'
    )


def futures_mark_price(
    a: AssetParams, e_ms: int, mark: str, index: str, settle: str, rate: str, next_funding_ms: int
) -> str:
    return (
        f'{{"stream":"{a.symbol}@markPrice@1s","data":{{"e":"markPriceUpdate","E":{e_ms},"s":"{a.symbol.upper()}",'
        f'"p":"{mark}","i":"{index}","P":"{settle}","r":"{rate}","T":{next_funding_ms}}}}}'
    )


def futures_force_order(a: AssetParams, e_ms: int, side: str, qty: str, price: str, avg: str) -> str:
    return (
        f'{{"stream":"{a.symbol}@forceOrder","data":{{"e":"forceOrder","E":{e_ms},"o":{{"s":"{a.symbol.upper()}",'
        f'"S":"{side}","o":"LIMIT","f":"IOC","q":"{qty}","p":"{price}","ap":"{avg}","X":"FILLED",'
        f'"l":"{qty}","z":"{qty}","T":{e_ms}}}}}}}'
    )


@dataclass(slots=True)
class KlineBar:
    """One 1-minute futures bar; prices and volumes already as Binance's strings where they are strings."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    taker_buy_volume: float
    taker_buy_quote: float
    trades: int
    first_id: int
    last_id: int


def _bar_strings(a: AssetParams, bar: KlineBar) -> tuple[str, str, str, str, str, str, str, str]:
    pd, qd = a.price_decimals, a.qty_decimals
    return (
        f"{bar.open:.{pd}f}",
        f"{bar.high:.{pd}f}",
        f"{bar.low:.{pd}f}",
        f"{bar.close:.{pd}f}",
        f"{bar.volume:.{qd}f}",
        f"{bar.quote_volume:.5f}",
        f"{bar.taker_buy_volume:.{qd}f}",
        f"{bar.taker_buy_quote:.5f}",
    )


def futures_kline(a: AssetParams, e_ms: int, bar: KlineBar, closed: bool) -> str:
    o, h, lo, c, v, q, bv, bq = _bar_strings(a, bar)
    x = "true" if closed else "false"
    sym = a.symbol.upper()
    return (
        f'{{"stream":"{a.symbol}@kline_1m","data":{{"e":"kline","E":{e_ms},"s":"{sym}","k":{{'
        f'"t":{bar.open_ms},"T":{bar.open_ms + 59999},"s":"{sym}","i":"1m","f":{bar.first_id},"L":{bar.last_id},'
        f'"o":"{o}","c":"{c}","h":"{h}","l":"{lo}","v":"{v}","n":{bar.trades},"x":{x},'
        f'"q":"{q}","V":"{bv}","Q":"{bq}","B":"0"}}}}}}'
    )


def klines_rest_row(a: AssetParams, bar: KlineBar) -> str:
    o, h, lo, c, v, q, bv, bq = _bar_strings(a, bar)
    return f'[{bar.open_ms},"{o}","{h}","{lo}","{c}","{v}",{bar.open_ms + 59999},"{q}",{bar.trades},"{bv}","{bq}","0"]'


# ---------------------------------------------------------------- Polymarket RTDS


def rtds_chainlink(rtds_symbol: str, send_ms: int, source_ms: int, value: float) -> str:
    return (
        f'{{"topic":"crypto_prices_chainlink","type":"update","timestamp":{send_ms},'
        f'"payload":{{"symbol":"{rtds_symbol}","timestamp":{source_ms},"value":{value!r}}}}}'
    )


# ---------------------------------------------------------------- Polymarket CLOB market channel


def _pm_levels(levels: list[tuple[int, float]]) -> str:
    return ",".join(f'{{"price":"{PM_PRICE[p]}","size":"{pm_size(s)}"}}' for p, s in levels)


def pm_book(
    meta: MarketMeta,
    asset_id: str,
    ts_ms: int,
    book_hash: str,
    bids: list[tuple[int, float]],
    asks: list[tuple[int, float]],
    tick: int,
    last_trade: int,
) -> str:
    """The ws `book` event; levels are listed worst first (bids ascending, asks descending), as the live venue does."""
    return (
        f'{{"market":"{meta.condition_id}","asset_id":"{asset_id}","timestamp":"{ts_ms}","hash":"0x{book_hash}",'
        f'"bids":[{_pm_levels(bids)}],"asks":[{_pm_levels(asks)}],"tick_size":"{PM_PRICE[tick]}",'
        f'"event_type":"book","last_trade_price":"{PM_PRICE[last_trade]}"}}'
    )


def pm_book_rest(
    meta: MarketMeta,
    asset_id: str,
    ts_ms: int,
    book_hash: str,
    bids: list[tuple[int, float]],
    asks: list[tuple[int, float]],
    tick: int,
    last_trade: int,
) -> str:
    return (
        f'{{"market":"{meta.condition_id}","asset_id":"{asset_id}","timestamp":"{ts_ms}","hash":"{book_hash}",'
        f'"bids":[{_pm_levels(bids)}],"asks":[{_pm_levels(asks)}],"min_order_size":"{MIN_ORDER_SIZE}",'
        f'"tick_size":"{PM_PRICE[tick]}","neg_risk":false,"last_trade_price":"{PM_PRICE[last_trade]}"}}'
    )


@dataclass(slots=True)  # not frozen: ~30k built per window, and frozen __init__ costs ~6x
class LevelChange:
    asset_id: str
    price: int  # thousandths
    size: float  # new total at the level; 0 removes it
    side: str  # "BUY" (bid side) or "SELL" (ask side)
    best_bid: int  # that token's top after this change
    best_ask: int


def pm_price_change(meta: MarketMeta, ts_ms: int, changes: list[LevelChange], hash_seed: int) -> str:
    parts = [
        f'{{"asset_id":"{c.asset_id}","price":"{PM_PRICE[c.price]}","size":"{pm_size(c.size)}",'
        f'"side":"{c.side}","hash":"{pm_hash(hash_seed + i)}","best_bid":"{PM_PRICE[c.best_bid]}",'
        f'"best_ask":"{PM_PRICE[c.best_ask]}"}}'
        for i, c in enumerate(changes)
    ]
    return (
        f'{{"market":"{meta.condition_id}","price_changes":[{",".join(parts)}],'
        f'"timestamp":"{ts_ms}","event_type":"price_change"}}'
    )


def pm_best_bid_ask(meta: MarketMeta, asset_id: str, bid: int, ask: int, ts_ms: int) -> str:
    return (
        f'{{"market":"{meta.condition_id}","asset_id":"{asset_id}","best_bid":"{PM_PRICE[bid]}",'
        f'"best_ask":"{PM_PRICE[ask]}","spread":"{PM_PRICE[ask - bid]}","timestamp":"{ts_ms}",'
        f'"event_type":"best_bid_ask"}}'
    )


def pm_last_trade(meta: MarketMeta, asset_id: str, price: int, side: str, size: float, ts_ms: int) -> str:
    return (
        f'{{"asset_id":"{asset_id}","event_type":"last_trade_price","fee_rate_bps":"{TAKER_BASE_FEE_BPS}",'
        f'"market":"{meta.condition_id}","price":"{PM_PRICE[price]}","side":"{side}",'
        f'"size":"{pm_size(size)}","timestamp":"{ts_ms}"}}'
    )


def pm_tick_size_change(meta: MarketMeta, asset_id: str, old: int, new: int, ts_ms: int) -> str:
    return (
        f'{{"event_type":"tick_size_change","asset_id":"{asset_id}","market":"{meta.condition_id}",'
        f'"old_tick_size":"{PM_PRICE[old]}","new_tick_size":"{PM_PRICE[new]}","timestamp":"{ts_ms}"}}'
    )


def _event_message(meta: MarketMeta) -> dict:
    return {
        "id": meta.event_id,
        "ticker": meta.slug,
        "slug": meta.slug,
        "title": meta.question,
        "description": meta.description,
    }


def pm_new_market(meta: MarketMeta, ts_ms: int) -> str:
    return compact_json(
        {
            "id": meta.market_id,
            "question": meta.question,
            "market": meta.condition_id,
            "slug": meta.slug,
            "description": meta.description,
            "assets_ids": [meta.token_up, meta.token_down],
            "outcomes": ["Up", "Down"],
            "event_message": _event_message(meta),
            "timestamp": str(ts_ms),
            "event_type": "new_market",
        }
    )


def pm_market_resolved(meta: MarketMeta, up_won: bool, ts_ms: int) -> str:
    return compact_json(
        {
            "id": meta.market_id,
            "question": meta.question,
            "market": meta.condition_id,
            "slug": meta.slug,
            "description": meta.description,
            "assets_ids": [meta.token_up, meta.token_down],
            "outcomes": ["Up", "Down"],
            "winning_asset_id": meta.token_up if up_won else meta.token_down,
            "winning_outcome": "Up" if up_won else "Down",
            "event_message": _event_message(meta),
            "timestamp": str(ts_ms),
            "event_type": "market_resolved",
        }
    )


# ---------------------------------------------------------------- Gamma and CLOB REST bodies


@dataclass(slots=True, frozen=True)
class MarketStatus:
    """What changes over a market's life, as the REST bodies show it."""

    closed: bool
    price_to_beat: float | None
    final_price: float | None
    up_won: bool | None
    best_bid: float | None
    best_ask: float | None
    tick: float


def _outcome_prices(s: MarketStatus) -> list[str]:
    if s.up_won is not None:
        return ["1", "0"] if s.up_won else ["0", "1"]
    if s.best_bid is not None and s.best_ask is not None:
        mid = round((s.best_bid + s.best_ask) / 2.0, 4)
        return [repr(mid), repr(round(1.0 - mid, 4))]
    return ["0.5", "0.5"]


def gamma_market(meta: MarketMeta, s: MarketStatus) -> dict:
    bb = s.best_bid if s.best_bid is not None else 0.0
    ba = s.best_ask if s.best_ask is not None else 1.0
    return {
        "id": meta.market_id,
        "question": meta.question,
        "conditionId": meta.condition_id,
        "slug": meta.slug,
        "resolutionSource": meta.resolution_source,
        "endDate": iso(meta.end),
        "startDate": iso(meta.listed),
        "eventStartTime": iso(meta.start),
        "description": meta.description,
        "outcomes": compact_json(["Up", "Down"]),
        "outcomePrices": compact_json(_outcome_prices(s)),
        "clobTokenIds": compact_json([meta.token_up, meta.token_down]),
        "active": True,
        "closed": s.closed,
        "archived": False,
        "enableOrderBook": True,
        "acceptingOrders": not s.closed,
        "orderPriceMinTickSize": s.tick,
        "orderMinSize": MIN_ORDER_SIZE,
        "negRisk": False,
        "feesEnabled": True,
        "feeSchedule": FEE_SCHEDULE,
        "bestBid": bb,
        "bestAsk": ba,
        "spread": round(ba - bb, 4),
        "umaResolutionStatus": "resolved" if s.closed else "",
    }


def gamma_markets_body(meta: MarketMeta, s: MarketStatus) -> str:
    return compact_json([gamma_market(meta, s)])


def gamma_event_body(meta: MarketMeta, s: MarketStatus) -> str:
    event: dict = {
        "id": meta.event_id,
        "ticker": meta.slug,
        "slug": meta.slug,
        "title": meta.question,
        "description": meta.description,
        "startDate": iso(meta.listed),
        "startTime": iso(meta.start),
        "endDate": iso(meta.end),
        "active": True,
        "closed": s.closed,
        "archived": False,
    }
    if s.price_to_beat is not None:
        metadata: dict = {"priceToBeat": s.price_to_beat}
        if s.final_price is not None:
            metadata["finalPrice"] = s.final_price
        event["eventMetadata"] = metadata
    event["markets"] = [gamma_market(meta, s)]
    return compact_json([event])


def clob_market_body(meta: MarketMeta, s: MarketStatus) -> str:
    prices = [float(p) for p in _outcome_prices(s)]
    return compact_json(
        {
            "condition_id": meta.condition_id,
            "question_id": meta.question_id,
            "question": meta.question,
            "description": meta.description,
            "market_slug": meta.slug,
            "tokens": [
                {"token_id": meta.token_up, "outcome": "Up", "price": prices[0], "winner": s.up_won is True},
                {"token_id": meta.token_down, "outcome": "Down", "price": prices[1], "winner": s.up_won is False},
            ],
            "minimum_order_size": MIN_ORDER_SIZE,
            "minimum_tick_size": s.tick,
            "neg_risk": False,
            "accepting_orders": not s.closed,
            "accepting_order_timestamp": iso(meta.listed),
            "active": True,
            "closed": s.closed,
            "archived": False,
            "enable_order_book": True,
            "end_date_iso": iso(meta.end),
            "game_start_time": iso(meta.start),
            "seconds_delay": 0,
            "maker_base_fee": 0,
            "taker_base_fee": TAKER_BASE_FEE_BPS,
            "rewards": {"rates": None, "min_size": 0, "max_spread": 0},
            "tags": ["Crypto", "Up or Down"],
            "is_50_50_outcome": False,
        }
    )
