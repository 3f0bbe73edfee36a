"""LiveBroker with the real py_clob_client_v2 (real signing, real HTTP) against the local fake CLOB."""

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
from py_clob_client_v2.signer import Signer

from engine.broker import taker_fee as venue_fee
from engine.live_broker import LiveBroker
from engine.live_credentials import LiveBrokerError, LiveBrokerFatal, LiveCredentials
from engine.positions import EXIT_SHUTDOWN, UP
from strategies.base import Action
from streamers.frames import MarketInfo
from tests.fake_clob import (
    ENGINE_RESTART,
    ERR_UNAUTHORIZED,
    TOO_MANY_REQUESTS,
    TRADING_DISABLED,
    FakeClob,
    FakeMarket,
)

CID = "0x" + "cd" * 32
UP_TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
DOWN_TOKEN = "52114319501245915516055106046884209969926127482827954674443846427813813222426"


@dataclass
class Book:
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    tick_size: float = 0.01
    updated_at: float = 0.0


def market_info(cid: str = CID, up: str = UP_TOKEN, down: str = DOWN_TOKEN, min_size: float = 5.0) -> MarketInfo:
    return MarketInfo("BTC", cid, up, down, 1_800_000_000, 1_800_000_900, 100_000.0, 0.01, min_size, 0.07)


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


@pytest.fixture
def make_broker(clob, wallet):
    account, funder = wallet
    clob.fund(funder, 1000.0)
    sleeps: list[float] = []

    def make(**kwargs) -> LiveBroker:
        caps = {"max_order_dollars": 50.0, "max_total_dollars": 500.0, "sleep": sleeps.append} | kwargs
        broker = LiveBroker(LiveCredentials.from_env(env_for(account, funder)), clob.url, **caps)
        broker.sleeps = sleeps
        return broker

    return make


def show(clob: FakeClob, token: str, bids=(), asks=()) -> Book:
    """The same levels on the venue and in the engine's local book."""
    clob.set_book(token, bids=list(bids), asks=list(asks))
    return Book(list(bids), list(asks))


def buy_up(broker: LiveBroker, book: Book, dollars: float = 10.0, info: MarketInfo | None = None):
    return broker.execute(Action.BUY, info or market_info(), None, book, None, dollars, 1_800_000_100.0, 0.5, 0.0)


def order_posts(clob: FakeClob) -> int:
    return sum(1 for method, path in clob.requests if (method, path) == ("POST", "/order"))


def test_buy_walking_two_levels_books_the_venues_shares_price_and_fee(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    book = show(clob, UP_TOKEN, bids=[(0.48, 100)], asks=[(0.50, 10), (0.52, 100)])

    result = buy_up(broker, book, dollars=10.0)

    pos = result.position
    assert result.opened and pos is not None and pos.side == UP and pos.token_id == UP_TOKEN
    gross = 10 + 5.0 / 0.52  # 10 shares at 0.50, the other $5 at 0.52
    assert pos.cost == pytest.approx(10.0, abs=1e-6)
    assert clob.usdc(funder) == pytest.approx(990.0, abs=1e-6)
    assert pos.entry_price == pytest.approx(10.0 / gross, abs=1e-6)
    venue_charged = venue_fee(10, 0.50, 0.07) + venue_fee(5.0 / 0.52, 0.52, 0.07)
    assert pos.entry_fee == pytest.approx(venue_charged, abs=3e-4)  # fee at the average price, see module doc
    assert pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=2e-5)  # exact up to fee rounding
    posted = clob.posted[-1]
    assert posted["orderType"] == "FAK" and posted["order"]["side"] == "BUY"
    assert posted["order"]["makerAmount"] == "10000000"  # $10.00
    assert int(posted["order"]["makerAmount"]) / int(posted["order"]["takerAmount"]) == pytest.approx(0.52, abs=1e-5)
    assert clob.book_levels(UP_TOKEN, "asks") == [(0.52, pytest.approx(100 - 5.0 / 0.52, abs=1e-5))]


def test_fak_partial_fill_books_only_what_filled(clob, make_broker):
    broker = make_broker(max_slippage=0.05)
    book = show(clob, UP_TOKEN, asks=[(0.50, 8), (0.70, 100)])  # 0.70 lies past the slippage cap

    pos = buy_up(broker, book, dollars=10.0).position

    assert pos is not None
    assert pos.cost == pytest.approx(4.0)
    assert pos.shares == pytest.approx(8 - venue_fee(8, 0.5, 0.07) / 0.5, abs=1e-6)
    assert broker.spent == pytest.approx(4.0)
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
    book = show(clob, UP_TOKEN, asks=[(0.50, 3)])

    result = buy_up(broker, book)

    assert result.position is None
    assert broker.skipped.below_min_size == 1
    assert order_posts(clob) == 0


