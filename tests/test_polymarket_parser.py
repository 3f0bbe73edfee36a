"""Polymarket market-channel parser and PolymarketBook on the venue's real shapes (docs and captured frames)."""

import orjson
import pytest

from streamers.binance import ParseError
from streamers.polymarket import (
    BestBidAsk,
    BookSnapshot,
    LastTrade,
    LevelChange,
    MarketResolved,
    NewMarket,
    PolymarketBook,
    TickSizeChange,
    UnknownEvent,
    handle,
)

UP = "65818619657568813474341868652308942079804919287380422192892211131408793125422"
DOWN = "52114319501245915516055106046884209969926127482827954674443846427813813222426"
CID = "0xbd31dc8a20211944f6b70f31557f1001557b59905b7738480ca09bd4532f84af"


def _book(asset: str, bids: list, asks: list, **extra) -> dict:
    return {"event_type": "book", "asset_id": asset, "market": CID, "timestamp": "1757908892351", "hash": "0x0",
            "bids": [{"price": p, "size": s} for p, s in bids], "asks": [{"price": p, "size": s} for p, s in asks],
            **extra}


# live ordering reported by third parties: bids ascending (best last), asks descending (best last)
INITIAL_SNAPSHOT = orjson.dumps([
    _book(UP, [(".48", "30"), (".49", "20"), (".50", "15")], [(".54", "10"), (".53", "60"), (".52", "25")]),
    _book(DOWN, [(".46", "5"), (".47", "8")], [(".51", "7"), (".50", "9")]),
]).decode()


def _fresh_book(raw: str = INITIAL_SNAPSHOT, token: str = UP) -> PolymarketBook:
    book = PolymarketBook(token)
    for u in handle(raw):
        if isinstance(u, BookSnapshot) and u.asset_id == token:
            book.apply_snapshot(u.bids, u.asks, 1.0, u.tick_size)
    return book


def _apply(book: PolymarketBook, raw: str, t: float = 2.0) -> bool:
    mismatch = False
    for u in handle(raw):
        if isinstance(u, LevelChange) and u.asset_id == book.token_id:
            book.set_level(u.side, u.price, u.size, t)
            mismatch |= book.check_top(u.best_bid, u.best_ask)
    return mismatch


def test_array_framed_initial_snapshot_gives_one_book_per_asset_with_leading_dot_prices():
    updates = handle(INITIAL_SNAPSHOT)
    assert [type(u) for u in updates] == [BookSnapshot, BookSnapshot]
    assert updates[0].asset_id == UP and updates[0].market == CID
    assert (0.48, 30.0) in updates[0].bids
    assert updates[0].timestamp == pytest.approx(1757908892.351)


def test_book_sorts_levels_best_first_whatever_the_received_order():
    book = _fresh_book()
    assert book.bids == [(0.50, 15.0), (0.49, 20.0), (0.48, 30.0)]
    assert book.asks == [(0.52, 25.0), (0.53, 60.0), (0.54, 10.0)]
    assert book.best_bid == 0.50 and book.best_ask == 0.52 and book.mid == pytest.approx(0.51)
    assert book.needs_resync is False and book.updated_at == 1.0


def test_book_accepts_legacy_buys_and_sells_fields():
    raw = orjson.dumps({"event_type": "book", "asset_id": UP, "market": CID, "timestamp": "1",
                        "buys": [{"price": "0.3", "size": "10"}], "sells": [{"price": "0.35", "size": "4"}]}).decode()
    book = _fresh_book(raw)
    assert book.best_bid == 0.3 and book.best_ask == 0.35


def test_new_schema_price_change_sets_level_totals_for_each_asset():
    raw = orjson.dumps({"event_type": "price_change", "market": CID, "timestamp": "1757908892351", "price_changes": [
        {"asset_id": UP, "price": "0.51", "size": "200", "side": "BUY", "hash": "a", "best_bid": "0.51", "best_ask": "0.52"},
        {"asset_id": DOWN, "price": "0.49", "size": "200", "side": "SELL", "hash": "b", "best_bid": "0.47", "best_ask": "0.49"},
    ]}).decode()
    changes = handle(raw)
    assert [c.asset_id for c in changes] == [UP, DOWN]
    assert changes[0] == LevelChange(UP, CID, "BUY", 0.51, 200.0, 0.51, 0.52, 1757908892.351)
    book = _fresh_book()
    assert _apply(book, raw) is False
    assert book.bids[0] == (0.51, 200.0) and book.updated_at == 2.0
    assert book.needs_resync is False


def test_price_change_removes_level_at_zero_size():
    book = _fresh_book()
    raw = orjson.dumps({"event_type": "price_change", "market": CID, "timestamp": "2", "price_changes": [
        {"asset_id": UP, "price": ".52", "size": "0", "side": "SELL", "best_bid": ".50", "best_ask": ".53"}]}).decode()
    assert _apply(book, raw) is False
    assert book.best_ask == 0.53 and (0.52, 25.0) not in book.asks
    assert book.needs_resync is False


