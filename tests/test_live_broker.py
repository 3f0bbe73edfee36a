"""LiveBroker with the real py_clob_client_v2 (real signing, real HTTP) against the local fake CLOB, which
follows the venue on fees, balances, approvals, delayed and failed fills, versions, ticks and errors."""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass

import pytest
from eth_account import Account
from py_clob_client_v2 import (
    ClobClient,
    MarketOrderArgs,
    OrderArgs,
    OrderArgsV1,
    OrderType,
    PartialCreateOrderOptions,
)
from py_clob_client_v2.clob_types import CreateOrderOptions
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer

from core.fees import taker_fee
from engine.broker import Moment
from engine.positions import EXIT_SHUTDOWN, UP
from engine.report import format_summary
from strategies.base import Action
from streamers.frames import MarketInfo
from tests.fake_clob import (
    ENGINE_RESTART,
    ERR_SIGNATURE,
    ERR_SIGNER,
    ERR_UNAUTHORIZED,
    EXCHANGE_V2,
    TOO_MANY_REQUESTS,
    TRADING_DISABLED,
    FakeClob,
    FakeMarket,
    _wallet_signer,
)
from venues.polymarket.broker import LiveBroker
from venues.polymarket.credentials import LiveBrokerError, LiveBrokerFatal, LiveCredentials

CID = "0x" + "cd" * 32
UP_TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
DOWN_TOKEN = "52114319501245915516055106046884209969926127482827954674443846427813813222426"
RATE = 0.07
# the largest fee per dollar a buy can pay on a 0.01 grid (exponent 1: at the lowest price, 0.01)
WORST_FEE_PER_DOLLAR = RATE * 0.99


@dataclass
class Book:
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    tick_size: float = 0.01
    updated_at: float = 0.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def market_info(cid: str = CID, up: str = UP_TOKEN, down: str = DOWN_TOKEN, min_size: float = 5.0) -> MarketInfo:
    return MarketInfo("BTC", cid, up, down, 1_800_000_000, 1_800_000_900, 100_000.0, 0.01, min_size, RATE)


def other_market(clob: FakeClob, n: int, **rules) -> MarketInfo:
    cid, up, down = "0x" + f"{n:02x}" * 32, f"{n}01", f"{n}02"
    clob.add_market(FakeMarket(cid, up, down, **rules))
    return market_info(cid, up, down)


@pytest.fixture
def clob():
    with FakeClob() as fake:
        fake.add_market(FakeMarket(CID, UP_TOKEN, DOWN_TOKEN))
        yield fake


@pytest.fixture
def wallet():
    """A throwaway signer key and the proxy wallet (funder) it trades for."""
    return Account.create(), Account.create().address


def env_for(account, funder: str, **extra: str) -> dict[str, str]:
    return {"POLYMARKET_PRIVATE_KEY": account.key.hex(), "POLYMARKET_FUNDER": funder,
            "POLYMARKET_SIGNATURE_TYPE": "2", **extra}


def connected(credentials: LiveCredentials, host: str, **kwargs) -> LiveBroker:
    broker = LiveBroker(credentials, host, **kwargs)
    broker.connect()
    return broker


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_broker(clob, wallet, clock):
    """A broker whose funder has done the one-time setup (pUSD, approvals) and passed the start check."""
    account, funder = wallet
    clob.link(account.address, funder)
    clob.fund(funder, 1000.0)
    clob.approve(funder)
    sleeps: list[float] = []

    def make(check: bool = True, **kwargs) -> LiveBroker:
        caps = {"max_order_dollars": 50.0, "max_total_dollars": 500.0, "sleep": sleeps.append,
                "monotonic": clock} | kwargs
        broker = connected(LiveCredentials.from_env(env_for(account, funder)), clob.url, **caps)
        broker.sleeps = sleeps
        if check:
            broker.check_account()
        return broker

    return make


def show(clob: FakeClob, token: str, bids=(), asks=(), tick: float = 0.01) -> Book:
    """The same levels on the venue and in the engine's local book."""
    clob.set_book(token, bids=list(bids), asks=list(asks))
    return Book(list(bids), list(asks), tick)


def buy_up(broker: LiveBroker, book: Book, dollars: float = 10.0, info: MarketInfo | None = None):
    at = Moment(book, None, 1_800_000_100.0, 0.5, 0.0)
    return broker.execute(Action.BUY, info or market_info(), None, dollars, at)


def sell_up(broker: LiveBroker, pos, book: Book, info: MarketInfo | None = None):
    at = Moment(book, None, 1_800_000_200.0, 0.5, 0.0)
    return broker.execute(Action.SELL, info or market_info(), pos, 10.0, at)


def order_posts(clob: FakeClob) -> int:
    return sum(1 for method, path in clob.requests if (method, path) == ("POST", "/order"))


