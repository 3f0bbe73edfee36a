"""FuturesState windows and derived values on known sequences, fed through the real Binance parser."""

import math
import statistics

import orjson
import pytest

from streamers.binance import handle_futures
from streamers.futures_state import FuturesState

T0 = 1_767_225_600.0  # a minute boundary


def _frame(stream: str, data: object) -> str:
    return orjson.dumps({"stream": stream, "data": data}).decode()


def _trade(price: float, qty: float, sell: bool, t: float) -> str:
    return _frame("btcusdt@aggTrade", {"e": "aggTrade", "E": int(t * 1000), "s": "BTCUSDT", "a": 1, "p": str(price),
                                       "q": str(qty), "f": 1, "l": 1, "T": int(t * 1000), "m": sell})


def _depth(bids: list, asks: list, t: float) -> str:
    return _frame("btcusdt@depth5@100ms", {"e": "depthUpdate", "E": int(t * 1000), "T": int(t * 1000), "s": "BTCUSDT",
                                           "U": 1, "u": 2, "pu": 0, "b": bids, "a": asks})


def _rest_body(closes: list[float], first_open: float) -> list:
    rows = []
    for i, c in enumerate(closes):
        open_ms = int((first_open + 60 * i) * 1000)
        rows.append([open_ms, str(c), str(c), str(c), str(c), "10", open_ms + 59_999, "0", 5, "5", "0", "0"])
    return rows


def _feed(state: FuturesState, raw: str, t: float) -> None:
    for update in handle_futures(raw):
        state.apply(update, t)


def _warm(state: FuturesState, closes: list[float], now: float) -> None:
    """Bars ending at `now`'s minute, plus the still-open bar the REST body ends with."""
    first_open = now - now % 60 - 60 * len(closes)
    body = _rest_body([*closes, 999_999.0], first_open)
    _feed(state, _frame("btcusdt@klines_rest", body), now)


def test_trade_intensity_counts_trades_per_second_over_last_ten_seconds():
    s = FuturesState("BTC")
    for sec in range(100, 110):
        for k in range(3):
            _feed(s, _trade(100.0, 1.0, False, T0 + sec + 0.3 * k), T0 + sec + 0.3 * k)
    assert s.trade_intensity == pytest.approx(3.0)
    # a later non-trade frame moves the window on: seconds 105..114 hold 15 trades
    _feed(s, _depth([["1", "1"]], [["2", "1"]], T0 + 114.5), T0 + 114.5)
    assert s.trade_intensity == pytest.approx(1.5)
    _feed(s, _depth([["1", "1"]], [["2", "1"]], T0 + 200.0), T0 + 200.0)
    assert s.trade_intensity == 0.0


def test_aggressor_side_drives_cvd_and_trade_flow_imbalance():
    s = FuturesState("BTC")
    _feed(s, _trade(100.0, 3.0, False, T0 + 1), T0 + 1)  # buyer taker: +3
    _feed(s, _trade(99.0, 1.0, True, T0 + 2), T0 + 2)  # buyer maker: aggressive sell, -1
    assert s.cvd == pytest.approx(2.0)
    assert s.trade_flow_imbalance == pytest.approx(0.5)
    assert s.last_price == 99.0 and s.updated_at == T0 + 2
    _feed(s, _depth([["1", "1"]], [["2", "1"]], T0 + 70.0), T0 + 70.0)
    assert s.trade_flow_imbalance == 0.0 and s.cvd == pytest.approx(2.0)


def test_cvd_acceleration_is_the_change_of_ten_second_cvd_slopes_over_minute_volume():
    s = FuturesState("BTC")
    _feed(s, _trade(100.0, 4.0, False, T0 + 60.5), T0 + 60.5)  # only in the 60 s volume
    _feed(s, _trade(100.0, 2.0, True, T0 + 95.5), T0 + 95.5)  # previous 10 s bucket: net -2
    _feed(s, _trade(100.0, 4.0, False, T0 + 105.5), T0 + 105.5)  # last 10 s bucket: net +4
    _feed(s, _depth([["1", "1"]], [["2", "1"]], T0 + 109.9), T0 + 109.9)
    # slopes: +4/10 s and -2/10 s; their change over 10 units of 60 s volume
    assert s.cvd_acceleration == pytest.approx((4.0 / 10 - (-2.0) / 10) / 10.0)


def test_cvd_acceleration_reaches_its_bound_only_when_all_volume_is_in_the_last_twenty_seconds():
    s = FuturesState("BTC")
    _feed(s, _trade(100.0, 5.0, True, T0 + 95.5), T0 + 95.5)
    _feed(s, _trade(100.0, 5.0, False, T0 + 105.5), T0 + 105.5)
    assert s.cvd_acceleration == pytest.approx(0.1)


def test_large_trade_flag_rises_above_rolling_threshold_and_clears_after_five_seconds():
    s = FuturesState("BTC")
    for i in range(200):
        _feed(s, _trade(100.0, 1.0 + (i % 10) * 0.01, False, T0 + i * 0.1), T0 + i * 0.1)
    assert s.large_trade_flag == 0.0
    big_t = T0 + 30.0
    _feed(s, _trade(100.0, 5.0, True, big_t), big_t)
    assert s.large_trade_flag == 1.0
    _feed(s, _depth([["1", "1"]], [["2", "1"]], big_t + 4.9), big_t + 4.9)
    assert s.large_trade_flag == 1.0
    _feed(s, _depth([["1", "1"]], [["2", "1"]], big_t + 5.1), big_t + 5.1)
    assert s.large_trade_flag == 0.0