def test_legacy_price_change_schema_applies_changes_to_the_top_level_asset():
    raw = orjson.dumps({"event_type": "price_change", "asset_id": UP, "market": CID, "timestamp": "1729084877448",
                        "hash": "3cd4", "changes": [{"price": "0.4", "side": "SELL", "size": "3300"},
                                                    {"price": "0.49", "side": "BUY", "size": "0"}]}).decode()
    changes = handle(raw)
    assert [(c.asset_id, c.side, c.price, c.size, c.best_bid) for c in changes] == [
        (UP, "SELL", 0.4, 3300.0, None), (UP, "BUY", 0.49, 0.0, None)]
    book = _fresh_book()
    _apply(book, raw)
    assert book.best_ask == 0.4 and [p for p, _ in book.bids] == [0.50, 0.48]


def test_disagreeing_best_bid_marks_book_for_resync_until_next_snapshot():
    book = _fresh_book()
    raw = orjson.dumps({"event_type": "price_change", "market": CID, "timestamp": "3", "price_changes": [
        {"asset_id": UP, "price": "0.45", "size": "10", "side": "BUY", "best_bid": "0.55", "best_ask": "0.56"}]}).decode()
    assert _apply(book, raw) is True
    assert book.needs_resync is True and book.mismatches == 1
    assert _apply(book, raw) is False and book.mismatches == 1  # one episode, counted once
    [snap, _] = handle(INITIAL_SNAPSHOT)
    book.apply_snapshot(snap.bids, snap.asks, 4.0)
    assert book.needs_resync is False and book.best_bid == 0.50 and book.updated_at == 4.0


def test_empty_side_matches_venue_zero_best_bid_and_one_best_ask():
    book = PolymarketBook(UP)
    book.apply_snapshot((), (), 1.0)
    assert book.best_bid is None and book.best_ask is None and book.mid is None
    assert book.check_top(0.0, 1.0) is False and book.needs_resync is False
    assert book.check_top(0.0, 0.0) is False


def test_book_is_untrusted_before_its_first_snapshot():
    book = PolymarketBook(UP)
    book.set_level("BUY", 0.4, 5.0, 1.0)
    assert book.needs_resync is True
    assert book.check_top(0.9, None) is False and book.mismatches == 0


def test_best_levels_stay_correct_through_many_updates():
    book = _fresh_book()
    book.set_level("BUY", 0.50, 0.0, 3.0)
    book.set_level("BUY", 0.49, 0.0, 3.0)
    assert book.best_bid == 0.48
    book.set_level("BUY", 0.485, 1.0, 3.0)
    assert book.best_bid == 0.485
    book.set_level("SELL", 0.515, 2.0, 3.0)
    assert book.best_ask == 0.515 and book.asks[0] == (0.515, 2.0)


def test_tick_size_change_last_trade_and_best_bid_ask_events():
    tick = '{"event_type":"tick_size_change","asset_id":"1","market":"0xbd31","old_tick_size":"0.01","new_tick_size":"0.001","timestamp":"100000000"}'
    assert handle(tick) == [TickSizeChange("1", "0xbd31", 0.01, 0.001, 100000.0)]
    trade = ('{"event_type":"last_trade_price","asset_id":"1141","market":"0x6a67","price":"0.456","side":"BUY",'
             '"size":"219.217767","fee_rate_bps":"0","timestamp":"1750428146322"}')
    assert handle(trade) == [LastTrade("1141", "0x6a67", 0.456, 219.217767, "BUY", 1750428146.322)]
    bba = ('{"event_type":"best_bid_ask","market":"0x0005","asset_id":"8535","best_bid":"0.73","best_ask":"0.77",'
           '"spread":"0.04","timestamp":"1766789469958"}')
    assert handle(bba) == [BestBidAsk("8535", "0x0005", 0.73, 0.77, 1766789469.958)]


def test_snapshot_tick_size_is_applied_to_the_book():
    raw = orjson.dumps(_book(UP, [("0.97", "5")], [("0.975", "5")], tick_size="0.001")).decode()
    assert _fresh_book(raw).tick_size == 0.001


def test_new_market_and_market_resolved():
    base = {"id": "1031769", "question": "Bitcoin Up or Down", "market": CID, "slug": "btc-updown-15m-1766790000",
            "description": "", "assets_ids": [UP, DOWN], "outcomes": ["Up", "Down"],
            "event_message": {"id": "125819"}, "timestamp": "1766790415550"}
    [nm] = handle(orjson.dumps({**base, "event_type": "new_market"}).decode())
    assert nm == NewMarket(CID, (UP, DOWN), ("Up", "Down"), "btc-updown-15m-1766790000", 1766790415.55)
    [res] = handle(orjson.dumps({**base, "event_type": "market_resolved", "winning_asset_id": DOWN,
                                 "winning_outcome": "Down"}).decode())
    assert res == MarketResolved(CID, (UP, DOWN), DOWN, "Down", 1766790415.55)


def test_pong_is_ignored_and_unknown_event_type_is_reported_not_raised():
    assert handle("PONG") == []
    assert handle('{"event_type":"some_future_event","market":"0x1"}') == [UnknownEvent("some_future_event")]


@pytest.mark.parametrize(
    "raw",
    ["garbage", "", '{"market":"0x1"}', "[1]", '{"event_type":"book","asset_id":"1","bids":[{"price":"x","size":"1"}],"asks":[]}',
     '{"event_type":"price_change","market":"0x1","price_changes":[{"asset_id":"1","price":"0.5","size":"1","side":"UP"}]}'],
)
def test_garbage_raises_parse_error(raw):
    with pytest.raises(ParseError):
        handle(raw)