def posted_buys(clob: FakeClob) -> list[float]:
    return [int(p["order"]["makerAmount"]) / 1e6 for p in clob.posted if p["order"]["side"] == "BUY"]


def spent_at_venue(clob: FakeClob, funder: str) -> float:
    return 1000.0 - clob.usdc(funder)


# ---- finding 1: fees on top, every share delivered, fees inside the caps ------------------------
def test_buy_fee_is_paid_on_top_and_every_share_is_booked(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    book = show(clob, UP_TOKEN, bids=[(0.48, 100)], asks=[(0.50, 10), (0.52, 100)])

    result = buy_up(broker, book, dollars=10.0)

    pos = result.position
    assert result.opened and pos is not None and pos.side == UP and pos.token_id == UP_TOKEN
    amount = int(((10.0 - 1e-4) / (1 + WORST_FEE_PER_DOLLAR)) * 100) / 100  # the fee fits inside the $10
    assert clob.posted[-1]["order"]["makerAmount"] == str(round(amount * 1e6))
    gross = 10 + (amount - 5.0) / 0.52  # 10 shares at 0.50, the rest at 0.52
    assert pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-6) == pytest.approx(gross, abs=1e-4)
    venue_fee = taker_fee(10, 0.50, RATE) + taker_fee(gross - 10, 0.52, RATE)
    assert pos.entry_fee == pytest.approx(venue_fee, abs=3e-4)  # fee at the average price, see module doc
    # the trades CSV's size is the shares' price and the fee is booked apart; together they are what the wallet paid
    assert pos.cost == pytest.approx(amount, abs=3e-4)
    assert pos.cost + pos.entry_fee == pytest.approx(spent_at_venue(clob, funder), abs=3e-4)
    assert pos.entry_price == pytest.approx(amount / gross, abs=1e-6)
    assert broker.spent == pytest.approx(pos.cost + pos.entry_fee)


def test_fees_count_in_the_run_cap_and_it_is_never_overshot(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker(max_order_dollars=6.0, max_total_dollars=20.0)
    book = show(clob, UP_TOKEN, asks=[(0.50, 1000)])

    for _ in range(6):
        buy_up(broker, book, dollars=25.0)

    assert spent_at_venue(clob, funder) <= 20.0
    assert spent_at_venue(clob, funder) > 20.0 - 2.6  # used up to less than one 5-share order at 0.50
    assert broker.spent == pytest.approx(spent_at_venue(clob, funder), abs=1e-3)
    assert all(m * (1 + WORST_FEE_PER_DOLLAR) <= 6.0 for m in posted_buys(clob))
    assert broker.skipped.exposure_cap >= 1


def test_round_trip_pnl_is_the_wallets_cash_change(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held, cost = pos.shares, pos.cost + pos.entry_fee
    bids = show(clob, UP_TOKEN, bids=[(0.60, 100)], asks=[(0.62, 100)])

    result = sell_up(broker, pos, bids)

    record = result.record
    assert result.position is None and record.exit_price == pytest.approx(0.60)
    sold = int(held * 100) / 100
    assert record.pnl == pytest.approx(clob.usdc(funder) - 1000.0, abs=1e-4)
    assert record.pnl == pytest.approx(sold * 0.60 - taker_fee(sold, 0.60, RATE) - cost, abs=1e-4)
    assert broker.skipped.dust_shares == pytest.approx(held - sold)


def test_fak_partial_fill_books_only_what_filled(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker(max_slippage=0.05)
    book = show(clob, UP_TOKEN, asks=[(0.50, 8), (0.70, 100)])  # 0.70 lies past the slippage cap

    pos = buy_up(broker, book, dollars=10.0).position

    assert pos is not None and pos.shares == pytest.approx(8.0)
    assert pos.cost == pytest.approx(4.0) and pos.entry_fee == pytest.approx(taker_fee(8, 0.5, RATE))
    assert pos.cost + pos.entry_fee == pytest.approx(spent_at_venue(clob, funder))
    assert clob.book_levels(UP_TOKEN, "asks") == [(0.70, 100)]


def test_fok_that_cannot_fill_completely_books_nothing(clob, make_broker):
    broker = make_broker(order_type=OrderType.FOK)
    book = show(clob, UP_TOKEN, asks=[(0.50, 8)])

    result = buy_up(broker, book, dollars=10.0)

    assert result.position is None
    assert broker.skipped.rejected == {"no_match": 1}
    assert order_posts(clob) == 1
    assert clob.book_levels(UP_TOKEN, "asks") == [(0.50, 8)]


def test_order_below_the_minimum_size_is_never_sent(clob, make_broker):
    broker = make_broker()

    assert buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 3)])).position is None

    assert broker.skipped.below_min_size == 1
    assert order_posts(clob) == 0


