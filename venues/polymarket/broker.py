"""Live broker: sends the engine's orders to Polymarket's CLOB V2 through py-clob-client-v2.

An `engine.broker.Broker`, like PaperBroker (`execute`, `close_at_book`, `begin_tick`, `close_all`,
`skipped`); it is `blocking`: every method is synchronous and may wait on HTTP, so the engine runs it in a
worker thread (`asyncio.to_thread`).
This module is the engine's side; the work is done by `orders.OrderDesk` (build, sign, post),
`reconcile.Reconciler` (fills not shown yet, settlement), `account.Account` (session, pUSD, approvals,
the cap) and `venue.Venue` (the venue's answers and refusals, market rules).

Documented choices:
- Orders are marketable FAK "market" orders: a BUY spends a dollar amount (floored to cents, the venue's
  accuracy for a market buy's maker amount) and a SELL offers the held shares floored to 0.01. The limit
  is the worst book level the order reaches on the tick grid, capped `max_slippage` from the touch. FAK
  rather than FOK: the book moves between our snapshot and the match, and a partial fill at our limit
  is better than none; FOK can be chosen with `order_type="FOK"`.
- Fees as CLOB V2 charges them: the taker fee `shares x rate x (p(1-p))^exponent` is paid in pUSD on top
  of a buy, every bought share is delivered, and a sale's fee comes out of its proceeds. A fill is booked
  from the venue's amounts (`makingAmount` / `takingAmount`, or the trades of the order): a buy's cost is
  the making amount plus the fee. The fee is computed per trade when the trades are read, else at the
  fill's average price (exact for a one-level fill; across levels it overstates the venue's fee by a
  fraction of a cent). That `makingAmount` excludes the fee is an inference from the V2 client, which
  sets `amount + fee` aside for a market buy (`fees.adjust_buy_amount_for_fees`).
- Caps, fees included: a buy is sent only if its largest possible cost (maker amount plus the fee at the
  lowest grid price it could fill at) fits `max_order_dollars`, what is left of `max_total_dollars` after
  the dollars spent and those reserved by orders still pending, and the pUSD balance the venue reported.
- Delayed and unanswered orders: the venue holds API taker orders on crypto markets (~250 ms) and answers
  `delayed` with zero amounts; a POST that times out or gets a 5xx (other than 503) may still have
  matched. Such an order is pending: its dollars stay reserved and no other order goes to its market
  while the venue's trades (`taker_order_id`) are searched for its fill, first within the call, then at
  each later call. A fill found later is booked and handed to the engine at its next call for that market;
  after `release_after` seconds without one the order is released (counted `unknown_outcome`) but still
  watched for `watch_for` seconds. `GET /data/order` is not used: it answers nothing for a filled FAK.
- Settlement: V2 trades settle on chain after the match and can end FAILED. Booked trades are checked
  until CONFIRMED; a FAILED buy is taken out of its position and the cap, a FAILED sale's shares are
  reported as still held; both count as refusals (`trade_failed`).
- Refusals are counted by reason and logged once. Retryable ones (balance not yet credited, 429, 425,
  503, network) leave a position open for the next exit decision; `close_at_book` retries them with
  backoff for up to `exit_retry_seconds` (an engine restart, 425, lasts about 90 s), reading the venue's
  book again after each wait, and reports what it could not sell as still held.
- LiveBrokerFatal (one sentence) ends the run where no retry can help: 401, signature or identity
  refusals, an order version mismatch, a missing approval, a banned or close-only address.
- Market rules (tick, minimum size, fee rate and exponent, neg risk) come from `GET /clob-markets/{cid}`,
  cached per market and fetched again when the engine's book reports another tick (a `tick_size_change`
  frame) or the venue refuses a price for its tick.
- Start-up, before the first decision: `connect()` obtains and proves the L2 API credentials (the
  constructor sends nothing); `check_account()` asks the venue to re-read the funder's pUSD balance and
  allowances from the chain, then refuses to start without enough pUSD for one order and its fee or
  without the pUSD approvals the venue lists; the CTF share approvals are checked at the first buy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

from py_clob_client_v2 import OrderType
from py_clob_client_v2.exceptions import PolyException

from core.endpoints import Endpoints
from core.frames import MarketInfo
from engine.broker import SHARE_STEP, Book, Fill, PositionRules
from engine.positions import UP, Position
from strategies.base import Action
from venues.polymarket.account import Account, open_session
from venues.polymarket.credentials import LiveBrokerError, LiveBrokerFatal, LiveCredentials
from venues.polymarket.orders import OrderCaps, OrderDesk
from venues.polymarket.reconcile import Reconciler
from venues.polymarket.venue import (
    DEFAULT_EXIT_RETRY_SECONDS,
    EPS,
    PENDING,
    POLYGON,
    RETRYABLE,
    Client,
    LiveSkipCounts,
    Refused,
    Venue,
    error_text,
    exit_retry_seconds,
)

__all__ = ["LiveBroker", "LiveBrokerError", "LiveBrokerFatal", "LiveSkipCounts"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 10.0  # longest single wait between two tries of a shutdown sale


class LiveBroker(PositionRules):
    blocking = True  # every call may wait on HTTP: the engine runs it in a worker thread

    def __init__(
        self,
        credentials: LiveCredentials,
        host: str,
        *,
        max_order_dollars: float,
        max_total_dollars: float,
        max_slippage: float = 0.05,
        order_type: str = OrderType.FAK,
        chain_id: int = POLYGON,
        exit_retry_seconds: float = DEFAULT_EXIT_RETRY_SECONDS,
        retry_backoff: float = 0.5,
        release_after: float = 10.0,
        watch_for: float = 300.0,
        settle_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """A broker for the CLOB at `host`; nothing goes over the network until `connect()`. Raise
        LiveBrokerError with a one-sentence reason for settings that cannot work.

        `max_order_dollars` caps each order and `max_total_dollars` the dollars committed to entries over
        the run, fees included; `max_slippage` bounds how far past the touch an order's limit may go;
        `exit_retry_seconds` bounds how long a closing sale keeps retrying retryable refusals;
        `release_after` / `watch_for` bound how long a pending order blocks its market and is watched;
        `settle_wait` bounds the wait for pending orders and trade settlement at the end of the run.
        """
        if order_type not in (OrderType.FAK, OrderType.FOK):
            raise LiveBrokerError(f"order type must be FAK or FOK, not {order_type!r}.")
        if max_order_dollars <= 0 or max_total_dollars <= 0:
            raise LiveBrokerError("the live order caps must be positive dollar amounts.")
        self.exit_retry_seconds = max(0.0, exit_retry_seconds)
        self.retry_backoff = retry_backoff
        self.settle_wait = settle_wait
        self._sleep = sleep
        self.skipped = LiveSkipCounts()
        self.address = credentials.address
        self.funder = credentials.funder
        self._credentials = credentials
        self._host = host
        self.client = Client(
            host=host,
            chain_id=chain_id,
            key=credentials.private_key,
            signature_type=credentials.signature_type,
            funder=credentials.funder,
        )
        self._venue = venue = Venue(self.client, self.skipped)
        self._account = Account(venue, credentials.funder, chain_id)
        self._fills = Reconciler(venue, self._account, release_after=release_after, watch_for=watch_for,
                                 sleep=sleep, monotonic=monotonic)
        self.caps = OrderCaps(max_order_dollars, max_total_dollars, max_slippage, order_type)
        self._orders = OrderDesk(venue, self._account, self._fills, self.caps)
        self._last_buy: str | None = None  # order id of the fill the last buy() returned

    @classmethod
    def from_env(
        cls,
        *,
        max_order_dollars: float,
        max_total_dollars: float,
        max_slippage: float = 0.05,
        order_type: str = OrderType.FAK,
        environ: Mapping[str, str] | None = None,
    ) -> LiveBroker:
        """Credentials from the POLYMARKET_* variables, the host from UPDOWN_CLOB_URL (default the venue),
        the exit retry limit from UPDOWN_EXIT_RETRY_SECONDS (default 120); not connected yet."""
        env = os.environ if environ is None else environ
        return cls(
            LiveCredentials.from_env(env),
            Endpoints.from_env(env).clob,
            max_order_dollars=max_order_dollars,
            max_total_dollars=max_total_dollars,
            max_slippage=max_slippage,
            order_type=order_type,
            exit_retry_seconds=exit_retry_seconds(env),
        )

    def __repr__(self) -> str:
        return f"LiveBroker(address={self.address}, funder={self.funder}, host={self.client.host})"

    @property
    def spent(self) -> float:
        """Dollars committed to entries this run, fees included."""
        return self._account.spent

    @property
    def balance(self) -> float | None:
        """The funder's pUSD as last read, minus what the run paid since."""
        return self._account.balance

    def reserved(self) -> float:
        """Dollars held against the cap by orders whose fill is not known yet."""
        return self._fills.reserved()

    # ---- start-up -------------------------------------------------------------------------------
    def connect(self) -> None:
        """Obtain the L2 credentials (given, else created or derived from the key) and prove them with one
        request; raise LiveBrokerError (LiveBrokerFatal when the venue refuses them) with a one-sentence
        reason."""
        open_session(self.client, self._credentials, self._host)

    def check_account(self) -> float:
        """Before the first decision: have the venue re-read the funder's pUSD balance and allowances
        from the chain, then check them; the balance in dollars, or LiveBrokerError naming what is
        missing and how to set it."""
        return self._account.check()

    # ---- the engine's interface -------------------------------------------------------------
    def begin_tick(self) -> None:
        """Nothing to reset: the venue accounts for the liquidity our orders take."""

    def route(self, action: Action, info: MarketInfo, position: Position | None) -> Action:
        """After the venue's news: a fill of an earlier pending order of this market is handed over first
        (as the action that books it); while one is pending nothing is sent (HOLD)."""
        fills = self._fills
        fills.housekeeping()
        cid = info.condition_id
        late = fills.late.get(cid)
        if late is not None:
            if late.side == "BUY" and position is None:
                action = Action.BUY if late.token == info.token_up else Action.SELL
            elif late.side == "SELL" and position is not None and position.token_id == late.token:
                action = Action.SELL if position.side == UP else Action.BUY
            else:
                fills.orphan(fills.late.pop(cid))
        elif fills.blocked(cid):
            self.skipped.pending_fill += 1
            return Action.HOLD
        self._last_buy = None
        return action

    def opened(self, position: Position) -> None:
        """Keep the position with its booked buy, to take a trade that fails at settlement out of it."""
        booked = self._fills.booked.get(self._last_buy or "")
        if booked is not None:
            booked.position = position

    def buy(self, token_id: str, book: Book | None, dollars: float, info: MarketInfo) -> Fill | None:
        """Spend up to `dollars` (fees included) on `token_id` with one FAK order; None (counted) when
        nothing traded."""
        fill = self._fills.take_late(info, token_id, "BUY") or self._orders.buy(info, token_id, book, dollars)
        if fill is None:
            return None
        self._last_buy = fill.order_id
        # every share is delivered; the fee is paid on top: the position books it as its entry fee (the run
        # cap and the balance count cash + fee where the order is booked)
        return Fill(fill.shares, fill.shares, fill.cash, fill.fee, fill.avg_price, fill.limit)

    def sell(self, token_id: str, book: Book | None, shares: float, info: MarketInfo) -> Fill | None:
        """Sell up to `shares` with one FAK order; None when refused (a position stays open and retries)."""
        fill = self._fills.take_late(info, token_id, "SELL")
        if fill is None:
            try:
                fill = self._orders.sell(info, token_id, book, shares)
            except Refused:
                return None
        return Fill(fill.shares, fill.shares, fill.cash, fill.fee, fill.avg_price, fill.limit)

    def sell_out(
        self, info: MarketInfo, position: Position, book: Book | None, reason: str
    ) -> tuple[float, float, float]:
        """close_at_book's sale: after the venue's news, sell what the bids take, retrying retryable refusals
        (engine restart, balance not yet credited, a pending sale) with backoff for up to
        `exit_retry_seconds` against the venue's current book; shares still unsold are reported as still
        held (close_at_book books them at 0)."""
        fills = self._fills
        fills.housekeeping()
        held = position.shares
        sold = cash = fee = 0.0
        waited, pause = 0.0, self.retry_backoff
        while True:
            late = fills.take_late(info, position.token_id, "SELL")
            if late is not None:
                sold, cash, fee = sold + late.shares, cash + late.cash, fee + late.fee
            if held - sold < SHARE_STEP - EPS:
                break
            if fills.blocked(info.condition_id):
                why = PENDING
            else:
                try:
                    fill = self._orders.sell(info, position.token_id, book, held - sold)
                except Refused as refused:
                    why = refused.reason
                else:
                    sold, cash, fee = sold + fill.shares, cash + fill.cash, fee + fill.fee
                    continue
            if why not in RETRYABLE or waited >= self.exit_retry_seconds - EPS:
                break
            step = min(pause, _MAX_BACKOFF, self.exit_retry_seconds - waited)
            self._sleep(step)
            waited += step
            pause *= 2
            fills.reconcile()
            book = self._venue.book(position.token_id) or book  # the engine's book is stale after a wait
        unsold = held - sold
        if unsold >= SHARE_STEP - EPS:
            self.skipped.unsold_shares += unsold
            self.skipped.hold(info, position.token_id, unsold, f"unsold at {reason}")
            log.warning("%s %s: %.2f shares of %s could not be sold (%s); they stay in the wallet and are booked at 0",
                        info.asset, position.side, unsold, position.token_id, reason)
        elif unsold > 0:
            self.skipped.dust_shares += unsold
        return sold, cash, fee

    def close_all(self) -> int:
        """End of run: cancel every resting order of this account (FAK/FOK should leave none), wait up to
        `settle_wait` for pending orders and the settlement of booked trades, and report what is left;
        the number of orders cancelled."""
        canceled: list = []
        try:
            response = self.client.cancel_all()
            canceled = (response.get("canceled") or []) if isinstance(response, dict) else []
        except PolyException as exc:
            log.warning("cancel-all failed: %s", error_text(exc))
        if canceled:
            log.warning("cancelled %d resting order(s) on shutdown", len(canceled))
        self._fills.finish(self.settle_wait)
        return len(canceled)
