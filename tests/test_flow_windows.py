"""FuturesState's cached trade-flow windows agree with a direct count of the trades, read after every update."""

from __future__ import annotations

import random

import pytest

from streamers.binance import AggTrade, BookTicker
from streamers.futures_state import FLOW_WINDOW_S, INTENSITY_WINDOW_S, FuturesState, _SecondBuckets


def _direct(trades: list[tuple[float, float, bool]], now: float) -> tuple[float, float, float]:
    """(trade_flow_imbalance, cvd_acceleration, trade_intensity) straight from the trade list."""
    top = int(now)

    def window(first: int, last: int) -> tuple[float, float, int]:
        picked = [(q, sell) for t, q, sell in trades if first <= int(t) <= last]
        return sum(q for q, s in picked if not s), sum(q for q, s in picked if s), len(picked)

    buy, sell, _ = window(top - FLOW_WINDOW_S + 1, top)
    buy1, sell1, count1 = window(top - INTENSITY_WINDOW_S + 1, top)
    buy0, sell0, _ = window(top - 2 * INTENSITY_WINDOW_S + 1, top - INTENSITY_WINDOW_S)
    total = buy + sell
    imbalance = (buy - sell) / total if total > 0.0 else 0.0
    acceleration = ((buy1 - sell1) - (buy0 - sell0)) / INTENSITY_WINDOW_S / total if total > 0.0 else 0.0
    return imbalance, acceleration, count1 / INTENSITY_WINDOW_S


@pytest.mark.parametrize("seed", [1, 2])
def test_flow_values_match_the_trades_in_each_window_after_every_update(seed: int) -> None:
    rng = random.Random(seed)
    state = FuturesState("BTC")
    trades: list[tuple[float, float, bool]] = []
    t = 1_700_000_000.0
    for _ in range(3000):
        t += rng.expovariate(2.0) * (40.0 if rng.random() < 0.005 else 1.0)  # now and then a long gap
        if rng.random() < 0.3:  # a non-trade update moves the clock without touching the buckets
            state.apply(BookTicker("btcusdt", 100.0, 1.0, 100.1, 1.0), t)
        else:
            qty, sell = rng.lognormvariate(0.0, 1.3), rng.random() < 0.5
            state.apply(AggTrade("btcusdt", 100.0, qty, sell, t), t)
            trades.append((t, qty, sell))
        trades = [x for x in trades if x[0] > t - 2 * FLOW_WINDOW_S]
        got = (state.trade_flow_imbalance, state.cvd_acceleration, state.trade_intensity)
        assert got == pytest.approx(_direct(trades, t), rel=1e-9, abs=1e-12)


def test_a_second_read_in_the_same_second_sees_a_trade_added_in_between() -> None:
    state = FuturesState("ETH")
    state.apply(AggTrade("ethusdt", 10.0, 1.0, False, 5.0), 100.2)
    assert state.trade_intensity == pytest.approx(0.1)
    assert state.trade_flow_imbalance == 1.0
    state.apply(AggTrade("ethusdt", 10.0, 3.0, True, 5.0), 100.7)
    assert state.trade_intensity == pytest.approx(0.2)
    assert state.trade_flow_imbalance == pytest.approx(-0.5)


def test_ring_windows_stay_exact_when_trades_arrive_out_of_order() -> None:
    rng = random.Random(3)
    ring = _SecondBuckets(FLOW_WINDOW_S)
    t = 1000.0
    for _ in range(5000):
        t += rng.expovariate(2.0)
        when = t - rng.random() * 30.0 if rng.random() < 0.2 else t  # a late trade lands in an earlier second
        ring.add(when, rng.lognormvariate(0.0, 1.0), rng.random() < 0.5)
        for now in (t, t - rng.random() * 20.0):
            assert tuple(ring.windows(now)) == _scan(ring, now)


def _scan(ring: _SecondBuckets, now: float) -> tuple:
    """The three windows by scanning the ring for each, oldest second first."""

    def window(first: int, last: int) -> tuple[float, float, int]:
        buy = sell = 0.0
        count = 0
        for sec in range(first, last + 1):
            i = sec % ring.n
            if ring.stamp[i] == sec:
                buy += ring.buy[i]
                sell += ring.sell[i]
                count += ring.count[i]
        return buy, sell, count

    top = int(now)
    buy, sell, _ = window(top - FLOW_WINDOW_S + 1, top)
    buy1, sell1, count1 = window(top - INTENSITY_WINDOW_S + 1, top)
    buy0, sell0, _ = window(top - 2 * INTENSITY_WINDOW_S + 1, top - INTENSITY_WINDOW_S)
    return buy, sell, buy1, sell1, count1, buy0, sell0
