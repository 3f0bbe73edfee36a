"""Per-asset Binance futures state: momentum, order flow, microstructure and volatility inputs.

Everything is driven by the frame time `t` passed to `apply`, never by a wall clock, so a replay of
a recording computes identical values. Windowed values are read as of `updated_at` (the last futures
frame). Memory is bounded: per-second ring buckets, a fixed bar deque, a fixed trade-size sample.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from itertools import pairwise
from typing import NamedTuple

from streamers.binance import (
    AggTrade,
    BookTicker,
    DepthSnapshot,
    FuturesUpdate,
    Kline,
    KlineHistory,
    Liquidation,
    MarkPrice,
)

FLOW_WINDOW_S = 60  # trade-flow imbalance and the volume that normalises CVD acceleration
INTENSITY_WINDOW_S = 10  # trade intensity, and each of the two CVD-slope buckets
LARGE_TRADE_HOLD_S = 5.0  # how long a large trade keeps the flag up
LARGE_TRADE_QUANTILE = 0.95  # a trade is large above this quantile of recent trade sizes
LARGE_TRADE_SAMPLE = 500  # recent trade sizes kept for that quantile
LARGE_TRADE_MIN_SAMPLE = 100  # no flag until this many sizes are known
LARGE_TRADE_REFRESH = 100  # recompute the threshold every this many trades (sorting is not free)
BARS_KEPT = 90  # closed 1m bars: enough for the 60-minute trend return plus margin
VOL_SHORT_BARS = 5  # short realized vol: std of the last 5 one-minute log returns
VOL_LONG_BARS = 15  # long realized vol (reported as `realized_vol`): the last 15
# 0.1 % per minute is about 0.39 % per 15 minutes, above the typical 0.22-0.33 % of all four assets
VOL_REGIME_THRESHOLD = 0.001
TREND_REGIME_THRESHOLD = 0.005  # |60-minute return| above 0.5 % is a trending regime
_BAR_GAP_S = 61.0  # consecutive stored bars further apart than this straddle a gap: no return across it


class _FlowWindows(NamedTuple):
    """Taker volumes over the trade-flow windows, as of one frame time."""

    buy: float  # last 60 s
    sell: float
    recent_buy: float  # last 10 s (the current second included)
    recent_sell: float
    recent_count: int
    previous_buy: float  # the 10 s before those
    previous_sell: float


class _SecondBuckets:
    """Taker buy volume, sell volume and trade count per whole second of frame time, for the last `n` s.

    `windows` folds the completed seconds once per second (`_closed`), then adds the current one: the
    same additions in the same order as one scan of the whole window, without rescanning every read."""

    __slots__ = ("_closed", "_closed_top", "adds", "buy", "count", "n", "sell", "stamp")

    def __init__(self, n: int) -> None:
        self.n = n
        self.adds = 0  # trades added so far: with the current second, it says when the windows moved
        self.stamp = [-1] * n
        self.buy = [0.0] * n
        self.sell = [0.0] * n
        self.count = [0] * n
        self._closed_top = -1  # the second whose earlier seconds `_closed` sums
        self._closed = _FlowWindows(0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0)

    def add(self, t: float, qty: float, is_sell: bool) -> None:
        self.adds += 1
        sec = int(t)
        if sec != self._closed_top:
            self._closed_top = -1  # only the current second may change under the cached sums
        i = sec % self.n
        stamp = self.stamp[i]
        if stamp != sec:
            if stamp > sec:  # older than the whole window: nothing left to add it to
                return
            self.stamp[i] = sec
            self.buy[i] = self.sell[i] = 0.0
            self.count[i] = 0
        if is_sell:
            self.sell[i] += qty
        else:
            self.buy[i] += qty
        self.count[i] += 1

    def windows(self, now: float) -> _FlowWindows:
        """The 60 s, last-10 s and previous-10 s windows ending at `now`'s second (the current one included).

        Each sum runs oldest second first from 0.0, the order a per-window scan would add in."""
        top = int(now)
        if top != self._closed_top:
            self._closed = self._fold(top)
            self._closed_top = top
        c = self._closed
        i = top % self.n
        if self.stamp[i] != top:
            return c
        b, s = self.buy[i], self.sell[i]
        return _FlowWindows(
            c.buy + b, c.sell + s, c.recent_buy + b, c.recent_sell + s, c.recent_count + self.count[i],
            c.previous_buy, c.previous_sell,
        )  # fmt: skip

    def _fold(self, top: int) -> _FlowWindows:
        """The windows ending at `top` over the seconds before it."""
        recent = top - INTENSITY_WINDOW_S + 1  # first second of the last 10
        previous = recent - INTENSITY_WINDOW_S  # first second of the 10 before
        n, stamps, buys, sells, counts = self.n, self.stamp, self.buy, self.sell, self.count
        buy = sell = 0.0
        for sec in range(top - FLOW_WINDOW_S + 1, previous):
            i = sec % n
            if stamps[i] == sec:
                buy += buys[i]
                sell += sells[i]
        buy_prev = sell_prev = 0.0
        for sec in range(previous, recent):
            i = sec % n
            if stamps[i] == sec:
                b, s = buys[i], sells[i]
                buy += b
                sell += s
                buy_prev += b
                sell_prev += s
        buy10 = sell10 = 0.0
        count10 = 0
        for sec in range(recent, top):
            i = sec % n
            if stamps[i] == sec:
                b, s = buys[i], sells[i]
                buy += b
                sell += s
                buy10 += b
                sell10 += s
                count10 += counts[i]
        return _FlowWindows(buy, sell, buy10, sell10, count10, buy_prev, sell_prev)


def _std(xs: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mean = sum(xs) / n
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))


def _imbalance(bid_qty: float, ask_qty: float) -> float:
    total = bid_qty + ask_qty
    return (bid_qty - ask_qty) / total if total > 0.0 else 0.0


class FuturesState:
    """One asset's futures-derived inputs, in the raw units `MarketState` documents."""

    def __init__(self, asset: str) -> None:
        self.asset = asset
        self.updated_at = 0.0  # frame time of the last futures message
        self.last_price: float | None = None
        self.cvd = 0.0  # cumulative taker buy minus sell volume since start (base units)
        self.book_imbalance_l1 = 0.0
        self.book_imbalance_l5 = 0.0
        self.best_bid: float | None = None
        self.best_ask: float | None = None
        self.mark_price: float | None = None
        self.index_price: float | None = None
        self.funding_rate: float | None = None
        self.last_liquidation: Liquidation | None = None
        self.last_liquidation_at: float | None = None
        self._traded_price = False  # once a trade printed, klines no longer set last_price
        self._flow = _SecondBuckets(FLOW_WINDOW_S)
        self._sizes: deque[float] = deque(maxlen=LARGE_TRADE_SAMPLE)
        self._large_threshold = math.inf
        self._trades_since_refresh = 0
        self._last_large_at = -math.inf
        self._bars: deque[tuple[float, float]] = deque(maxlen=BARS_KEPT)  # (close_time, close), oldest first
        self._bar_times: deque[float] = deque(maxlen=BARS_KEPT)  # the same close times, for a plain bisect
        self._vol_key: float | None = None
        self._flow_key = (-1, -1)  # (second, trades added) the cached flow windows were computed for
        self._flow_cache = _FlowWindows(0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0)
        self._vol_short = 0.0
        self._vol_long = 0.0

    # ---- updates -------------------------------------------------------------------------------

    def apply(self, update: FuturesUpdate, t: float) -> None:
        """Fold one parsed futures update received at frame time `t` into the state."""
        self.updated_at = t
        if type(update) is AggTrade:  # the hot path first
            self._trade(update, t)
        elif isinstance(update, DepthSnapshot):
            bids, asks = update.bids, update.asks
            if bids and asks:
                self.book_imbalance_l1 = _imbalance(bids[0][1], asks[0][1])
                self.book_imbalance_l5 = _imbalance(sum(q for _, q in bids[:5]), sum(q for _, q in asks[:5]))
                self.best_bid, self.best_ask = bids[0][0], asks[0][0]
        elif isinstance(update, BookTicker):
            # the real-time ticker is fresher than the 100 ms depth snapshot for the top level
            self.book_imbalance_l1 = _imbalance(update.bid_qty, update.ask_qty)
            self.best_bid, self.best_ask = update.bid, update.ask
        elif isinstance(update, Kline):
            if update.closed:
                self._add_bar(update.close_time, update.close)
            if not self._traded_price:
                self.last_price = update.close
        elif isinstance(update, KlineHistory):
            for bar in update.bars:
                if bar.close_time <= t:  # the REST body ends with the still-open bar
                    self._add_bar(bar.close_time, bar.close)
            if not self._traded_price and self._bars:
                self.last_price = self._bars[-1][1]
        elif isinstance(update, MarkPrice):
            self.mark_price = update.mark_price
            self.index_price = update.index_price
            self.funding_rate = update.funding_rate
        elif isinstance(update, Liquidation):
            self.last_liquidation = update
            self.last_liquidation_at = t

    def _trade(self, trade: AggTrade, t: float) -> None:
        qty = trade.qty
        self.last_price = trade.price
        self._traded_price = True
        self.cvd += -qty if trade.is_sell else qty
        self._flow.add(t, qty, trade.is_sell)
        sizes = self._sizes
        sizes.append(qty)
        self._trades_since_refresh += 1
        if self._trades_since_refresh >= LARGE_TRADE_REFRESH and len(sizes) >= LARGE_TRADE_MIN_SAMPLE:
            ranked = sorted(sizes)
            self._large_threshold = ranked[int(LARGE_TRADE_QUANTILE * (len(ranked) - 1))]
            self._trades_since_refresh = 0
        if qty > self._large_threshold:
            self._last_large_at = t

    def _add_bar(self, close_time: float, close: float) -> None:
        if self._bars and close_time <= self._bars[-1][0]:
            return  # already known (warm-up and stream overlap)
        self._bars.append((close_time, close))
        self._bar_times.append(close_time)

    @property
    def bars(self) -> tuple[tuple[float, float], ...]:
        """The closed 1m bars kept, (close_time, close), oldest first."""
        return tuple(self._bars)

    # ---- derived values (as of `updated_at`) -------------------------------------------------

    def _return_over(self, minutes: int) -> float:
        """last price over the close of the last bar that closed at least `minutes` ago, minus 1."""
        if self.last_price is None:
            return 0.0
        cutoff = self.updated_at - 60.0 * minutes
        i = bisect_right(self._bar_times, cutoff)  # close times strictly increase (see _add_bar)
        if not i:
            return 0.0
        close = self._bars[i - 1][1]
        return self.last_price / close - 1.0 if close > 0.0 else 0.0

    @property
    def returns_1m(self) -> float:
        return self._return_over(1)

    @property
    def returns_5m(self) -> float:
        return self._return_over(5)

    @property
    def returns_10m(self) -> float:
        return self._return_over(10)

    @property
    def returns_60m(self) -> float:
        return self._return_over(60)

    def _flow_windows(self) -> _FlowWindows:
        # several flow values are read per market per tick: scan the ring once per second and trade
        key = (int(self.updated_at), self._flow.adds)
        if key != self._flow_key:
            self._flow_cache = self._flow.windows(self.updated_at)
            self._flow_key = key
        return self._flow_cache

    @property
    def trade_flow_imbalance(self) -> float:
        """(taker buy - taker sell) / total volume over the last 60 s, in [-1, 1]."""
        w = self._flow_windows()
        return _imbalance(w.buy, w.sell)

    @property
    def cvd_acceleration(self) -> float:
        """Change of the CVD slope (net taker flow per second) between the last two 10 s buckets, over
        the last 60 s of volume: bounded by 0.1 in size, reached only when that volume all fell in those 20 s."""
        w = self._flow_windows()
        total = w.buy + w.sell
        slope_change = ((w.recent_buy - w.recent_sell) - (w.previous_buy - w.previous_sell)) / INTENSITY_WINDOW_S
        return slope_change / total if total > 0.0 else 0.0

    @property
    def trade_intensity(self) -> float:
        """Aggregated trades per second over the last 10 whole seconds (the current one included)."""
        return self._flow_windows().recent_count / INTENSITY_WINDOW_S

    @property
    def large_trade_flag(self) -> float:
        return 1.0 if self.updated_at - self._last_large_at <= LARGE_TRADE_HOLD_S else 0.0

    def _vols(self) -> tuple[float, float]:
        if not self._bars:
            return 0.0, 0.0
        key = self._bars[-1][0]
        if key != self._vol_key:
            bars = list(self._bars)[-(VOL_LONG_BARS + 1) :]
            rets = [
                math.log(c1 / c0)
                for (t0, c0), (t1, c1) in pairwise(bars)
                if t1 - t0 <= _BAR_GAP_S and c0 > 0.0 and c1 > 0.0
            ]
            self._vol_short = _std(rets[-VOL_SHORT_BARS:])
            self._vol_long = _std(rets)
            self._vol_key = key
        return self._vol_short, self._vol_long

    @property
    def realized_vol(self) -> float:
        """Std of the last 15 one-minute log returns (per minute, unscaled)."""
        return self._vols()[1]

    @property
    def vol_expansion(self) -> float:
        """Short (5-bar) over long (15-bar) realized vol, minus 1; 0 until both are known."""
        short, long = self._vols()
        return short / long - 1.0 if long > 0.0 and short > 0.0 else 0.0

    @property
    def vol_regime(self) -> float:
        """1.0 when the 15-bar realized vol exceeds VOL_REGIME_THRESHOLD per minute."""
        return 1.0 if self.realized_vol > VOL_REGIME_THRESHOLD else 0.0

    @property
    def trend_regime(self) -> float:
        """1.0 when the price moved more than 0.5 % over the last 60 minutes (either way)."""
        return 1.0 if abs(self.returns_60m) > TREND_REGIME_THRESHOLD else 0.0