def test_tick_and_min_size_come_from_the_market_info_the_client_fetches(clob, make_broker):
    info = other_market(clob, 7, tick="0.001", min_size=20.0)  # discovery says 5; the venue says 20
    broker = make_broker()

    thin = show(clob, info.token_up, asks=[(0.503, 12)], tick=0.001)
    assert buy_up(broker, thin, info=info).position is None
    assert broker.skipped.below_min_size == 1 and order_posts(clob) == 0

    deep = show(clob, info.token_up, asks=[(0.503, 12), (0.507, 50)], tick=0.001)
    pos = buy_up(broker, deep, dollars=15.0, info=info).position
    assert pos is not None
    order = clob.posted[-1]["order"]
    assert int(order["makerAmount"]) / int(order["takerAmount"]) == pytest.approx(0.507, abs=1e-5)  # 0.001 grid
    assert clob.requests.count(("GET", f"/clob-markets/{info.condition_id}")) == 1


def test_sell_refused_for_balance_keeps_the_position_and_retries_next_tick(clob, make_broker):
    clob.hold_new_shares = True  # the venue credits bought shares late
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    bids = show(clob, UP_TOKEN, bids=[(0.55, 100)])

    first = sell_up(broker, pos, bids)

    assert first.position is pos and first.record is None
    assert broker.skipped.rejected == {"not_enough_balance": 1}
    assert {"asset_type": "CONDITIONAL", "token_id": UP_TOKEN} in [
        {k: u[k] for k in ("asset_type", "token_id") if k in u} for u in clob.balance_updates]
    clob.settle()
    second = sell_up(broker, pos, bids)
    assert second.position is None and second.record.exit_price == pytest.approx(0.55)


# ---- finding 2: HTTP errors are counted, never raised ------------------------------------------
@pytest.mark.parametrize(("status", "error"), [(404, "market not found"), TOO_MANY_REQUESTS, (500, "internal error"),
                                               (None, "")])
def test_an_http_error_fetching_market_rules_is_counted_and_trading_continues(clob, make_broker, status, error):
    broker = make_broker()
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])
    path = f"/clob-markets/{CID}"
    if status is None:
        clob.drop_answer_next(path)  # the library raises PolyApiException(status None): a network error
    else:
        clob.fail_next(path, status, error)

    assert buy_up(broker, book).position is None

    reason = {404: "other", 429: "rate_limited", 500: "server_error", None: "network"}[status]
    assert broker.skipped.rejected == {reason: 1} and order_posts(clob) == 0
    assert buy_up(broker, book).position is not None


@pytest.mark.parametrize(("status", "error", "reason"), [(404, "not found", "other"),
                                                          (*TOO_MANY_REQUESTS, "rate_limited"),
                                                          (500, "internal error", None), (None, "", None)])
def test_an_http_error_posting_an_order_is_never_raised(clob, make_broker, clock, status, error, reason):
    broker = make_broker()
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])
    if status is None:
        clob.set_book(UP_TOKEN, asks=[])  # the venue kills the order, and its answer is lost on the way back
        clob.drop_answer_next("/order")
    else:
        clob.fail_next("/order", status, error)

    assert buy_up(broker, book).position is None

    if reason is not None:  # refused: nothing can have traded
        assert broker.skipped.rejected == {reason: 1}
    else:  # no answer (or a 5xx): it may have traded, so it is pending until the venue's trades say
        assert broker.skipped.rejected == {} and broker.reserved() > 9.0
        clock.t += 11.0
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])
    assert buy_up(broker, book).position is not None
    assert broker.skipped.unknown_outcome == (reason is None)


def test_venue_refusals_of_an_order_are_counted_by_reason_and_trading_continues(clob, make_broker):
    broker = make_broker()
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])
    for status, error in (TOO_MANY_REQUESTS, TRADING_DISABLED, ENGINE_RESTART):
        clob.fail_next("/order", status, error)
        assert buy_up(broker, book).position is None

    assert broker.skipped.rejected == {"rate_limited": 1, "trading_disabled": 1, "engine_restart": 1}
    assert buy_up(broker, book).position is not None


def test_failing_cancel_all_and_balance_refresh_are_logged_not_raised(clob, make_broker):
    clob.hold_new_shares = True
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    clob.fail_next("/balance-allowance/update", 500, "internal error")

    assert sell_up(broker, pos, show(clob, UP_TOKEN, bids=[(0.55, 100)])).position is pos
    clob.fail_next("/cancel-all", 503, "service unavailable")
    assert broker.close_all() == 0


