"""MarketData end to end: a small session of frames from every feed, bad input included."""

import itertools

import orjson
import pytest

from sim.source import SimSource
from streamers.frames import (
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SPOT,
    Frame,
    MarketInfo,
)
from streamers.market_data import CHAINLINK_HISTORY_S, MarketData

START = 1_767_225_600
BTC_MARKET = MarketInfo("BTC", "0xaaa", "111", "222", START, START + 900, 87912.5, 0.01, 5.0, 0.07)
ETH_MARKET = MarketInfo("ETH", "0xbbb", "333", "444", START, START + 900, None, 0.01, 5.0, 0.07)


def _json(obj: object) -> str:
    return orjson.dumps(obj).decode()


def _chainlink(symbol: str, ts: float, value: float) -> str:
    return _json({"topic": "crypto_prices_chainlink", "type": "update", "timestamp": int(ts * 1000) + 50,
                  "payload": {"symbol": symbol, "timestamp": int(ts * 1000), "value": value}})


def book(asset: str, bid: str, ask: str) -> dict:
    return {"event_type": "book", "asset_id": asset, "market": "0xaaa", "timestamp": "1",
            "bids": [{"price": bid, "size": "100"}], "asks": [{"price": ask, "size": "100"}]}


def _session() -> list[Frame]:
    t = float(START)
    return [
        Frame(t, FEED_DISCOVERY, _json([BTC_MARKET.to_dict(), ETH_MARKET.to_dict()])),
        Frame(t + 0.1, FEED_POLYMARKET, _json([book("111", ".55", ".57"), book("222", ".43", ".45")])),
        Frame(t + 0.2, FEED_POLYMARKET, "PONG"),
        Frame(t + 0.3, FEED_POLYMARKET, _json({"event_type": "price_change", "market": "0xaaa", "timestamp": "2",
                                               "price_changes": [{"asset_id": "111", "price": "0.56", "size": "20",
                                                                  "side": "BUY", "best_bid": "0.56", "best_ask": "0.57"}]})),
        Frame(t + 0.4, FEED_RTDS, _json({"topic": "crypto_prices_chainlink", "type": "subscribe", "timestamp": 1,
                                         "payload": {"symbol": "btc/usd", "data": [
                                             {"timestamp": (START - 2) * 1000, "value": 87900.0},
                                             {"timestamp": (START - 1) * 1000, "value": 87905.0}]}})),
        Frame(t + 0.5, FEED_RTDS, _chainlink("btc/usd", START + 0.0, 87912.5)),
        Frame(t + 0.6, FEED_RTDS, "pong"),
        Frame(t + 0.7, FEED_RTDS, _json({"topic": "crypto_prices", "type": "update", "timestamp": 1,
                                         "payload": {"symbol": "btcusdt", "timestamp": START * 1000, "value": 87950.0}})),
        Frame(t + 0.8, FEED_FUTURES_MARKET, _json({"stream": "btcusdt@aggTrade", "data": {
            "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 1, "p": "87960.0", "q": "0.5", "f": 1, "l": 1,
            "T": START * 1000, "m": False}})),
        Frame(t + 0.9, FEED_FUTURES_PUBLIC, _json({"stream": "btcusdt@depth5@100ms", "data": {
            "e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSDT", "U": 1, "u": 2, "pu": 0,
            "b": [["87959.9", "3"]], "a": [["87960.0", "1"]]}})),
        Frame(t + 1.0, FEED_FUTURES_MARKET, '{"result":null,"id":1}'),
        Frame(t + 1.1, FEED_SPOT, _json({"stream": "ethusdt@trade", "data": {
            "e": "trade", "E": 1, "s": "ETHUSDT", "t": 1, "p": "2950.5", "q": "1", "T": 1, "m": True, "M": True}})),
        # bad input: each counted, none fatal
        Frame(t + 1.2, FEED_POLYMARKET, "{not json"),
        Frame(t + 1.3, FEED_FUTURES_MARKET, "garbage"),
        Frame(t + 1.4, FEED_RTDS, '{"topic":"crypto_prices_chainlink","payload":{}}'),
        Frame(t + 1.5, "mystery_feed", "{}"),
        Frame(t + 1.6, FEED_DISCOVERY, '[{"asset": "BTC"}]'),
        Frame(t + 1.7, FEED_POLYMARKET, '{"event_type":"new_fancy_event","market":"0xaaa"}'),
    ]