def test_tick_and_min_size_come_from_the_market_info_the_client_fetches(clob, make_broker):
    cid = "0x" + "ab" * 32
    clob.add_market(FakeMarket(cid, "111", "222", tick="0.001", min_size=20.0))
    info = market_info(cid, "111", "222", min_size=5.0)  # discovery says 5; the venue says 20
    broker = make_broker()

    thin = show(clob, "111", asks=[(0.503, 12)])
    assert buy_up(broker, thin, info=info).position is None
    assert broker.skipped.below_min_size == 1 and order_posts(clob) == 0

    deep = show(clob, "111", asks=[(0.503, 12), (0.507, 50)])
    pos = buy_up(broker, deep, dollars=15.0, info=info).position
    assert pos is not None
    order = clob.posted[-1]["order"]
    assert int(order["makerAmount"]) / int(order["takerAmount"]) == pytest.approx(0.507, abs=1e-5)  # 0.001 grid
    assert clob.requests.count(("GET", f"/clob-markets/{cid}")) == 1


def test_sell_after_buy_realizes_the_venues_proceeds(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held = pos.shares
    bids = show(clob, UP_TOKEN, bids=[(0.60, 100)], asks=[(0.62, 100)])

    result = broker.execute(Action.SELL, market_info(), pos, bids, None, 10.0, 1_800_000_200.0, 0.6, 0.001)

    assert result.position is None
    record = result.record
    sold = int(held * 100) / 100
    assert record.shares == pytest.approx(held)
    assert record.exit_price == pytest.approx(0.60)
    sell_fee = venue_fee(sold, 0.60, 0.07)
    assert record.pnl == pytest.approx(sold * 0.60 - sell_fee - 10.0, abs=1e-6)
    assert clob.usdc(funder) == pytest.approx(1000.0 + record.pnl, abs=1e-5)
    assert broker.skipped.dust_shares == pytest.approx(held - sold)


def test_sell_refused_for_balance_keeps_the_position_and_retries_next_tick(clob, make_broker):
    clob.hold_new_shares = True  # the venue credits bought shares late
    broker = make_broker()
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    bids = show(clob, UP_TOKEN, bids=[(0.55, 100)])

    first = broker.execute(Action.SELL, market_info(), pos, bids, None, 10.0, 1_800_000_101.0, 0.55, 0.0)

    assert first.position is pos and first.record is None
    assert broker.skipped.rejected == {"not_enough_balance": 1}
    assert clob.balance_updates == 1
    clob.settle()
    second = broker.execute(Action.SELL, market_info(), pos, bids, None, 10.0, 1_800_000_101.5, 0.55, 0.0)
    assert second.position is None and second.record.exit_price == pytest.approx(0.55)


def test_close_at_book_retries_a_refused_sale_with_backoff(clob, make_broker):
    clob.hold_new_shares = True
    broker = make_broker(sell_attempts=3, retry_backoff=0.5)
    broker._sleep = lambda seconds: (broker.sleeps.append(seconds), clob.settle())
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held = pos.shares
    bids = show(clob, UP_TOKEN, bids=[(0.45, 100)])

    record = broker.close_at_book(market_info(), pos, bids, None, 1_800_000_300.0, 0.45, 0.0, EXIT_SHUTDOWN)

    assert broker.sleeps == [0.5]
    assert record.shares == pytest.approx(held) and record.exit_reason == EXIT_SHUTDOWN
    assert broker.skipped.unsold_shares == 0.0


def test_close_at_book_books_unsellable_shares_at_zero_and_counts_them(clob, make_broker):
    clob.hold_new_shares = True  # never settles
    broker = make_broker(sell_attempts=2)
    pos = buy_up(broker, show(clob, UP_TOKEN, asks=[(0.50, 100)])).position
    held = pos.shares

    record = broker.close_at_book(market_info(), pos, show(clob, UP_TOKEN, bids=[(0.45, 100)]), None,
                                  1_800_000_300.0, 0.45, 0.0, EXIT_SHUTDOWN)

    assert record.pnl == pytest.approx(-10.0)
    assert broker.skipped.unsold_shares == pytest.approx(held)
    assert broker.skipped.rejected == {"not_enough_balance": 2}


def test_venue_refusals_are_counted_by_reason_and_trading_continues(clob, make_broker):
    broker = make_broker()
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])
    for status, error in (TOO_MANY_REQUESTS, TRADING_DISABLED, ENGINE_RESTART):
        clob.fail_next("/order", status, error)
        assert buy_up(broker, book).position is None

    assert broker.skipped.rejected == {"rate_limited": 1, "trading_disabled": 1, "engine_restart": 1}
    assert buy_up(broker, book).position is not None
    assert broker.skipped.to_dict()["rejected"]["rate_limited"] == 1