# ---- findings 3 and 4: delayed, unanswered and failed fills ------------------------------------
def test_a_delayed_buy_is_booked_from_its_trades(clob, wallet, make_broker):
    _, funder = wallet
    clob.delay_seconds = 0.0  # matched at the venue's next request
    clob.delay_next()
    broker = make_broker()

    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position

    assert pos is not None
    assert pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-6)
    assert pos.cost + pos.entry_fee == pytest.approx(spent_at_venue(clob, funder), abs=1e-5)  # fee per trade: exact
    assert broker.spent == pytest.approx(pos.cost + pos.entry_fee) and order_posts(clob) == 1


def test_a_5xx_after_the_match_is_reconciled_from_the_trades(clob, wallet, make_broker):
    _, funder = wallet
    clob.error_after_next("/order", 502, "bad gateway")
    broker = make_broker()

    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 10), (0.52, 100)])).position

    assert pos is not None and pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-6)
    assert pos.cost + pos.entry_fee == pytest.approx(spent_at_venue(clob, funder), abs=1e-5)
    assert broker.skipped.rejected == {}


def test_a_lost_answer_is_reconciled_from_the_trades_when_get_order_answers_nothing(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    book = show(clob, UP_TOKEN, asks=[(0.50, 10), (0.52, 100)])
    clob.drop_answer_next("/order")

    pos = buy_up(broker, book, dollars=10.0).position

    assert pos is not None and pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-6)
    assert pos.cost + pos.entry_fee == pytest.approx(spent_at_venue(clob, funder), abs=1e-5)
    assert broker.skipped.unknown_outcome == 0
    order_id = next(iter(clob.trades.values())).taker_order_id
    assert broker.client.get_order(order_id) is None  # what the venue answers for a filled FAK order


def test_a_pending_buy_keeps_its_dollars_reserved_and_no_order_exceeds_the_caps(clob, wallet, make_broker, clock):
    _, funder = wallet
    clob.delay_seconds = None  # held until release_delayed()
    clob.delay_next()
    broker = make_broker(max_order_dollars=10.0, max_total_dollars=25.0)
    markets = [market_info()] + [other_market(clob, n) for n in (2, 3, 4)]
    books = [show(clob, m.token_up, asks=[(0.50, 1000)]) for m in markets]

    assert buy_up(broker, books[0], info=markets[0]).position is None  # delayed: pending
    assert buy_up(broker, books[0], info=markets[0]).position is None  # its market waits
    assert broker.skipped.pending_fill == 1 and order_posts(clob) == 1
    assert buy_up(broker, books[1], info=markets[1]).position is not None
    third = buy_up(broker, books[2], info=markets[2]).position  # what the reservation leaves
    assert buy_up(broker, books[3], info=markets[3]).position is None
    assert broker.skipped.exposure_cap == 1 and order_posts(clob) == 3

    pending_worst = posted_buys(clob)[0] * (1 + WORST_FEE_PER_DOLLAR) + 1e-4
    assert spent_at_venue(clob, funder) + pending_worst <= 25.0  # whatever the delayed order does
    assert third is not None and third.cost < 5.5
    clob.release_delayed()  # the venue matches the delayed order
    clock.t += 2.0
    late = buy_up(broker, books[0], info=markets[0])
    assert late.opened and late.position.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-6)
    assert order_posts(clob) == 3  # handed over, not bought again
    assert spent_at_venue(clob, funder) <= 25.0
    assert broker.spent == pytest.approx(spent_at_venue(clob, funder), abs=1e-3)


def test_a_pending_order_that_never_fills_is_released_after_its_limit(clob, make_broker, clock):
    clob.delay_seconds = None
    clob.delay_next()
    broker = make_broker(max_total_dollars=12.0, release_after=10.0)
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])

    assert buy_up(broker, book).position is None
    assert broker.reserved() > 9.9
    clock.t += 11.0
    clob.set_book(UP_TOKEN, asks=[])  # the venue kills the order when it finally looks: nothing matched
    clob.release_delayed()

    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position

    assert broker.skipped.unknown_outcome == 1
    assert pos is not None and order_posts(clob) == 2  # the market and the dollars are free again


def test_a_buy_that_fails_at_settlement_is_taken_out_of_its_position_and_the_cap(clob, wallet, make_broker, clock):
    _, funder = wallet
    clob.trade_settle_seconds = None  # trades stay MATCHED until settle_trades()
    clob.fail_settlement_next()
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    assert pos.shares > 0 and broker.spent > 0

    clob.settle_trades()  # the chain transaction reverts: the venue reverses the trade
    clock.t += 2.0
    broker.execute(Action.HOLD, market_info(), pos, 10.0, Moment(None, None, 1_800_000_150.0, 0.5, 0.0))

    assert clob.trade_statuses() == ["FAILED"]
    assert clob.shares(funder, UP_TOKEN) == 0.0 and clob.usdc(funder) == pytest.approx(1000.0)
    assert pos.shares == pytest.approx(0.0, abs=1e-9) and pos.cost == pytest.approx(0.0, abs=1e-6)
    assert broker.spent == pytest.approx(0.0, abs=1e-6)
    assert broker.skipped.rejected == {"trade_failed": 1}


