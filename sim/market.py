"""`SimMarket`: the whole simulated venue set for one seed, as a time-ordered stream of venue messages.

The generator advances one simulated second at a time: it draws every asset's index, trades and
books for that second, sorts the second's messages by time and yields them. Snapshots served
between messages (REST bodies, the `book` sent on subscribe) reflect what has been yielded so far.
Binance's messages come from `sim/binance_feed.py`; the RTDS Chainlink ticks and the Polymarket
markets (listing, the maker's quotes, trades, resolution) are drawn here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from core.frames import (
    ASSETS,
    FEED_DISCOVERY,
    FEED_POLYMARKET,
    FEED_RTDS,
    MarketInfo,
)
from sim import binance_feed as binance
from sim import messages as M
from sim.binance_feed import MAX_KLINES, AssetState
from sim.faults import FaultSpec
from sim.messages import Entry, SimEvent
from sim.model import (
    ASSET_PARAMS,
    WINDOW,
    AssetPath,
    ModelParams,
    Quoter,
    RandomPool,
    Seasonality,
    UpBook,
)
from sim.profiles import SimProfile, load_profile

EPOCH = 1767225600  # 2026-01-01 00:00 UTC, a multiple of the window
HISTORY_S = 7200  # futures history before start_time (120 closed 1m klines)
LIST_AHEAD_S = 60  # a market is listed this long before its window starts
DROP_AFTER_S = 10  # and leaves the discovery list this long after its end
KEEP_WINDOWS = 3  # ended markets kept for REST look-ups
FEE_RATE = 0.07
NOMINAL_TICK = 0.01
_ASSET_CODE = {"BTC": 0, "ETH": 1, "SOL": 2, "XRP": 3}


@dataclass(slots=True)
class _PolyMarket:
    """One listed Polymarket market: the maker's live book and what has been published of it."""

    meta: M.MarketMeta
    lag: int  # seconds of index lag the maker quotes on
    book: UpBook
    pub_bids: dict[int, float]  # UP book as last published
    pub_asks: dict[int, float]
    pub_tick: int
    strike: float | None = None
    ptb_at: float | None = None  # time the opening price was published
    final: float | None = None
    up_won: bool | None = None
    resolved_at: float | None = None
    last_trade: int = 500
    hash_n: int = 0


