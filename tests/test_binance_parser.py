"""Binance futures and spot parsers on real message shapes (combined-stream wrapping, strings for numbers)."""

import orjson
import pytest

from streamers.binance import (
    AggTrade,
    BookTicker,
    DepthSnapshot,
    Kline,
    KlineHistory,
    Liquidation,
    MarkPrice,
    ParseError,
    SpotTrade,
    asset_of_symbol,
    handle_futures,
    handle_spot,
)

# recorded BTCUSDT perp aggTrade, 2022-03-01 (crypto-crawler test data)
REAL_AGG_TRADE = (
    '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1646092800098,"a":1108933367,"s":"BTCUSDT",'
    '"p":"43150.80","q":"0.001","f":1987119093,"l":1987119093,"T":1646092800027,"m":true}}'
)


def _wrap(stream: str, data: object) -> str:
    return orjson.dumps({"stream": stream, "data": data}).decode()


def test_agg_trade_with_buyer_maker_is_an_aggressive_sell():
    [trade] = handle_futures(REAL_AGG_TRADE)
    assert trade == AggTrade("btcusdt", 43150.8, 0.001, True, 1646092800.027)


def test_agg_trade_with_buyer_taker_is_an_aggressive_buy_and_optional_nq_is_accepted():
    raw = _wrap(
        "ethusdt@aggTrade",
        {"e": "aggTrade", "E": 1, "s": "ETHUSDT", "a": 5, "p": "2500.10", "q": "1.5", "nq": "1.5",
         "f": 1, "l": 2, "T": 1700000000000, "m": False},
    )
    [trade] = handle_futures(raw)
    assert trade.is_sell is False and trade.qty == 1.5 and trade.symbol == "ethusdt"


def test_kline_carries_closed_flag_from_x():
    k = {"t": 1672515780000, "T": 1672515839999, "s": "BTCUSDT", "i": "1m", "f": 100, "L": 200,
         "o": "0.0010", "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000", "n": 100, "x": False,
         "q": "1.0000", "V": "500", "Q": "0.500", "B": "123456"}
    [open_bar] = handle_futures(_wrap("btcusdt@kline_1m", {"e": "kline", "E": 1672515782136, "s": "BTCUSDT", "k": k}))
    assert isinstance(open_bar, Kline) and open_bar.closed is False
    assert open_bar.close == 0.002 and open_bar.taker_buy_volume == 500.0
    assert open_bar.close_time == pytest.approx(1672515839.999)
    [closed_bar] = handle_futures(_wrap("btcusdt@kline_1m", {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {**k, "x": True}}))
    assert closed_bar.closed is True


def test_partial_depth_snapshot_keeps_levels_best_first():
    data = {"e": "depthUpdate", "E": 1571889248277, "T": 1571889248276, "s": "BTCUSDT",
            "U": 390497796, "u": 390497878, "pu": 390497794,
            "b": [["7403.89", "0.002"], ["7403.88", "3.906"]], "a": [["7405.96", "3.340"], ["7405.97", "1"]]}
    [depth] = handle_futures(_wrap("btcusdt@depth5@100ms", data))
    assert depth == DepthSnapshot("btcusdt", ((7403.89, 0.002), (7403.88, 3.906)), ((7405.96, 3.34), (7405.97, 1.0)))
    [depth20] = handle_futures(_wrap("btcusdt@depth20", data))
    assert isinstance(depth20, DepthSnapshot)


def test_diff_depth_stream_is_rejected_because_it_needs_a_local_book():
    data = {"e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSDT", "U": 1, "u": 2, "pu": 0, "b": [], "a": []}
    with pytest.raises(ParseError):
        handle_futures(_wrap("btcusdt@depth@100ms", data))


def test_book_ticker_mark_price_and_liquidation():
    [bt] = handle_futures(_wrap("xrpusdt@bookTicker", {"e": "bookTicker", "u": 400900217, "E": 1568014460893,
                                                        "T": 1568014460891, "s": "XRPUSDT", "b": "0.5123",
                                                        "B": "31.21", "a": "0.5124", "A": "40.66"}))
    assert bt == BookTicker("xrpusdt", 0.5123, 31.21, 0.5124, 40.66)
    [mp] = handle_futures(_wrap("btcusdt@markPrice@1s", {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT",
                                                          "p": "11794.15000000", "i": "11784.62659091",
                                                          "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000}))
    assert mp == MarkPrice("btcusdt", 11794.15, 11784.62659091, 0.00038167)
    [liq] = handle_futures(_wrap("btcusdt@forceOrder", {"e": "forceOrder", "E": 1568014460893, "o": {
        "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910", "ap": "9910",
        "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893}}))
    assert liq == Liquidation("btcusdt", "SELL", 9910.0, 0.014)


def test_warm_up_frame_wraps_the_rest_klines_body():
    body = [
        [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
         1499040059999, "2434.19055334", 308, "1756.87402397", "28.46694368", "17928899.62484339"],
        [1499040060000, "0.01577100", "0.01600000", "0.01570000", "0.01590000", "100.0",
         1499040119999, "1.59", 12, "60.0", "0.95", "0"],
    ]
    [hist] = handle_futures(_wrap("solusdt@klines_rest", body))
    assert isinstance(hist, KlineHistory) and hist.symbol == "solusdt"
    assert [b.close for b in hist.bars] == [0.015771, 0.0159]
    assert hist.bars[0].open_time == 1499040000.0 and hist.bars[0].taker_buy_volume == pytest.approx(1756.87402397)


def test_subscription_ack_is_ignored_not_rejected():
    assert handle_futures('{"result":null,"id":1}') == []
    assert handle_spot('{"result":null,"id":7}') == []


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1,2]",
        '{"code":2,"msg":"Invalid request"}',
        '{"stream":"btcusdt@aggTrade"}',
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","p":"1"}}',
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","p":"x","q":"1","m":true,"T":1}}',
        '{"stream":"btcusdt@ticker","data":{"e":"24hrTicker"}}',
        '{"stream":"btcusdt@kline_1m","data":[1,2]}',
    ],
)
def test_malformed_or_unknown_futures_frames_raise_parse_error(raw):
    with pytest.raises(ParseError):
        handle_futures(raw)


def test_spot_trade_and_agg_trade_give_price_per_symbol():
    trade = _wrap("btcusdt@trade", {"e": "trade", "E": 1672515782136, "s": "BTCUSDT", "t": 12345, "p": "87000.5",
                                    "q": "0.01", "T": 1672515782136, "m": True, "M": True})
    agg = _wrap("ethusdt@aggTrade", {"e": "aggTrade", "E": 1, "s": "ETHUSDT", "a": 1, "p": "2500", "q": "2",
                                     "f": 1, "l": 1, "T": 1672515782000, "m": False, "M": True})
    assert handle_spot(trade) == [SpotTrade("btcusdt", 87000.5, 0.01, True, 1672515782.136)]
    assert handle_spot(agg)[0].price == 2500.0
    with pytest.raises(ParseError):
        handle_spot(_wrap("btcusdt@depth5", {"lastUpdateId": 1, "bids": [], "asks": []}))


def test_symbols_map_to_assets():
    assert asset_of_symbol("btcusdt") == "BTC" and asset_of_symbol("XRPUSDT") == "XRP"