def _run(frames: list[Frame]) -> MarketData:
    md = MarketData(assets=("BTC", "ETH", "SOL", "XRP"))
    for f in frames:
        md.handle(f)
    return md


def test_session_builds_books_prices_markets_and_counts_bad_input():
    md = _run(_session())
    assert md.messages == 18
    assert md.rejected == 5 and md.unknown == 1 and md.book_mismatches == 0
    assert md.last_reject is not None
    assert set(md.markets) == {"0xaaa", "0xbbb"} and md.markets["0xaaa"].price_to_beat == 87912.5
    up = md.book("111")
    assert up is not None and up.best_bid == 0.56 and up.best_ask == 0.57 and up.mid == pytest.approx(0.565)
    assert up.updated_at == START + 0.3 and not up.needs_resync
    assert md.book("222").bids == [(0.43, 100.0)]
    assert md.book("999") is None
    assert md.chainlink_price("BTC") == 87912.5 and md.chainlink_latest_ts("BTC") == START
    assert md.chainlink_price("ETH") is None
    assert md.rtds_binance_price("BTC") == 87950.0
    fut = md.futures("BTC")
    assert fut.last_price == 87960.0 and fut.book_imbalance_l1 == pytest.approx(0.5) and fut.updated_at == START + 0.9
    assert md.futures("SOL").last_price is None
    assert md.spot_price("ETH") == 2950.5 and md.spot_price("BTC") is None


def test_chainlink_price_at_returns_last_price_at_or_before_the_time():
    md = _run(_session())
    assert md.chainlink_price_at("BTC", START - 1.5) == 87900.0
    assert md.chainlink_price_at("BTC", START - 1.0) == 87905.0
    assert md.chainlink_price_at("BTC", START + 100.0) == 87912.5
    assert md.chainlink_price_at("BTC", START - 10.0) is None
    assert md.chainlink_price_at("XRP", START) is None


def test_chainlink_history_is_bounded_in_time_and_ignores_stale_resends():
    md = MarketData(assets=("BTC",))
    for i in range(3000):
        md.handle(Frame(START + i, FEED_RTDS, _chainlink("btc/usd", START + i, 100.0 + i)))
    md.handle(Frame(START + 3000, FEED_RTDS, _chainlink("btc/usd", START + 5, 1.0)))
    assert md.chainlink_price("BTC") == 100.0 + 2999
    assert md.chainlink_price_at("BTC", START + 2999 - CHAINLINK_HISTORY_S) == 100.0 + 2999 - CHAINLINK_HISTORY_S
    assert md.chainlink_price_at("BTC", START + 2999 - CHAINLINK_HISTORY_S - 1) is None
    assert md.chainlink_price_at("BTC", START + 100) is None


def test_discovery_replaces_markets_by_condition_id_and_keeps_the_others():
    md = _run(_session())
    known = BTC_MARKET.to_dict() | {"price_to_beat": 87000.0}
    nxt = BTC_MARKET.to_dict() | {"condition_id": "0xccc", "start": START + 900, "end": START + 1800}
    md.handle(Frame(START + 5.0, FEED_DISCOVERY, _json([known, nxt])))
    assert set(md.markets) == {"0xaaa", "0xbbb", "0xccc"}
    assert md.markets["0xaaa"].price_to_beat == 87000.0


def test_markets_and_their_books_are_dropped_an_hour_after_they_end():
    md = _run(_session())
    later = BTC_MARKET.to_dict() | {"condition_id": "0xddd", "token_up": "555", "token_down": "666",
                                    "start": START + 4500, "end": START + 5400}
    md.handle(Frame(START + 900 + 3601.0, FEED_DISCOVERY, _json([later])))
    assert set(md.markets) == {"0xddd"}
    assert md.book("111") is None