def test_a_sale_that_fails_at_settlement_is_reported_as_still_held(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    clob.trade_settle_seconds = None
    clob.fail_settlement_next()
    sold = sell_up(broker, pos, show(clob, UP_TOKEN, bids=[(0.55, 100)]))
    assert sold.record is not None
    clob.settle_trades()

    broker.close_all()

    held = broker.skipped.to_dict()["still_held"]
    assert [(h["asset"], h["side"], h["token_id"]) for h in held] == [("BTC", "UP", UP_TOKEN)]
    assert held[0]["shares"] == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-6)
    assert broker.skipped.rejected == {"trade_failed": 1}


def test_trades_not_settled_when_the_run_stops_are_counted(clob, make_broker):
    clob.trade_settle_seconds = None
    broker = make_broker(settle_wait=3.0)
    assert buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position is not None

    broker.close_all()

    assert broker.sleeps == [1.0, 1.0, 1.0]
    assert broker.skipped.unconfirmed_trades == 1


# ---- finding 5: balance and approvals -----------------------------------------------------------
def test_start_check_names_missing_pusd_approvals_and_asks_the_venue_to_reread_first(clob, wallet):
    account, funder = wallet
    clob.link(account.address, funder)
    clob.fund(funder, 100.0)
    broker = connected(LiveCredentials.from_env(env_for(account, funder)), clob.url, max_order_dollars=5,
                       max_total_dollars=10)

    with pytest.raises(LiveBrokerError) as refused:
        broker.check_account()

    message = str(refused.value)
    assert "CTF Exchange V2" in message and EXCHANGE_V2.lower() in message and "approv" in message
    assert "\n" not in message
    assert clob.balance_updates[0]["asset_type"] == "COLLATERAL"
    clob.approve(funder)
    assert broker.check_account() == pytest.approx(100.0)


def test_start_check_refuses_a_funder_without_pusd_for_one_order_and_its_fee(clob, wallet):
    account, funder = wallet
    clob.link(account.address, funder)
    clob.fund(funder, 0.5)
    clob.approve(funder)
    broker = connected(LiveCredentials.from_env(env_for(account, funder)), clob.url, max_order_dollars=5,
                       max_total_dollars=10)

    with pytest.raises(LiveBrokerError, match=r"holds \$0\.50 pUSD"):
        broker.check_account()


def test_missing_share_approvals_are_fatal_before_the_first_buy(clob, wallet, make_broker):
    _, funder = wallet
    clob.wallets[funder.lower()].operators.clear()  # pUSD approved, CTF setApprovalForAll not
    broker = make_broker()

    with pytest.raises(LiveBrokerFatal, match="setApprovalForAll"):
        buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)]))
    assert order_posts(clob) == 0


