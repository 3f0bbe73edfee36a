"""PaperBroker: fills walk the real book, pay the taker fee, respect tick, minimum size and consumed liquidity."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.broker import Moment, PaperBroker, order_limit, taker_fee, within_limit
from engine.positions import DOWN, UP, Position, settle
from strategies.base import Action
from streamers.frames import MarketInfo
from streamers.polymarket import PolymarketBook

INFO = MarketInfo(
    asset="BTC", condition_id="0xc1", token_up="up1", token_down="down1", start=1_000_000,
    end=1_000_900, price_to_beat=None, tick_size=0.01, min_size=5, fee_rate=0.07,
)


def book(token: str, bids=(), asks=(), tick: float = 0.01, t: float = 1.0) -> PolymarketBook:
    b = PolymarketBook(token)
    b.apply_snapshot(tuple(bids), tuple(asks), t, tick)
    return b


def position(side: str, shares: float, cost: float, token: str = "up1") -> Position:
    return Position(
        market_id="0xc1", asset="BTC", side=side, token_id=token, shares=shares, cost=cost, entry_fee=0.0,
        entry_price=cost / shares, entry_time=1_000_000.0, time_remaining_at_entry=900.0, prob_at_entry=0.5,
    )


def test_taker_fee_matches_the_venue_worked_examples():
    assert taker_fee(100, 0.50, 0.07) == pytest.approx(1.75)
    assert taker_fee(10, 0.65, 0.07) == pytest.approx(0.15925)


def test_taker_fee_uses_the_market_exponent():
    # 10 x 0.07 x (0.5 x 0.5)^2 = 0.7 x 0.0625 = 0.04375
    assert taker_fee(10, 0.50, 0.07, 2.0) == pytest.approx(0.04375)


def test_buy_walks_ask_levels_pays_the_fee_in_usdc_on_top_and_delivers_every_share():
    up = book("up1", asks=[(0.50, 4), (0.51, 6), (0.52, 100)])
    fill = PaperBroker().buy("up1", up, 5.0, INFO)
    # level 1: 4 shares x 0.50 = $2.00; fee 4 x 0.07 x 0.50 x 0.50 = $0.07
    # level 2: $3.00 left buys floor(3.00 / 0.51, 0.01) = 5.88 shares x 0.51 = $2.9988;
    #          fee 5.88 x 0.07 x 0.51 x 0.49 = 0.4116 x 0.2499 = 0.10285884 -> $0.10286
    assert fill is not None
    assert fill.shares == pytest.approx(9.88)
    assert fill.net_shares == pytest.approx(9.88)  # every share bought is delivered
    assert fill.cash == pytest.approx(4.9988)  # the shares alone: the fee is not taken out of the $5
    assert fill.fee == pytest.approx(0.17286)  # 0.07 + 0.10286, paid in USDC on top
    assert fill.limit_price == pytest.approx(0.51)
    assert fill.avg_price == pytest.approx(4.9988 / 9.88)


def test_buy_fee_follows_the_market_fee_exponent():
    steep = replace(INFO, fee_exponent=2.0)
    fill = PaperBroker().buy("up1", book("up1", asks=[(0.50, 100)]), 5.0, steep)
    # 10 shares x 0.50 = $5.00; fee 10 x 0.07 x (0.50 x 0.50)^2 = 0.7 x 0.0625 = $0.04375
    assert fill.shares == pytest.approx(10.0) and fill.fee == pytest.approx(0.04375)


def test_round_trip_books_cost_and_fees_in_usdc_on_both_sides():
    broker = PaperBroker()
    up = book("up1", bids=[(0.49, 100)], asks=[(0.50, 100)])
    opened = broker.execute(Action.BUY, INFO, None, 5.0, Moment(up, None, 1_000_010.0, 0.495, 0.0)).position
    # buy: $5.00 / 0.50 = 10 shares, all delivered; fee 10 x 0.07 x 0.50 x 0.50 = $0.175 on top
    assert (opened.shares, opened.cost, opened.entry_fee) == pytest.approx((10.0, 5.0, 0.175))
    broker.begin_tick()
    higher = book("up1", bids=[(0.60, 100)], asks=[(0.61, 100)], t=2.0)
    result = broker.execute(Action.SELL, INFO, opened, 5.0, Moment(higher, None, 1_000_100.0, 0.605, 0.0))
    record = result.record
    # sale: 10 x 0.60 = $6.00 proceeds; fee 10 x 0.07 x 0.60 x 0.40 = $0.168 out of them
    # pnl = 6.00 - 0.168 - 5.00 - 0.175 = $0.657
    assert result.position is None
    assert record.pnl == pytest.approx(0.657)
    assert record.size == pytest.approx(5.0) and record.shares == pytest.approx(10.0)
    assert record.shares * record.entry_price == pytest.approx(record.size)
    assert record.fee == pytest.approx(0.343)  # 0.175 + 0.168


def test_settlement_subtracts_the_buy_fee_paid_in_usdc():
    broker = PaperBroker()
    up = book("up1", bids=[(0.49, 100)], asks=[(0.50, 100)])
    held = broker.execute(Action.BUY, INFO, None, 5.0, Moment(up, None, 1_000_010.0, 0.495, 0.0)).position
    won = settle(held, True, 1_000_900.0, 0.99, 0.0)
    # 10 shares pay $1 each: 10.00 - 5.00 cost - 0.175 buy fee = $4.825; settlement itself is free
    assert won.pnl == pytest.approx(4.825) and won.fee == pytest.approx(0.175)


def test_sell_walks_bid_levels_and_pays_the_fee_out_of_the_proceeds():
    up = book("up1", bids=[(0.60, 3), (0.58, 10)])
    fill = PaperBroker().sell("up1", up, 8.0, INFO)
    # level 1: 3 x 0.60 = $1.80; fee 3 x 0.07 x 0.60 x 0.40 = $0.0504
    # level 2: 5 x 0.58 = $2.90; fee 5 x 0.07 x 0.58 x 0.42 = 0.35 x 0.2436 = $0.08526
    assert fill is not None
    assert fill.shares == pytest.approx(8.0)
    assert fill.cash == pytest.approx(4.70)
    assert fill.fee == pytest.approx(0.13566)
    assert fill.limit_price == pytest.approx(0.58)


def test_buy_filling_fewer_shares_than_the_minimum_is_skipped_and_counted():
    broker = PaperBroker()
    up = book("up1", asks=[(0.50, 3)])
    assert broker.buy("up1", up, 5.0, INFO) is None
    assert broker.skipped.below_min_size == 1
    deeper = book("up1", asks=[(0.50, 3), (0.51, 50)], t=2.0)
    fill = broker.buy("up1", deeper, 5.0, INFO)
    assert fill is not None and fill.shares > 5  # the skipped order consumed nothing


def test_exit_below_minimum_size_is_skipped_and_the_position_held():
    broker = PaperBroker()
    up = book("up1", bids=[(0.60, 100)], asks=[(0.61, 100)])
    held = position(UP, 4.5, 2.25)
    result = broker.execute(Action.SELL, INFO, held, 5.0, Moment(up, None, 1_000_100.0, 0.605, 0.0))
    assert result.position is held and result.record is None
    assert held.shares == pytest.approx(4.5)
    assert broker.skipped.exit_below_min_size == 1


def test_limit_price_must_be_on_the_tick_grid_inside_the_valid_range():
    broker = PaperBroker()
    coarse = book("up1", asks=[(0.995, 100)], tick=0.01)
    assert broker.buy("up1", coarse, 5.0, INFO) is None  # a 0.01 grid limit would be 1.00: invalid
    assert broker.skipped.empty_book == 1
    fine = book("up1", asks=[(0.995, 100)], tick=0.001, t=2.0)
    fill = broker.buy("up1", fine, 5.0, INFO)
    assert fill is not None and fill.avg_price == pytest.approx(0.995)
    low_bid = book("up1", bids=[(0.005, 100)], tick=0.01)
    assert broker.sell("up1", low_bid, 10.0, INFO) is None


def test_two_orders_in_one_tick_cannot_fill_the_same_liquidity():
    broker = PaperBroker()
    up = book("up1", asks=[(0.50, 10), (0.60, 100)])
    first = broker.buy("up1", up, 5.0, INFO)
    second = broker.buy("up1", up, 5.0, INFO)
    assert first is not None and first.avg_price == pytest.approx(0.50)
    assert second is not None and second.avg_price == pytest.approx(0.60)
    broker.begin_tick()
    third = broker.buy("up1", up, 5.0, INFO)
    assert third is not None and third.avg_price == pytest.approx(0.50)


def test_liquidity_comes_back_when_the_book_changes():
    broker = PaperBroker()
    up = book("up1", asks=[(0.50, 10), (0.60, 100)])
    broker.buy("up1", up, 5.0, INFO)
    up.set_level("SELL", 0.50, 10.0, 2.0)  # the venue re-quotes the level
    again = broker.buy("up1", up, 5.0, INFO)
    assert again is not None and again.avg_price == pytest.approx(0.50)


def test_empty_side_gives_no_fill_and_is_counted():
    broker = PaperBroker()
    assert broker.buy("up1", book("up1", bids=[(0.5, 10)]), 5.0, INFO) is None
    assert broker.buy("up1", None, 5.0, INFO) is None
    assert broker.sell("up1", book("up1", asks=[(0.5, 10)]), 10.0, INFO) is None
    assert broker.skipped.empty_book == 3


def test_buy_when_flat_opens_up_and_sell_when_flat_buys_the_down_token():
    broker = PaperBroker()
    up = book("up1", bids=[(0.49, 100)], asks=[(0.50, 100)])
    down = book("down1", bids=[(0.49, 100)], asks=[(0.40, 100)])
    long_up = broker.execute(Action.BUY, INFO, None, 5.0, Moment(up, down, 1_000_010.0, 0.495, 0.0))
    assert long_up.opened and long_up.position.side == UP and long_up.position.token_id == "up1"
    assert long_up.position.cost == pytest.approx(5.0)
    assert long_up.position.shares == pytest.approx(10.0)  # $5 at 0.50, the fee paid on top in USDC
    long_down = broker.execute(Action.SELL, INFO, None, 5.0, Moment(up, down, 1_000_010.0, 0.495, 0.0))
    assert long_down.position.side == DOWN and long_down.position.token_id == "down1"
    assert long_down.position.entry_price == pytest.approx(0.40)
    assert long_down.position.time_remaining_at_entry == pytest.approx(890.0)


def test_no_pyramiding_and_hold_does_nothing():
    broker = PaperBroker()
    up = book("up1", bids=[(0.49, 100)], asks=[(0.50, 100)])
    down = book("down1", bids=[(0.49, 100)], asks=[(0.51, 100)])
    held_up = position(UP, 10.0, 5.0)
    held_down = position(DOWN, 10.0, 5.0, token="down1")
    for action, held in ((Action.BUY, held_up), (Action.SELL, held_down), (Action.HOLD, held_up)):
        result = broker.execute(action, INFO, held, 5.0, Moment(up, down, 1_000_100.0, 0.5, 0.0))
        assert result.position is held and result.record is None and not result.opened
        assert held.shares == 10.0
    # nothing was consumed: a buy still gets the best level in full
    assert broker.buy("up1", up, 5.0, INFO).avg_price == pytest.approx(0.50)


def test_sell_closes_a_long_up_and_realizes_proceeds_minus_cost_minus_fee():
    broker = PaperBroker()
    up = book("up1", bids=[(0.60, 100)], asks=[(0.61, 100)])
    held = position(UP, 10.0, 5.0)
    result = broker.execute(Action.SELL, INFO, held, 5.0, Moment(up, None, 1_000_100.0, 0.605, 0.001))
    assert result.position is None
    record = result.record
    fee = taker_fee(10, 0.60, 0.07)
    assert record.pnl == pytest.approx(10 * 0.60 - 5.0 - fee)
    assert record.exit_reason == "close" and record.side == UP and record.action == "BUY"
    assert record.duration == pytest.approx(100.0)


def test_buy_closes_a_long_down_into_the_down_bids():
    broker = PaperBroker()
    down = book("down1", bids=[(0.30, 100)], asks=[(0.31, 100)])
    held = position(DOWN, 12.0, 4.8, token="down1")
    result = broker.execute(Action.BUY, INFO, held, 5.0, Moment(None, down, 1_000_100.0, 0.7, 0.0))
    assert result.position is None
    assert result.record.pnl == pytest.approx(12 * 0.30 - 4.8 - taker_fee(12, 0.30, 0.07))
    assert result.record.action == "SELL"


def test_a_sale_into_thin_bids_fills_partially_and_keeps_the_rest_open():
    broker = PaperBroker()
    up = book("up1", bids=[(0.60, 4)], asks=[(0.61, 100)])
    held = position(UP, 10.0, 5.0)
    result = broker.execute(Action.SELL, INFO, held, 5.0, Moment(up, None, 1_000_100.0, 0.605, 0.0))
    assert result.position is held
    assert held.shares == pytest.approx(6.0) and held.cost == pytest.approx(3.0)
    assert result.record.shares == pytest.approx(4.0)
    assert result.record.pnl == pytest.approx(4 * 0.60 - 2.0 - taker_fee(4, 0.60, 0.07))


def test_settlement_pays_one_for_the_winning_token_and_zero_otherwise():
    won = settle(position(UP, 10.0, 5.0), True, 1_000_900.0, 0.99, 0.001)
    assert won.pnl == pytest.approx(5.0) and won.exit_price == 1.0 and won.exit_reason == "settle"
    lost = settle(position(DOWN, 10.0, 5.0, token="down1"), True, 1_000_900.0, 0.99, 0.001)
    assert lost.pnl == pytest.approx(-5.0) and lost.fee == 0.0


def test_mid_fill_uses_the_mid_without_fee_depth_or_minimum():
    broker = PaperBroker("mid")
    up = book("up1", bids=[(0.48, 1)], asks=[(0.52, 1)])
    fill = broker.buy("up1", up, 1.0, INFO)
    assert fill.avg_price == pytest.approx(0.50) and fill.fee == 0.0
    assert fill.shares == pytest.approx(2.0)  # below the 5-share minimum and beyond the 1-share depth
    sale = broker.sell("up1", up, 2.0, INFO)
    assert sale.cash == pytest.approx(1.0) and sale.fee == 0.0


def test_unknown_fill_mode_is_refused():
    with pytest.raises(ValueError, match="fill mode"):
        PaperBroker("last")


def test_a_limited_book_order_takes_only_the_levels_within_its_limit():
    # decided with the ask at 0.50: limit 0.50 + 0.05 = 0.55; the sale's floor 0.49 - 0.05 = 0.44
    decided = book("up1", bids=[(0.49, 100)], asks=[(0.50, 100)])
    assert order_limit(decided, True, 0.01, 0.05) == pytest.approx(0.55)
    assert order_limit(decided, False, 0.01, 0.05) == pytest.approx(0.44)
    assert order_limit(book("up1", bids=[(0.49, 100)]), True, 0.01, 0.05) is None
    assert order_limit(book("up1", asks=[(0.98, 100)]), True, 0.01, 0.05) == pytest.approx(0.99)  # inside 1 - tick
    moved = book("up1", bids=[(0.40, 100)], asks=[(0.54, 4), (0.55, 2), (0.58, 100)], t=2.0)
    fill = PaperBroker().buy("up1", within_limit(moved, True, 0.55), 5.0, INFO)
    # 4 x 0.54 + 2 x 0.55 = $3.26 for 6 shares; the 0.58 level is past the limit
    assert fill.shares == pytest.approx(6.0) and fill.cash == pytest.approx(3.26)
    assert within_limit(moved, True, 0.53) is None  # the whole side moved past it
    assert within_limit(moved, False, 0.44) is None  # the bids fell below the sale's floor
    assert within_limit(moved, False, 0.40) is moved  # every level reachable: the book as it is
