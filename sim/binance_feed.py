"""What Binance shows of one simulated asset each second: futures aggTrades with their kline_1m
updates, depth5 and bookTicker, markPrice@1s, the odd forceOrder and spot aggTrades; and the closed
warm-up klines before the start.

Each emitter appends `(time, SimEvent, None)` entries for `SimMarket` to sort. `SimMarket` calls them
in a fixed order per asset and second, so the draws from the asset's pool (a seeded run) repeat exactly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from core.frames import FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_SPOT
from sim import messages as M
from sim.messages import Entry
from sim.model import AssetParams, AssetPath, ModelParams, RandomPool

MAX_KLINES = 1500  # Binance's own limit per request
FUNDING_PERIOD_MS = 8 * 3600 * 1000
# where in its second each Binance message falls (the venue's cadence, not the market model)
_TRADE_SPAN_S = 0.99  # futures trades at s + U(0, this)
_KLINE_AT_S, _KLINE_JITTER_S = 0.25, 0.5  # a kline update at s + this + U(0, jitter)
_KLINE_CLOSE_AT_S = 0.995  # the minute's closing kline, after its last trade
_DEPTH_AT_S, _DEPTH_JITTER_S = 0.5, 0.1  # the depth5 snapshot at s + this + U(0, jitter) ...
_TICKER_AFTER_S = 0.002  # ... and the bookTicker this much after it
_MARK_AT_S = 0.001  # markPrice@1s
_DEPTH_UPDATES = 40  # a depth snapshot spans 3 + U(0, this) book update ids
_FUTURES_FILLS = 4  # a futures aggTrade aggregates 1 + U(0, this) fills (whole)
_SPOT_FILLS = 3  # a spot aggTrade 1 + U(0, this)


@dataclass(slots=True)
class AssetState:
    """One asset's index path, random pool and model, and the Binance ids and klines it has shown."""

    params: AssetParams
    model: ModelParams
    path: AssetPath
    pool: RandomPool
    bar: M.KlineBar
    klines: deque[M.KlineBar] = field(default_factory=lambda: deque(maxlen=MAX_KLINES))
    agg_id: int = 0
    trade_id: int = 0
    spot_agg_id: int = 0
    spot_trade_id: int = 0
    book_id: int = 0
    last_trade: float = 0.0


def history_bar(st: AssetState, minute: int) -> M.KlineBar:
    """A closed warm-up bar from the per-second futures price (no trade messages before start)."""
    path, pool, p = st.path, st.pool, st.params
    prices = [round(path.futures(float(s)) / p.tick) * p.tick for s in range(minute, minute + 60)]
    n = 40 + int(pool.uniform() * 160)
    vol = sum(pool.lognormal(p.median_qty, 1.2) for _ in range(8)) * n / 8.0
    buy = vol * (0.4 + 0.2 * pool.uniform())
    vwap = sum(prices) / 60.0
    first = st.trade_id
    st.trade_id += n
    st.agg_id += n // 2
    return M.KlineBar(
        minute * 1000, prices[0], max(prices), min(prices), prices[-1],
        vol, vol * vwap, buy, buy * vwap, n, first, st.trade_id - 1,
    )  # fmt: skip


def open_bar(st: AssetState, minute: int) -> M.KlineBar:
    c = st.last_trade
    return M.KlineBar(minute * 1000, c, c, c, c, 0.0, 0.0, 0.0, 0.0, 0, st.trade_id, st.trade_id - 1)


def taker_buy_prob(st: AssetState, s: int) -> float:
    """Taker flow tilted toward an index move (the coming one in `lagged`, the last one in `realistic`)."""
    m, path = st.model, st.path
    s0 = s + m.flow_offset_s
    move = path.price(s0 + m.flow_horizon_s) - path.price(s0)
    scale = path.price(s) * (path.sigma(s) * math.sqrt(m.flow_horizon_s) + 1e-9)
    return 0.5 + m.flow_tilt * math.tanh(move / scale)