def test_a_sale_refused_for_a_missing_approval_is_fatal_not_retried(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    clob.wallets[funder.lower()].operators.clear()  # the approval was revoked

    with pytest.raises(LiveBrokerFatal, match="approv"):
        sell_up(broker, pos, show(clob, UP_TOKEN, bids=[(0.55, 100)]))


def test_buys_stop_at_the_pusd_balance_with_room_for_the_fee(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    clob.fund(funder, 6.0)
    broker.check_account()
    book = show(clob, UP_TOKEN, asks=[(0.50, 1000)])

    assert buy_up(broker, book, dollars=25.0).position is not None
    assert buy_up(broker, book, dollars=25.0).position is None

    assert clob.usdc(funder) >= 0.0 and broker.skipped.rejected == {}
    assert broker.skipped.low_balance == 1


# ---- finding 6: signature type 3 ------------------------------------------------------------------
def test_signature_type_3_is_refused_at_start_with_one_sentence(wallet):
    account, funder = wallet

    with pytest.raises(LiveBrokerError) as refused:
        LiveCredentials.from_env(env_for(account, funder, POLYMARKET_SIGNATURE_TYPE="3"))

    message = str(refused.value)
    assert "deposit wallet" in message and "\n" not in message and message.count(". ") == 0


def test_the_fake_checks_deposit_wallet_orders_as_the_venue_does(clob):
    owner, stranger = Account.create(), Account.create()
    deposit = clob.deposit_wallet(owner.address)
    clob.fund(deposit, 100.0)
    clob.approve(deposit)
    clob.set_book(UP_TOKEN, asks=[(0.50, 100)])
    client = ClobClient(clob.url, 137, key=owner.key.hex(), signature_type=3, funder=deposit)
    client.set_api_creds(client.create_or_derive_api_key())  # bound to the EOA: the library knows no other way
    args = MarketOrderArgs(token_id=UP_TOKEN, amount=10.0, side="BUY", price=0.5, order_type=OrderType.FAK)
    order = client.create_market_order(args, PartialCreateOrderOptions(tick_size="0.01", neg_risk=False))

    # the ERC-7739 envelope checks out against the wallet's owner...
    assert _wallet_signer(order_to_json_v2(order, "", "FAK")["order"], EXCHANGE_V2, 2) == owner.address
    # ...and the venue still refuses it: the order's signer (the wallet) is not the API key's address
    with pytest.raises(PolyApiException) as refused:
        client.post_order(order, OrderType.FAK)
    assert refused.value.error_msg == {"error": ERR_SIGNER}

    forged = ClobClient(clob.url, 137, key=stranger.key.hex(), signature_type=3, funder=deposit)
    forged.set_api_creds(client.creds)
    forged_order = forged.create_market_order(args, PartialCreateOrderOptions(tick_size="0.01", neg_risk=False))
    with pytest.raises(PolyApiException) as bad:
        client.post_order(forged_order, OrderType.FAK)
    assert bad.value.error_msg == {"error": ERR_SIGNATURE}


# ---- finding 7: order version ---------------------------------------------------------------------
def test_an_order_version_mismatch_is_fatal_with_one_sentence(clob, make_broker):
    info = other_market(clob, 9, version=3)  # a market that takes Exchange V3 orders only
    broker = make_broker()

    with pytest.raises(LiveBrokerFatal) as fatal:
        buy_up(broker, show(clob, info.token_up, asks=[(0.50, 100)]), info=info)

    message = str(fatal.value)
    assert "order_version_mismatch" in message and "\n" not in message


# ---- finding 8: ticks and restarts ----------------------------------------------------------------
def test_a_tick_size_change_frame_makes_the_broker_read_the_rules_again(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    assert buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position is not None
    clob.set_tick(CID, "0.001")  # the price neared the extreme: the venue's tick is now 0.001

    # the engine's book applied the `tick_size_change` frame
    before = clob.shares(funder, UP_TOKEN)
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.995, 100)], tick=0.001)).position

    assert clob.requests.count(("GET", f"/clob-markets/{CID}")) == 2
    assert pos is not None and pos.entry_price == pytest.approx(0.995)
    assert pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN) - before, abs=1e-6)


def test_a_tick_refusal_makes_the_broker_read_the_rules_again(clob, make_broker):
    info = other_market(clob, 5, tick="0.001")
    broker = make_broker()
    assert buy_up(broker, show(clob, info.token_up, asks=[(0.50, 100)], tick=0.001), info=info).position
    clob.set_tick(info.condition_id, "0.01")  # no frame reached the engine
    near_one = show(clob, info.token_down, asks=[(0.995, 100)], tick=0.001)

    assert buy_up(broker, near_one, info=info).position is None
    assert broker.skipped.rejected == {"tick_size": 1}
    assert buy_up(broker, near_one, info=info).position is None  # 0.995 is off the new grid: not sent

    assert clob.requests.count(("GET", f"/clob-markets/{info.condition_id}")) == 2
    assert order_posts(clob) == 2


def test_a_shutdown_sale_backs_off_through_an_engine_restart(clob, make_broker):
    broker = make_broker(exit_retry_seconds=120.0, retry_backoff=0.5)
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held = pos.shares
    clob.fail_next("/order", *ENGINE_RESTART, times=7)  # ~25 s of 425 answers

    at = Moment(show(clob, UP_TOKEN, bids=[(0.45, 100)]), None, 1_800_000_300.0, 0.45, 0.0)
    record = broker.close_at_book(market_info(), pos, at, EXIT_SHUTDOWN)

    assert broker.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert record.shares == pytest.approx(held) and record.exit_price == pytest.approx(0.45 * int(held * 100) / 100 / held)
    assert broker.skipped.unsold_shares == 0.0 and broker.skipped.still_held == []


def test_shares_a_shutdown_cannot_sell_within_the_limit_are_reported_as_still_held(clob, make_broker):
    broker = make_broker(exit_retry_seconds=30.0)
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held, cost = pos.shares, pos.cost + pos.entry_fee
    clob.fail_next("/order", *ENGINE_RESTART, times=100)

    at = Moment(show(clob, UP_TOKEN, bids=[(0.45, 100)]), None, 1_800_000_300.0, 0.45, 0.0)
    record = broker.close_at_book(market_info(), pos, at, EXIT_SHUTDOWN)

    assert sum(broker.sleeps) == pytest.approx(30.0)
    assert record.exit_price == 0.0 and record.pnl == pytest.approx(-cost)
    assert broker.skipped.unsold_shares == pytest.approx(held)
    summary = format_summary({"skipped_orders": broker.skipped.to_dict()})
    assert f"still held on the venue, outside the PnL: BTC UP {held:,.2f} shares" in summary