def test_per_order_and_per_run_dollar_caps(clob, make_broker):
    broker = make_broker(max_order_dollars=6.0, max_total_dollars=10.0)
    book = show(clob, UP_TOKEN, asks=[(0.50, 1000)])

    buy_up(broker, book, dollars=25.0)
    assert clob.posted[-1]["order"]["makerAmount"] == "6000000"
    buy_up(broker, book, dollars=25.0)
    assert clob.posted[-1]["order"]["makerAmount"] == "4000000"  # what is left of the run's $10
    assert buy_up(broker, book, dollars=25.0).position is None
    assert broker.skipped.exposure_cap == 1 and order_posts(clob) == 2


def test_bad_api_secret_is_fatal_at_start(clob, wallet):
    account, funder = wallet
    issued = clob.issue_key(account.address)
    wrong_secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    env = env_for(account, funder, POLYMARKET_API_KEY=issued.api_key, POLYMARKET_API_SECRET=wrong_secret,
                  POLYMARKET_API_PASSPHRASE=issued.passphrase)

    with pytest.raises(LiveBrokerFatal, match="401"):
        LiveBroker(LiveCredentials.from_env(env), clob.url, max_order_dollars=10, max_total_dollars=10)


def test_401_on_an_order_is_fatal(clob, make_broker):
    broker = make_broker()
    clob.fail_next("/order", 401, ERR_UNAUTHORIZED)

    with pytest.raises(LiveBrokerFatal):
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
    assert refused.value.status_code == 400 and refused.value.error_msg == {"error": "invalid signature"}

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
    assert broker.client.post_order(order, OrderType.GTC, post_only=True)["status"] == "live"
    assert len(clob.resting_user_orders()) == 1

    assert broker.close_all() == 1
    assert clob.resting_user_orders() == []


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
            LiveBroker(creds, host, max_order_dollars=10, max_total_dollars=10)
        texts += [str(err.value), repr(err.value)]
    clob.fund(funder, 100.0)
    broker = LiveBroker(LiveCredentials.from_env(env_for(account, funder)), clob.url,
                        max_order_dollars=10, max_total_dollars=10)
    clob.fail_next("/order", 401, ERR_UNAUTHORIZED)
    with pytest.raises(LiveBrokerFatal) as err:
        buy_up(broker, show(clob, UP_TOKEN, asks=[(0.5, 100)]))
    texts += [str(err.value), repr(broker), caplog.text]

    assert texts and all(key_hex.lower() not in text.lower() for text in texts)
    assert "maker address not allowed" in texts[0]  # the EOA refusal explains the venue's answer


def test_lost_answer_is_reconciled_from_the_venues_order_and_trades(clob, wallet, make_broker):
    _, funder = wallet
    broker = make_broker()
    book = show(clob, UP_TOKEN, asks=[(0.50, 10), (0.52, 100)])
    clob.drop_answer_next("/order")

    pos = buy_up(broker, book, dollars=10.0).position

    assert pos is not None and pos.cost == pytest.approx(10.0, abs=1e-6)
    assert pos.shares == pytest.approx(clob.shares(funder, UP_TOKEN), abs=1e-3)
    assert broker.skipped.unknown_outcome == 0 and broker.spent == pytest.approx(10.0, abs=1e-6)


def test_lost_answer_the_venue_cannot_confirm_counts_as_unknown_and_against_the_cap(clob, make_broker):
    broker = make_broker(max_total_dollars=15.0)
    book = show(clob, UP_TOKEN, asks=[(0.50, 100)])
    clob.drop_answer_next("/order")
    clob.fail_next("/data/order/", 503, "service unavailable")

    assert buy_up(broker, book, dollars=10.0).position is None
    assert broker.skipped.unknown_outcome == 1 and broker.skipped.rejected == {"network": 1}
    buy_up(broker, book, dollars=10.0)
    assert clob.posted[-1]["order"]["makerAmount"] == "5000000"  # the lost $10 counts as spent


def test_from_env_reads_credentials_and_the_clob_url(clob, wallet):
    account, funder = wallet
    env = env_for(account, funder, UPDOWN_CLOB_URL=clob.url)

    broker = LiveBroker.from_env(max_order_dollars=5.0, max_total_dollars=20.0, environ=env)

    assert broker.client.host == clob.url and broker.funder == funder and broker.address == account.address
    assert ("POST", "/auth/api-key") in clob.requests and ("GET", "/auth/api-keys") in clob.requests


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