def futures_trades(st: AssetState, s: int, p_buy: float, out: list[Entry]) -> None:
    """Binance futures aggTrades with the kline_1m updates between them, and the minute's closing kline."""
    m, pool = st.model, st.pool
    p2, p3 = m.futures_extra_trade_probs
    n_trades = 1 + (pool.uniform() < p2) + (pool.uniform() < p3)
    times = sorted(s + _TRADE_SPAN_S * pool.uniform() for _ in range(n_trades))
    t_k = s + _KLINE_AT_S + _KLINE_JITTER_S * pool.uniform() if s % m.kline_every_s == 0 else math.inf
    for t in times:
        if t_k <= t:
            _kline_update(st, t_k, False, out)
            t_k = math.inf
        _futures_trade(st, t, pool.uniform() < p_buy, out)
    if t_k < s + 1:
        _kline_update(st, t_k, False, out)
    if (s + 1) % 60 == 0:
        # the closing update of this minute, just after its last trade, then a fresh bar
        _kline_update(st, s + _KLINE_CLOSE_AT_S, True, out)
        st.klines.append(st.bar)
        st.bar = open_bar(st, s + 1)


def futures_book(st: AssetState, s: int, out: list[Entry]) -> float:
    """Futures top of book: depth5, then bookTicker just after; the futures price at the snapshot."""
    p, pool, m = st.params, st.pool, st.model
    t_d = s + _DEPTH_AT_S + _DEPTH_JITTER_S * pool.uniform()
    e_d = int(t_d * 1000)
    fut = st.path.futures(t_d)
    bid = math.floor(fut / p.tick) * p.tick
    pf, qf = f".{p.price_decimals}f", f".{p.qty_decimals}f"  # format specs built once for the 20 numbers below
    depth_qty = p.median_qty * m.depth_size_median
    sigma = m.depth_size_sigma
    bids = [(format(bid - i * p.tick, pf), format(pool.lognormal(depth_qty, sigma), qf)) for i in range(5)]
    asks = [(format(bid + (i + 1) * p.tick, pf), format(pool.lognormal(depth_qty, sigma), qf)) for i in range(5)]
    first = st.book_id + 1
    st.book_id += 3 + int(pool.uniform() * _DEPTH_UPDATES)
    out.append((t_d, M.SimEvent(
        t_d, FEED_FUTURES_PUBLIC, M.futures_depth5(p, e_d, e_d - 2, first, st.book_id, first - 1, bids, asks),
        f"{p.symbol}@depth5@100ms",
    ), None))  # fmt: skip
    t_b = t_d + _TICKER_AFTER_S
    e_b = int(t_b * 1000)
    out.append((t_b, M.SimEvent(
        t_b, FEED_FUTURES_PUBLIC,
        M.futures_book_ticker(p, st.book_id - 1, e_b, e_b - 1, bids[0][0], bids[0][1], asks[0][0], asks[0][1]),
        f"{p.symbol}@bookTicker",
    ), None))  # fmt: skip
    return fut