def test_close_at_book_retries_a_sale_refused_until_the_shares_are_credited(clob, make_broker):
    clob.hold_new_shares = True
    broker = make_broker(retry_backoff=0.5, sleep=lambda seconds: (broker.sleeps.append(seconds), clob.settle()))
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held = pos.shares

    at = Moment(show(clob, UP_TOKEN, bids=[(0.45, 100)]), None, 1_800_000_300.0, 0.45, 0.0)
    record = broker.close_at_book(market_info(), pos, at, EXIT_SHUTDOWN)

    assert broker.sleeps == [0.5]
    assert record.shares == pytest.approx(held) and record.exit_reason == EXIT_SHUTDOWN


# ---- identity, signing and the fake's own strictness ----------------------------------------------
def test_bad_api_secret_is_fatal_at_start(clob, wallet):
    account, funder = wallet
    issued = clob.issue_key(account.address)
    wrong_secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    env = env_for(account, funder, POLYMARKET_API_KEY=issued.api_key, POLYMARKET_API_SECRET=wrong_secret,
                  POLYMARKET_API_PASSPHRASE=issued.passphrase)

    with pytest.raises(LiveBrokerFatal, match="401"):
        LiveBroker(LiveCredentials.from_env(env), clob.url, max_order_dollars=10, max_total_dollars=10).connect()


def test_401_on_an_order_is_fatal(clob, make_broker):
    broker = make_broker()
    clob.fail_next("/order", 401, ERR_UNAUTHORIZED)

    with pytest.raises(LiveBrokerFatal):
        buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)]))


def test_an_order_for_a_funder_that_is_not_the_signers_wallet_is_fatal(clob, wallet):
    account, funder = wallet
    clob.link(account.address, funder)
    wrong = Account.create().address  # POLYMARKET_FUNDER set to some other wallet
    for w in (funder, wrong):
        clob.fund(w, 100.0)
        clob.approve(w)
    broker = connected(LiveCredentials.from_env(env_for(account, wrong)), clob.url, max_order_dollars=10,
                       max_total_dollars=10)

    with pytest.raises(LiveBrokerFatal, match="POLYMARKET_FUNDER"):
        buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)]))


def test_order_signed_by_another_key_fails_the_fakes_signature_check(clob, wallet, make_broker):
    account, funder = wallet
    broker = make_broker()
    clob.set_book(UP_TOKEN, asks=[(0.50, 100)])
    intruder = ClobClient(clob.url, 137, key=Account.create().key.hex(), signature_type=2, funder=funder)
    args = MarketOrderArgs(token_id=UP_TOKEN, amount=10.0, side="BUY", price=0.5, order_type=OrderType.FAK)
    options = PartialCreateOrderOptions(tick_size="0.01", neg_risk=False)
    forged = intruder.builder.build_market_order(args, CreateOrderOptions("0.01", False))
    forged.signer = account.address  # claims the API key's address; the signature says otherwise

    with pytest.raises(PolyApiException) as refused:
        broker.client.post_order(forged, OrderType.FAK)
    assert refused.value.status_code == 400 and refused.value.error_msg == {"error": ERR_SIGNATURE}

    genuine = broker.client.create_market_order(args, options)
    assert broker.client.post_order(genuine, OrderType.FAK)["success"] is True


def test_broker_signing_with_a_key_other_than_the_api_keys_is_fatal(clob, make_broker):
    broker = make_broker()
    broker.client.builder.signer = Signer(Account.create().key.hex(), 137)

    with pytest.raises(LiveBrokerFatal, match="address of the API KEY"):
        buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)]))


def test_v1_signed_order_is_refused_as_the_venue_does(clob, make_broker):
    broker = make_broker()
    v1 = broker.client.builder.build_order(
        OrderArgsV1(token_id=UP_TOKEN, price=0.5, size=10, side="BUY"), CreateOrderOptions("0.01", False), version=1
    )
    with pytest.raises(PolyApiException) as refused:
        broker.client.post_order(v1, OrderType.FAK)
    assert refused.value.error_msg == {"error": "invalid order version"}


def test_close_all_cancels_resting_orders(clob, make_broker):
    broker = make_broker()
    clob.set_book(UP_TOKEN, bids=[(0.45, 10)], asks=[(0.55, 10)])
    order = broker.client.create_order(OrderArgs(token_id=UP_TOKEN, price=0.40, size=10, side="BUY"))
    answer = broker.client.post_order(order, OrderType.GTC, post_only=True)
    assert answer["status"] == "live" and broker.client.get_order(answer["orderID"])["status"] == "LIVE"

    assert broker.close_all() == 1
    assert clob.resting_user_orders() == [] and broker.client.get_order(answer["orderID"]) is None