def test_market_resolved_gives_outcome_by_name_or_by_winning_token():
    md = _run(_session())
    assert md.resolved_outcome("0xaaa") is None
    resolved = {"event_type": "market_resolved", "id": "1", "market": "0xaaa", "assets_ids": ["111", "222"],
                "outcomes": ["Up", "Down"], "winning_asset_id": "222", "winning_outcome": "Down", "timestamp": "1"}
    md.handle(Frame(START + 901.0, FEED_POLYMARKET, _json(resolved)))
    assert md.resolved_outcome("0xaaa") == "Down"
    by_token = resolved | {"market": "0xbbb", "assets_ids": ["333", "444"], "winning_asset_id": "333",
                           "winning_outcome": ""}
    md.handle(Frame(START + 902.0, FEED_POLYMARKET, _json(by_token)))
    assert md.resolved_outcome("0xbbb") == "Up"
    before = md.rejected
    md.handle(Frame(START + 903.0, FEED_POLYMARKET, _json(by_token | {"market": "0xunknown"})))
    assert md.rejected == before + 1 and md.resolved_outcome("0xunknown") is None


def test_book_disagreement_is_counted_and_flags_resync():
    md = _run(_session())
    bba = {"event_type": "best_bid_ask", "market": "0xaaa", "asset_id": "111", "best_bid": "0.60",
           "best_ask": "0.61", "spread": "0.01", "timestamp": "3"}
    md.handle(Frame(START + 3.0, FEED_POLYMARKET, _json(bba)))
    assert md.book_mismatches == 1 and md.book("111").needs_resync


def test_same_frames_give_identical_state_on_a_second_run():
    a, b = _run(_session()), _run(_session())
    fa, fb = a.futures("BTC"), b.futures("BTC")
    assert (fa.last_price, fa.cvd, fa.trade_intensity, fa.book_imbalance_l5) == (
        fb.last_price, fb.cvd, fb.trade_intensity, fb.book_imbalance_l5)
    assert a.book("111").bids == b.book("111").bids


def test_stated_top_is_checked_after_the_whole_message_not_after_each_change():
    md = MarketData(assets=("BTC",))
    snap = book("111", ".50", ".52") | {"bids": [{"price": p, "size": "10"} for p in (".48", ".49", ".50")]}
    md.handle(Frame(START, FEED_POLYMARKET, _json(snap)))
    both_removed = {"event_type": "price_change", "market": "0xaaa", "timestamp": "2", "price_changes": [
        {"asset_id": "111", "price": "0.50", "size": "0", "side": "BUY", "best_bid": "0.48", "best_ask": "0.52"},
        {"asset_id": "111", "price": "0.49", "size": "0", "side": "BUY", "best_bid": "0.48", "best_ask": "0.52"}]}
    md.handle(Frame(START + 1, FEED_POLYMARKET, _json(both_removed)))
    assert md.book_mismatches == 0 and md.book("111").best_bid == 0.48 and not md.book("111").needs_resync


def test_polymarket_book_imbalance_over_best_levels():
    md = _run(_session())
    md.handle(Frame(START + 2, FEED_POLYMARKET, _json(book("111", ".55", ".57") | {
        "bids": [{"price": ".55", "size": "30"}, {"price": ".54", "size": "50"}],
        "asks": [{"price": ".57", "size": "10"}, {"price": ".58", "size": "10"}]})))
    up = md.book("111")
    assert up.imbalance(1) == pytest.approx(0.5) and up.imbalance(5) == pytest.approx(0.6)


def test_simulator_frames_parse_without_rejections_and_fill_every_asset():
    src = SimSource(5)
    md = MarketData()
    for frame in itertools.islice(src.iter_frames(), 30_000):
        md.handle(frame)
    assert md.messages == 30_000 and md.rejected == 0, md.last_reject
    assert md.markets and md.book_mismatches == 0
    for asset in md.assets:
        fut = md.futures(asset)
        assert fut.last_price is not None and fut.trade_intensity > 0.0
        assert fut.realized_vol > 0.0  # the warm-up bars made the volatility valid at once
        assert md.chainlink_price(asset) is not None
    info = next(iter(md.markets.values()))
    assert md.book(info.token_up) is not None and md.book(info.token_up).best_bid is not None