def test_book_imbalance_from_depth_snapshot_and_book_ticker():
    s = FuturesState("BTC")
    bids = [["100.0", "3"], ["99.9", "1"], ["99.8", "1"], ["99.7", "1"], ["99.6", "1"], ["99.5", "50"]]
    asks = [["100.1", "1"], ["100.2", "1"], ["100.3", "1"], ["100.4", "1"], ["100.5", "1"]]
    _feed(s, _depth(bids, asks, T0), T0)
    assert s.book_imbalance_l1 == pytest.approx((3 - 1) / 4)
    assert s.book_imbalance_l5 == pytest.approx((7 - 5) / 12)  # the sixth level is ignored
    ticker = _frame("btcusdt@bookTicker", {"e": "bookTicker", "u": 1, "E": 1, "T": 1, "s": "BTCUSDT",
                                           "b": "100.0", "B": "1", "a": "100.1", "A": "3"})
    _feed(s, ticker, T0 + 0.05)
    assert s.book_imbalance_l1 == pytest.approx(-0.5) and s.best_ask == 100.1


def test_warm_up_klines_make_returns_valid_immediately_and_skip_the_open_bar():
    s = FuturesState("BTC")
    closes = [100.0 + i for i in range(70)]  # bar k closes at (70 - k) minutes before `now`'s minute
    now = T0 + 30.0
    _warm(s, closes, now)
    assert s.last_price == closes[-1]  # the still-open 999999 bar is not used
    # reference: the last bar that closed at least N minutes before now
    assert s.returns_1m == pytest.approx(closes[-1] / closes[-2] - 1)
    assert s.returns_5m == pytest.approx(closes[-1] / closes[-6] - 1)
    assert s.returns_10m == pytest.approx(closes[-1] / closes[-11] - 1)
    _feed(s, _trade(180.0, 1.0, False, now + 1), now + 1)
    assert s.returns_1m == pytest.approx(180.0 / closes[-2] - 1)


def test_only_closed_stream_klines_extend_the_bar_history():
    s = FuturesState("BTC")
    now = T0 + 30.0
    _warm(s, [100.0] * 12, now)
    bar_open = now - now % 60

    def kline(close: float, closed: bool) -> str:
        return _frame("btcusdt@kline_1m", {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {
            "t": int(bar_open * 1000), "T": int(bar_open * 1000) + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2,
            "o": "100", "c": str(close), "h": "120", "l": "100", "v": "1", "n": 2, "x": closed, "q": "1", "V": "1",
            "Q": "1", "B": "0"}})

    _feed(s, _trade(110.0, 1.0, False, bar_open + 50), bar_open + 50)
    _feed(s, kline(110.0, False), bar_open + 55)
    later = bar_open + 60 + 65  # 65 s after that bar closes
    _feed(s, _trade(121.0, 1.0, False, later), later)
    assert s.returns_1m == pytest.approx(121.0 / 100.0 - 1)  # the open update did not count
    _feed(s, kline(110.0, True), bar_open + 60)
    _feed(s, _trade(121.0, 1.0, False, later), later)
    assert s.returns_1m == pytest.approx(121.0 / 110.0 - 1)


def test_realized_vol_and_expansion_from_one_minute_log_returns():
    s = FuturesState("BTC")
    closes = [100.0]
    rets = [0.001, -0.002, 0.0015, -0.0005, 0.003, -0.001, 0.002, -0.0025, 0.0005, 0.001,
            -0.004, 0.005, -0.003, 0.006, -0.005, 0.004]
    for r in rets:
        closes.append(closes[-1] * math.exp(r))
    _warm(s, closes, T0 + 10.0)
    long = statistics.stdev(rets[-15:])
    short = statistics.stdev(rets[-5:])
    assert s.realized_vol == pytest.approx(long)
    assert s.vol_expansion == pytest.approx(short / long - 1)
    assert s.vol_regime == 1.0  # about 0.34 % per minute


def test_calm_flat_market_has_no_regime_flags_and_a_trend_sets_trend_regime():
    calm = FuturesState("BTC")
    _warm(calm, [100.0 * (1 + 0.0001 * (i % 2)) for i in range(70)], T0 + 5.0)
    assert calm.vol_regime == 0.0 and calm.trend_regime == 0.0
    trending = FuturesState("ETH")
    _warm(trending, [100.0 * 1.0002**i for i in range(70)], T0 + 5.0)  # about +1.2 % over 60 minutes
    assert trending.returns_60m > 0.005 and trending.trend_regime == 1.0
    assert trending.vol_regime == 0.0


def test_fresh_state_reads_as_neutral_zeros():
    s = FuturesState("XRP")
    assert (s.returns_1m, s.trade_flow_imbalance, s.cvd_acceleration, s.trade_intensity, s.large_trade_flag,
            s.realized_vol, s.vol_expansion, s.vol_regime, s.trend_regime) == (0.0,) * 9
    assert s.last_price is None