def _digits(seed: int, *parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()


class SimMarket:
    """The simulated venues for one seed; see the module docstring."""

    def __init__(
        self,
        seed: int,
        assets: Sequence[str] = ASSETS,
        faults: FaultSpec | None = None,
        model: ModelParams | None = None,
        profile: SimProfile | None = None,
    ) -> None:
        unknown = [a for a in assets if a not in ASSET_PARAMS]
        if unknown or not assets:
            raise ValueError(f"unknown asset(s) {unknown}; the simulator knows {', '.join(ASSET_PARAMS)}")
        self.seed = int(seed)
        self.assets = tuple(assets)
        self.faults = faults or FaultSpec()
        if profile is None:
            profile = load_profile(None) if model is None else SimProfile("custom", model)
        self.profile = profile
        self.model = profile.model
        self._season = Seasonality(self.model)
        self.start_time = EPOCH + WINDOW * ((self.seed % 10000) * 97)
        self._now = float(self.start_time)
        self._sec = self.start_time
        self._assets: dict[str, AssetState] = {}
        self._quoters: dict[str, Quoter] = {}
        self._markets: dict[str, _PolyMarket] = {}  # condition id -> market
        self._by_slug: dict[str, _PolyMarket] = {}
        self._by_token: dict[str, _PolyMarket] = {}
        self._fault_pool = RandomPool(np.random.default_rng([self.seed, 99]))
        for a in self.assets:
            self._assets[a] = self._new_asset(a)
        for a in self.assets:
            self._list_market(a, self.start_time)

    # ------------------------------------------------------------ construction

    def _new_asset(self, asset: str) -> AssetState:
        p = self.profile.asset_params(asset)
        code = _ASSET_CODE[asset]
        rng = np.random.default_rng([self.seed, code])
        aux = np.random.default_rng([self.seed, code, 7])  # draws a profile without them never made
        lo, hi = self.model.futures_delay_s
        delay = lo + (hi - lo) * float(aux.random()) if hi > 0.0 else 0.0
        t0 = self.start_time - HISTORY_S
        path = AssetPath(p, self.model, rng, t0, keep_s=HISTORY_S + WINDOW, delay=delay, aux_rng=aux)
        path.ensure(self.start_time + WINDOW)
        pool = RandomPool(rng)
        st = AssetState(p, self.model, path, pool, M.KlineBar(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        for minute in range(t0, self.start_time, 60):
            st.klines.append(binance.history_bar(st, minute))
        st.last_trade = st.klines[-1].close
        st.bar = binance.open_bar(st, self.start_time)
        return st

    def _list_market(self, asset: str, start: int) -> _PolyMarket:
        p = ASSET_PARAMS[asset]
        h = _digits(self.seed, asset, start)
        slug = f"{asset.lower()}-updown-15m-{start}"
        meta = M.MarketMeta(
            asset=asset,
            name=p.name,
            slug=slug,
            market_id=str(500000 + int.from_bytes(h[:4], "big") % 9000000),
            event_id=str(100000 + int.from_bytes(h[4:8], "big") % 900000),
            condition_id="0x" + h.hex(),
            question_id="0x" + _digits(self.seed, asset, start, "q").hex(),
            token_up=str(int.from_bytes(_digits(self.seed, asset, start, "up"), "big")),
            token_down=str(int.from_bytes(_digits(self.seed, asset, start, "down"), "big")),
            start=start,
            end=start + WINDOW,
            listed=start - LIST_AHEAD_S,
        )
        st = self._assets[asset]
        quoter = self._quoters.get(asset)
        if quoter is None:
            quoter = self._quoters[asset] = Quoter(self.model, st.pool)
        lo, hi = self.model.lag_range_s
        lag = lo + int(st.pool.uniform() * (hi - lo + 1))
        book = quoter.new_book(0.5)
        m = _PolyMarket(meta, lag, book, dict(book.bids), dict(book.asks), book.tick)
        self._markets[meta.condition_id] = m
        self._by_slug[slug] = m
        self._by_token[meta.token_up] = m
        self._by_token[meta.token_down] = m
        self._prune(start)
        return m

    def _prune(self, newest_start: int) -> None:
        cutoff = newest_start - KEEP_WINDOWS * WINDOW
        for cid in [c for c, m in self._markets.items() if m.meta.end < cutoff]:
            m = self._markets.pop(cid)
            del self._by_slug[m.meta.slug], self._by_token[m.meta.token_up], self._by_token[m.meta.token_down]

    # ------------------------------------------------------------ the stream

    def events(self) -> Iterator[SimEvent]:
        """Every venue message, infinite, in non-decreasing time, from start_time."""
        for ev in self.timeline():
            if ev.feed != FEED_DISCOVERY:
                yield ev

    def timeline(self) -> Iterator[SimEvent]:
        """`events()` plus a `discovery` event (JSON list of markets) wherever the market list changes."""
        last_discovery = ""
        garbage = self.faults.garbage
        fault = self._fault_pool
        while True:
            batch: list[Entry] = []
            s = self._sec
            for a in self.assets:
                self._asset_second(self._assets[a], s, batch)
            batch.sort(key=_entry_time)
            for t, ev, action in batch:
                self._now = t
                if action is not None:
                    action()
                if ev is None:
                    continue
                if ev.feed == FEED_DISCOVERY:
                    text = self.discovery_json(t)
                    if text == last_discovery:
                        continue
                    last_discovery = text
                    yield SimEvent(t, FEED_DISCOVERY, text, None)
                    continue
                yield ev
                if garbage > 0.0 and fault.uniform() < garbage:
                    yield SimEvent(t, ev.feed, ev.msg[: len(ev.msg) // 2], ev.stream, ev.asset_ids, ev.symbol)
            self._sec = s + 1

    def _asset_second(self, st: AssetState, s: int, out: list[Entry]) -> None:
        """Every message of one asset for second s: one emitter per feed, always called in this order, so
        the draws from the asset's pool (and a seeded run) repeat exactly."""
        m = self.model
        st.path.ensure(s + max(0, m.flow_offset_s) + m.flow_horizon_s + 2)
        t_rtds = self._chainlink(st, s, out)
        p_buy = binance.taker_buy_prob(st, s)
        binance.futures_trades(st, s, p_buy, out)
        fut = binance.futures_book(st, s, out)
        binance.mark_price(st, s, out)
        binance.liquidation(st, s, fut, out)
        binance.spot_trades(st, s, p_buy, out)
        self._polymarket_second(st, s, t_rtds, out)

    def _chainlink(self, st: AssetState, s: int, out: list[Entry]) -> float:
        """RTDS chainlink: the index at exactly second s, published a little later; its publication time."""
        p = st.params
        lo, hi = self.model.rtds_delay_s
        t_rtds = s + lo + (hi - lo) * st.pool.uniform()
        value = round(st.path.price(s), 8)
        out.append((t_rtds, SimEvent(
            t_rtds, FEED_RTDS, M.rtds_chainlink(p.rtds_symbol, int(t_rtds * 1000), s * 1000, value),
            None, (), p.rtds_symbol,
        ), None))  # fmt: skip
        return t_rtds

    # ------------------------------------------------------------ Polymarket

    def _polymarket_second(self, st: AssetState, s: int, t_rtds: float, out: list[Entry]) -> None:
        asset = st.params.asset
        path, pool = st.path, st.pool
        next_start = s - s % WINDOW + WINDOW
        if s == next_start - LIST_AHEAD_S or s == self.start_time:
            start = next_start if s != self.start_time else s
            mk = self._by_slug.get(f"{asset.lower()}-updown-15m-{start}") or self._list_market(asset, start)
            self._emit_listing(mk, s + 0.05, out)
        model = self.model
        r_lo, r_hi = model.maker_reaction_s
        for mk in list(self._markets.values()):
            meta = mk.meta
            if meta.asset != asset:
                continue
            if s == meta.start:
                mk.strike = round(path.price(s), 8)

                def publish_strike(mk: _PolyMarket = mk, t: float = t_rtds) -> None:
                    mk.ptb_at = t

                out.append((t_rtds, SimEvent(t_rtds, FEED_DISCOVERY, "", None), publish_strike))
            if s == meta.end:
                self._resolve(mk, s, t_rtds, out)
            if s == meta.end + DROP_AFTER_S:
                out.append((s + 0.0, SimEvent(s + 0.0, FEED_DISCOVERY, "", None), None))
            if s >= meta.end or s < meta.listed:
                continue
            if mk.strike is None:
                fair = 0.5
            else:
                left = meta.end - s
                seen = s - min(mk.lag, 1 + int(model.final_lag_per_s * left))  # the index second it quotes on
                fair = path.up_probability(
                    seen, mk.strike, meta.end - seen, self._season.remaining_from(seen - meta.start),
                    model.maker_vol_scale, model.maker_prices_jumps,
                )
            self._quote(mk, fair, s + r_lo + (r_hi - r_lo) * pool.uniform(), out)
            if pool.uniform() < model.last_trade_prob:
                self._last_trade(mk, s + pool.uniform(), pool, out)

    def _emit_listing(self, mk: _PolyMarket, t: float, out: list[Entry]) -> None:
        meta = mk.meta
        ms = int(t * 1000)
        ids = (meta.token_up, meta.token_down)
        out.append((t, SimEvent(t, FEED_POLYMARKET, M.pm_new_market(meta, ms), None, ids), None))
        out.append((t, SimEvent(t, FEED_DISCOVERY, "", None), None))
        for token in ids:
            out.append((t, SimEvent(t, FEED_POLYMARKET, self._book_text(mk, token, ms, ws=True), None, (token,)), None))

    def _resolve(self, mk: _PolyMarket, s: int, t_rtds: float, out: list[Entry]) -> None:
        path = self._assets[mk.meta.asset].path
        final = round(path.price(s), 8)
        assert mk.strike is not None  # set when the window started
        up_won = final >= mk.strike
        t = min(t_rtds + 0.3, s + 0.999)

        def settle(mk: _PolyMarket = mk, t: float = t) -> None:
            mk.final, mk.up_won, mk.resolved_at = final, up_won, t

        meta = mk.meta
        msg = M.pm_market_resolved(meta, up_won, int(t * 1000))
        out.append((t, SimEvent(t, FEED_POLYMARKET, msg, None, (meta.token_up, meta.token_down)), settle))

    def _quote(self, mk: _PolyMarket, fair: float, t: float, out: list[Entry]) -> None:
        quoter = self._quoters[mk.meta.asset]
        book = mk.book
        old_b, old_a, old_tick = dict(book.bids), dict(book.asks), book.tick
        target = quoter.target(book, fair)
        if not quoter.requote(book, target):
            return
        meta = mk.meta
        ms = int(t * 1000)
        new_b, new_a = dict(book.bids), dict(book.asks)
        if book.tick != old_tick:
            for token in (meta.token_up, meta.token_down):
                out.append((t, SimEvent(
                    t, FEED_POLYMARKET, M.pm_tick_size_change(meta, token, old_tick, book.tick, ms), None, (token,),
                ), None))  # fmt: skip
        up = _diff(meta.token_up, old_b, old_a, new_b, new_a)
        down = _diff(meta.token_down, _mirror(old_a), _mirror(old_b), _mirror(new_a), _mirror(new_b))
        if not up:
            return
        mk.hash_n += len(up) + len(down)
        msg = M.pm_price_change(meta, ms, up + down, mk.hash_n)

        def publish(mk: _PolyMarket = mk, b: dict = new_b, a: dict = new_a, tick: int = book.tick) -> None:
            mk.pub_bids, mk.pub_asks, mk.pub_tick = b, a, tick

        out.append((t, SimEvent(t, FEED_POLYMARKET, msg, None, (meta.token_up, meta.token_down)), publish))
        top_old = (max(old_b), min(old_a))
        top_new = (max(new_b), min(new_a))
        if top_new != top_old:
            bb, ba = top_new
            out.append((t, SimEvent(
                t, FEED_POLYMARKET, M.pm_best_bid_ask(meta, meta.token_up, bb, ba, ms), None, (meta.token_up,),
            ), None))  # fmt: skip
            out.append((t, SimEvent(
                t, FEED_POLYMARKET, M.pm_best_bid_ask(meta, meta.token_down, 1000 - ba, 1000 - bb, ms), None,
                (meta.token_down,),
            ), None))  # fmt: skip

    def _last_trade(self, mk: _PolyMarket, t: float, pool: RandomPool, out: list[Entry]) -> None:
        meta, book, m = mk.meta, mk.book, self.model
        up_token = pool.uniform() < m.last_trade_up_prob
        taker_buy = pool.uniform() < m.last_trade_buy_prob
        bb, ba = book.best_bid, book.best_ask
        if up_token:
            token, price = meta.token_up, (ba if taker_buy else bb)
        else:
            token, price = meta.token_down, (1000 - bb if taker_buy else 1000 - ba)
        size = round(pool.lognormal(m.last_trade_size_median, m.last_trade_size_sigma), 2)
        mk.last_trade = price if up_token else 1000 - price
        side = "BUY" if taker_buy else "SELL"
        out.append((t, SimEvent(
            t, FEED_POLYMARKET, M.pm_last_trade(meta, token, price, side, max(size, 1.0), int(t * 1000)), None,
            (token,),
        ), None))  # fmt: skip

    # ------------------------------------------------------------ snapshots

    def _token_book(self, mk: _PolyMarket, token: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(bids ascending, asks descending) of a token as published: worst first, like the venue."""
        if token == mk.meta.token_up:
            bids, asks = mk.pub_bids, mk.pub_asks
        else:
            bids, asks = _mirror(mk.pub_asks), _mirror(mk.pub_bids)
        return sorted(bids.items()), sorted(asks.items(), reverse=True)

    def _book_text(self, mk: _PolyMarket, token: str, ms: int, ws: bool) -> str:
        bids, asks = self._token_book(mk, token)
        last = mk.last_trade if token == mk.meta.token_up else 1000 - mk.last_trade
        book_hash = M.pm_hash(mk.hash_n + 7919 * (token == mk.meta.token_down))
        fmt = M.pm_book if ws else M.pm_book_rest
        return fmt(mk.meta, token, ms, book_hash, bids, asks, mk.pub_tick, last)

    def _status(self, mk: _PolyMarket, t: float) -> M.MarketStatus:
        ptb = mk.strike if mk.ptb_at is not None and t >= mk.ptb_at else None
        closed = mk.resolved_at is not None and t >= mk.resolved_at
        return M.MarketStatus(
            closed=closed,
            price_to_beat=ptb,
            final_price=mk.final if closed else None,
            up_won=mk.up_won if closed else None,
            best_bid=max(mk.pub_bids) / 1000.0 if mk.pub_bids else None,
            best_ask=min(mk.pub_asks) / 1000.0 if mk.pub_asks else None,
            tick=mk.pub_tick / 1000.0,
        )

    @property
    def now(self) -> float:
        """Time of the last message the generator yielded."""
        return self._now

    def markets_at(self, t: float) -> list[MarketInfo]:
        """Markets listed at t (current window, the next once listed, the last one until shortly after its end)."""
        out = []
        for mk in self._markets.values():
            meta = mk.meta
            if not meta.listed <= t < meta.end + DROP_AFTER_S:
                continue
            known = mk.ptb_at is not None and t >= mk.ptb_at
            out.append(MarketInfo(
                asset=meta.asset, condition_id=meta.condition_id, token_up=meta.token_up,
                token_down=meta.token_down, start=meta.start, end=meta.end,
                price_to_beat=mk.strike if known else None, tick_size=NOMINAL_TICK,
                min_size=float(M.MIN_ORDER_SIZE), fee_rate=FEE_RATE,
            ))  # fmt: skip
        out.sort(key=lambda m: (m.start, _ASSET_CODE[m.asset]))
        return out

    def discovery_json(self, t: float) -> str:
        """The `discovery` frame text for t: compact JSON of markets_at(t)."""
        return M.compact_json([m.to_dict() for m in self.markets_at(t)])

    def gamma_event_json(self, slug: str, t: float) -> str | None:
        mk = self._by_slug.get(slug)
        if mk is None or t < mk.meta.listed:
            return None
        return M.gamma_event_body(mk.meta, self._status(mk, t))

    def gamma_markets_json(self, slug: str, t: float) -> str | None:
        mk = self._by_slug.get(slug)
        if mk is None or t < mk.meta.listed:
            return None
        return M.gamma_markets_body(mk.meta, self._status(mk, t))

    def clob_market_json(self, condition_id: str) -> str | None:
        mk = self._markets.get(condition_id)
        return None if mk is None else M.clob_market_body(mk.meta, self._status(mk, self._now))

    def book_json(self, token_id: str) -> str | None:
        """CLOB REST /book body; None once the market resolved (the venue answers 404)."""
        mk = self._by_token.get(token_id)
        if mk is None or mk.resolved_at is not None:
            return None
        return self._book_text(mk, token_id, int(self._now * 1000), ws=False)

    def book_event(self, token_id: str) -> str | None:
        mk = self._by_token.get(token_id)
        if mk is None or mk.resolved_at is not None:
            return None
        return self._book_text(mk, token_id, int(self._now * 1000), ws=True)

    def klines_rest_body(self, symbol: str, end_time_ms: int | None, limit: int) -> str:
        """/fapi/v1/klines body: closed 1m bars up to the current sim time (and end_time_ms), the last `limit`."""
        st = next((s for s in self._assets.values() if s.params.symbol == symbol.lower()), None)
        if st is None:
            return "[]"
        now_ms = int(self._now * 1000)
        cap = now_ms if end_time_ms is None else min(now_ms, end_time_ms + 60000)
        bars = [b for b in st.klines if b.open_ms + 60000 <= cap]
        limit = max(1, min(int(limit), MAX_KLINES))
        return "[" + ",".join(M.klines_rest_row(st.params, b) for b in bars[-limit:]) + "]"


def _entry_time(e: Entry) -> float:
    return e[0]


def _mirror(levels: dict[int, float]) -> dict[int, float]:
    """UP levels seen from the DOWN token: price p becomes 1 - p (bids become asks)."""
    return {1000 - p: s for p, s in levels.items()}


def _diff(
    token: str, old_b: dict[int, float], old_a: dict[int, float], new_b: dict[int, float], new_a: dict[int, float]
) -> list[M.LevelChange]:
    """Level changes turning the old book into the new, removals first, each with the top after it."""
    steps: list[tuple[dict[int, float], int, float, str]] = []
    for p in sorted(old_b.keys() - new_b.keys()):
        steps.append((old_b, p, 0.0, "BUY"))
    for p in sorted(old_a.keys() - new_a.keys()):
        steps.append((old_a, p, 0.0, "SELL"))
    for p, sz in new_b.items():
        if old_b.get(p) != sz:
            steps.append((old_b, p, sz, "BUY"))
    for p, sz in new_a.items():
        if old_a.get(p) != sz:
            steps.append((old_a, p, sz, "SELL"))
    bids, asks = dict(old_b), dict(old_a)
    out = []
    for side, p, sz, name in steps:
        book = bids if side is old_b else asks
        if sz == 0.0:
            book.pop(p, None)
        else:
            book[p] = sz
        out.append(M.LevelChange(token, p, sz, name, max(bids) if bids else 0, min(asks) if asks else 1000))
    return out
