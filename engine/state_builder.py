"""Builds one market's `MarketState` from the shared market data, its position and its prob history.

Sources of each field:
- prob, best_bid/ask, spread, order_book_imbalance_l1/l5: the Polymarket UP book (imbalance =
  (bid size - ask size) / (bid size + ask size) over the best level, and over the best 5 levels);
- returns, trade flow, CVD acceleration, intensity, large-trade flag, vol expansion, regimes: the
  Binance futures state of the asset;
- vol_5m: std of the UP mid over the market's last 30 ticks;
- index_price / price_to_beat: the Chainlink (resolution-source) price, and its value at the window open;
- index_vol: realized volatility of the Chainlink price per sqrt(second), from the squared log returns
  of the price sampled every tick over the last 5 minutes (`IndexVol`); 0 until 20 samples exist.
"""

from __future__ import annotations

import math
import operator
from collections import deque

from core.frames import WINDOW_SECONDS, MarketInfo
from engine.positions import UP, Position
from strategies.base import MarketState
from streamers.futures_state import FuturesState
from streamers.polymarket import PolymarketBook

PROB_HISTORY = 30
_MIN_VOL_SAMPLES = 20


class IndexVol:
    """Realized volatility of one index from a fixed-size ring of per-tick log returns."""

    def __init__(self, tick_seconds: float, window_seconds: float = 300.0) -> None:
        self.tick_seconds = tick_seconds
        self._returns: deque[float] = deque(maxlen=max(1, int(window_seconds / tick_seconds)))
        self._sum_sq = 0.0
        self._last: float | None = None

    def sample(self, price: float | None) -> None:
        if price is None or price <= 0.0:
            return
        if self._last is not None:
            r = math.log(price / self._last)
            if len(self._returns) == self._returns.maxlen:
                old = self._returns[0]
                self._sum_sq -= old * old
            self._returns.append(r)
            self._sum_sq += r * r
        self._last = price

    @property
    def per_sqrt_second(self) -> float:
        n = len(self._returns)
        if n < _MIN_VOL_SAMPLES:
            return 0.0
        return math.sqrt(max(0.0, self._sum_sq) / (n * self.tick_seconds))


def _imbalance(b: float, a: float) -> float:
    total = a + b
    return 0.0 if total <= 0.0 else (b - a) / total


def _std(values: deque[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    # E[x^2] - mean^2 in one pass; probs lie in [0, 1], so cancellation is harmless
    return math.sqrt(max(0.0, sum(map(operator.mul, values, values)) / n - mean * mean))


def book_prob(up_book: PolymarketBook | None, fallback: float) -> float:
    """UP mid; one-sided or missing books keep the last known prob."""
    if up_book is None:
        return fallback
    mid = up_book.mid
    return fallback if mid is None else mid


def build_state(
    info: MarketInfo,
    now: float,
    up_book: PolymarketBook | None,
    down_book: PolymarketBook | None,
    futures: FuturesState,
    *,
    index_price: float | None,
    price_to_beat: float | None,
    index_vol: float,
    position: Position | None,
    prob: float,
    probs: deque[float],
) -> MarketState:
    """The MarketState of one market at clock time `now`: the market's books and its asset's futures state,
    the Chainlink index, its price to beat (None while unknown) and realized volatility per sqrt(second),
    the market's position, and its UP prob; `probs` already holds this tick's prob."""
    bids = up_book.bids if up_book is not None else []
    asks = up_book.asks if up_book is not None else []
    best_bid = bids[0][0] if bids else 0.0
    best_ask = asks[0][0] if asks else 1.0  # no ask: nothing to buy below 1
    seconds_left = max(0.0, info.end - now)
    if position is None:
        has_pos = side = pnl = 0.0
    else:
        has_pos = 1.0
        side = position.sign
        token_mid = prob if position.side == UP else _down_mid(down_book, prob)
        pnl = position.value_at(token_mid)
    down_bids = down_book.bids if down_book is not None else []
    down_asks = down_book.asks if down_book is not None else []
    return MarketState(
        market_id=info.condition_id,
        asset=info.asset,
        prob=prob,
        best_bid=best_bid,
        best_ask=best_ask,
        returns_1m=futures.returns_1m,
        returns_5m=futures.returns_5m,
        returns_10m=futures.returns_10m,
        order_book_imbalance_l1=_imbalance(bids[0][1] if bids else 0.0, asks[0][1] if asks else 0.0),
        order_book_imbalance_l5=_imbalance(sum([s for _, s in bids[:5]]), sum([s for _, s in asks[:5]])),
        trade_flow_imbalance=futures.trade_flow_imbalance,
        cvd_acceleration=futures.cvd_acceleration,
        spread=max(0.0, best_ask - best_bid),
        trade_intensity=futures.trade_intensity,
        large_trade_flag=futures.large_trade_flag,
        vol_5m=_std(probs),
        vol_expansion=futures.vol_expansion,
        has_position=has_pos,
        position_side=side,
        position_pnl=pnl,
        time_remaining=min(1.0, seconds_left / WINDOW_SECONDS),
        vol_regime=futures.vol_regime,
        trend_regime=futures.trend_regime,
        down_bid=down_bids[0][0] if down_bids else 0.0,
        down_ask=down_asks[0][0] if down_asks else 1.0,
        index_price=index_price or 0.0,
        price_to_beat=price_to_beat or 0.0,
        index_vol=index_vol,
        seconds_left=seconds_left,
        fee_rate=info.fee_rate,
        fee_exponent=info.fee_exponent,
        prob_history=tuple(probs),
    )


def _down_mid(down_book: PolymarketBook | None, up_prob: float) -> float:
    if down_book is not None and down_book.mid is not None:
        return down_book.mid
    return 1.0 - up_prob