def mark_price(st: AssetState, s: int, out: list[Entry]) -> None:
    """markPrice@1s: the futures price, Binance's index (as late as its futures) and the funding rate."""
    p, path, m = st.params, st.path, st.model
    pd = p.price_decimals
    t_m = s + _MARK_AT_S
    basis = path.basis(float(s))
    mark = path.futures(float(s))
    idx = mark / (1.0 + basis) if path.delay else path.price(s)
    funding = max(min(basis * m.funding_basis_share, m.funding_rate_cap), -m.funding_rate_cap)
    next_funding = (s * 1000 // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS
    out.append((t_m, M.SimEvent(
        t_m, FEED_FUTURES_MARKET,
        M.futures_mark_price(p, s * 1000, f"{mark:.{pd}f}", f"{idx:.{pd + 6}f}", f"{idx:.{pd + 6}f}",
                             f"{funding:.8f}", next_funding),
        f"{p.symbol}@markPrice@1s",
    ), None))  # fmt: skip


def liquidation(st: AssetState, s: int, fut: float, out: list[Entry]) -> None:
    """An occasional forceOrder near the futures price `fut`."""
    p, pool, m = st.params, st.pool, st.model
    if pool.uniform() >= m.liquidation_prob:
        return
    t_f = s + pool.uniform()
    side = "SELL" if pool.uniform() < m.liquidation_sell_prob else "BUY"
    through = 1.0 - m.liquidation_slippage if side == "SELL" else 1.0 + m.liquidation_slippage
    px = f"{fut * through:.{p.price_decimals}f}"
    qty = f"{pool.lognormal(p.median_qty * m.liquidation_size_median, 1.0):.{p.qty_decimals}f}"
    out.append((t_f, M.SimEvent(
        t_f, FEED_FUTURES_MARKET, M.futures_force_order(p, int(t_f * 1000), side, qty, px, px),
        f"{p.symbol}@forceOrder",
    ), None))  # fmt: skip


def spot_trades(st: AssetState, s: int, p_buy: float, out: list[Entry]) -> None:
    """Spot aggTrades near the index (the futures price without its basis), taker side as on futures."""
    p, path, pool, m = st.params, st.path, st.pool, st.model
    pd, qd = p.price_decimals, p.qty_decimals
    n_spot = 1 if pool.uniform() < 1.0 - m.spot_second_trade_prob else 2
    for _ in range(n_spot):
        t_s = s + pool.uniform()
        price = path.futures(t_s) / (1.0 + path.basis(t_s)) * (1.0 + m.spot_noise * pool.normal())
        maker = pool.uniform() >= p_buy
        n_fill = 1 + int(pool.uniform() * _SPOT_FILLS)
        st.spot_agg_id += 1
        first_id = st.spot_trade_id + 1
        st.spot_trade_id += n_fill
        e_s = int(t_s * 1000)
        out.append((t_s, M.SimEvent(
            t_s, FEED_SPOT,
            M.spot_agg_trade(p, e_s, st.spot_agg_id, f"{price:.{pd}f}",
                             f"{_qty(st):.{qd}f}", first_id, st.spot_trade_id, e_s - 1, maker),
            f"{p.symbol}@aggTrade",
        ), None))  # fmt: skip


def _kline_update(st: AssetState, t: float, closed: bool, out: list[Entry]) -> None:
    p = st.params
    msg = M.futures_kline(p, int(t * 1000), st.bar, closed)
    out.append((t, M.SimEvent(t, FEED_FUTURES_MARKET, msg, f"{p.symbol}@kline_1m"), None))


def _qty(st: AssetState) -> float:
    p, pool, m = st.params, st.pool, st.model
    q = pool.lognormal(p.median_qty, m.trade_size_sigma)
    if pool.uniform() < m.block_trade_prob:
        q *= 1.0 + m.block_trade_scale * pool.uniform()  # a heavy tail of block trades
    step = 10.0 ** -p.qty_decimals
    return max(step, round(q / step) * step)


def _futures_trade(st: AssetState, t: float, buy: bool, out: list[Entry]) -> None:
    p, pool = st.params, st.pool
    fair = st.path.futures(t) * (1.0 + st.model.futures_noise * pool.normal())
    steps = fair / p.tick
    price = (math.ceil(steps) if buy else math.floor(steps)) * p.tick
    qty = _qty(st)
    n_fill = 1 + int(pool.uniform() * _FUTURES_FILLS)
    st.agg_id += 1
    first = st.trade_id + 1
    st.trade_id += n_fill
    e_ms = int(t * 1000)
    pd, qd = p.price_decimals, p.qty_decimals
    price_s, qty_s = f"{price:.{pd}f}", f"{qty:.{qd}f}"
    out.append((t, M.SimEvent(
        t, FEED_FUTURES_MARKET,
        M.futures_agg_trade(p, e_ms, st.agg_id, price_s, qty_s, first, st.trade_id, e_ms - 1, not buy),
        f"{p.symbol}@aggTrade",
    ), None))  # fmt: skip
    price = float(price_s)
    bar = st.bar
    if bar.trades == 0:
        bar.open = bar.high = bar.low = price
        bar.first_id = first
    bar.high = max(bar.high, price)
    bar.low = min(bar.low, price)
    bar.close = price
    bar.volume += qty
    bar.quote_volume += qty * price
    if buy:
        bar.taker_buy_volume += qty
        bar.taker_buy_quote += qty * price
    bar.trades += n_fill
    bar.last_id = st.trade_id
    st.last_trade = price