def test_post_only_order_that_crosses_is_refused(clob, make_broker):
    broker = make_broker()
    clob.set_book(UP_TOKEN, asks=[(0.55, 10)])
    order = broker.client.create_order(OrderArgs(token_id=UP_TOKEN, price=0.56, size=10, side="BUY"))
    with pytest.raises(PolyApiException) as refused:
        broker.client.post_order(order, OrderType.GTC, post_only=True)
    assert refused.value.error_msg == {"error": "invalid post-only order: order crosses book"}


def test_private_key_never_appears_in_errors_reprs_or_logs(clob, wallet, caplog):
    account, funder = wallet
    key_hex = account.key.hex().removeprefix("0x")
    issued = clob.issue_key(account.address)
    wrong_secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    texts: list[str] = []
    bad_envs = [
        env_for(account, funder, POLYMARKET_SIGNATURE_TYPE="0"),
        env_for(account, "not-an-address"),
        env_for(account, funder, POLYMARKET_API_KEY=issued.api_key),
        {**env_for(account, funder), "POLYMARKET_PRIVATE_KEY": key_hex[:-1] + "g"},
        env_for(account, funder, POLYMARKET_SIGNATURE_TYPE="3"),
    ]
    caplog.set_level(logging.DEBUG)
    for env in bad_envs:
        with pytest.raises(LiveBrokerError) as err:
            LiveCredentials.from_env(env)
        texts += [str(err.value), repr(err.value)]
    creds = LiveCredentials.from_env(env_for(account, funder, POLYMARKET_API_KEY=issued.api_key,
                                             POLYMARKET_API_SECRET=wrong_secret,
                                             POLYMARKET_API_PASSPHRASE=issued.passphrase))
    texts.append(repr(creds))
    for host in (clob.url, "http://127.0.0.1:9"):  # refused credentials; nothing listening
        with pytest.raises(LiveBrokerError) as err:
            LiveBroker(creds, host, max_order_dollars=10, max_total_dollars=10).connect()
        texts += [str(err.value), repr(err.value)]
    clob.link(account.address, funder)
    clob.fund(funder, 100.0)
    clob.approve(funder)
    broker = connected(LiveCredentials.from_env(env_for(account, funder)), clob.url,
                       max_order_dollars=10, max_total_dollars=10)
    broker.check_account()
    clob.fail_next("/order", 401, ERR_UNAUTHORIZED)
    with pytest.raises(LiveBrokerFatal) as err:
        buy_up(broker, show(clob, UP_TOKEN, asks=[(0.5, 100)]))
    texts += [str(err.value), repr(broker), caplog.text]

    assert texts and all(key_hex.lower() not in text.lower() for text in texts)
    assert "maker address not allowed" in texts[0]  # the EOA refusal explains the venue's answer


def test_from_env_reads_credentials_the_clob_url_and_the_exit_retry_limit_and_connect_opens_the_session(
        clob, wallet):
    account, funder = wallet
    env = env_for(account, funder, UPDOWN_CLOB_URL=clob.url, UPDOWN_EXIT_RETRY_SECONDS="45")

    broker = LiveBroker.from_env(max_order_dollars=5.0, max_total_dollars=20.0, environ=env)

    assert broker.client.host == clob.url and broker.funder == funder and broker.address == account.address
    assert broker.exit_retry_seconds == 45.0
    assert clob.requests == []  # building the broker sends nothing
    broker.connect()
    assert ("POST", "/auth/api-key") in clob.requests and ("GET", "/auth/api-keys") in clob.requests
    with pytest.raises(LiveBrokerError, match="UPDOWN_EXIT_RETRY_SECONDS"):
        LiveBroker.from_env(max_order_dollars=5.0, max_total_dollars=20.0,
                            environ={**env, "UPDOWN_EXIT_RETRY_SECONDS": "soon"})


def test_fake_refuses_limit_orders_off_the_tick_grid_or_below_the_minimum_size(clob, make_broker):
    broker = make_broker()
    off_grid = broker.client.builder.build_order(
        OrderArgs(token_id=UP_TOKEN, price=0.505, size=10, side="BUY"), CreateOrderOptions("0.001", False)
    )
    small = broker.client.create_order(OrderArgs(token_id=UP_TOKEN, price=0.40, size=3, side="BUY"))

    with pytest.raises(PolyApiException) as tick_refusal:
        broker.client.post_order(off_grid, OrderType.GTC)
    with pytest.raises(PolyApiException) as size_refusal:
        broker.client.post_order(small, OrderType.GTC)

    assert "breaks minimum tick size rule: 0.01" in tick_refusal.value.error_msg["error"]
    assert "Size (3) lower than the minimum: 5" in size_refusal.value.error_msg["error"]
