"""Live broker: sends the engine's orders to Polymarket's CLOB V2 through py-clob-client-v2.

Same interface as PaperBroker (`execute`, `close_at_book`, `begin_tick`, `skipped`); every method is
synchronous and may block on HTTP, so the engine runs it in a worker thread (`asyncio.to_thread`).

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
- `check_account()` (before the first decision) asks the venue to re-read the funder's pUSD balance and
  allowances from the chain, then refuses to start without enough pUSD for one order and its fee or
  without the pUSD approvals the venue lists; the CTF share approvals are checked at the first buy.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from py_clob_client_v2 import (
    ApiCreds,
    AssetType,
    BalanceAllowanceParams,
    ClobClient,
    MarketOrderArgs,
    OrderType,
    PartialCreateOrderOptions,
    TradeParams,
)
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, SignedOrderV2

from core.endpoints import Endpoints
from core.fees import fee_per_share, taker_fee
from core.frames import MarketInfo
from engine.broker import (
    SHARE_STEP,
    Book,
    Execution,
    Fill,
    PositionRules,
    SkipCounts,
    ceil_to_tick,
    floor_shares,
    floor_to_tick,
)
from engine.positions import DOWN, UP, Position, TradeRecord, realize
from strategies.base import Action
from venues.polymarket.credentials import LiveBrokerError, LiveBrokerFatal, LiveCredentials

__all__ = ["LiveBroker", "LiveBrokerError", "LiveBrokerFatal", "LiveSkipCounts"]

log = logging.getLogger(__name__)
T = TypeVar("T")

POLYGON = 137
MIN_MARKET_BUY_DOLLARS = 1.0  # the venue's minimum notional for a market buy
ENV_EXIT_RETRY = "UPDOWN_EXIT_RETRY_SECONDS"
DEFAULT_EXIT_RETRY_SECONDS = 120.0  # covers an engine restart (425, about 90 s)
_START_HEADROOM = 1.10  # one minimum order plus a fee of up to 10 %
_EPS = 1e-9
_FEE_ROUNDING = 1e-4  # dollars kept aside for the venue rounding each fill's fee to 5 decimals
_MARKET_CACHE = 64  # markets whose rules are kept (8 live at a time: 4 assets x current/next window)
_TICKS = ("0.1", "0.01", "0.005", "0.0025", "0.001", "0.0001")  # the client's rounding table keys
# the venue's accuracy for FAK/FOK orders, in 6-decimal units: maker amount 2 decimals, taker amount 4
_MAKER_STEP = 10_000
_TAKER_STEP = 100
_POLLS = (0.1, 0.2, 0.4, 0.8)  # seconds between looks at a pending order's trades within the call
_LOOK_EVERY = 1.0  # seconds between looks at pending orders and booked trades in later calls
_MAX_BACKOFF = 10.0  # longest single wait between two tries of a shutdown sale
_LOOKBACK = 60  # seconds before an order was sent that its trades are searched from (clock skew)

# refusal reasons (the keys of LiveSkipCounts.rejected)
NOT_ENOUGH_BALANCE = "not_enough_balance"
NO_MATCH = "no_match"
INVALID_ORDER = "invalid_order"
TICK_SIZE = "tick_size"
RATE_LIMITED = "rate_limited"
ENGINE_RESTART = "engine_restart"
TRADING_DISABLED = "trading_disabled"
NETWORK = "network"
SERVER_ERROR = "server_error"
TRADE_FAILED = "trade_failed"
OTHER = "other"
PENDING = "pending"  # not a refusal: the order's fill is still unknown (never counted in `rejected`)
# a sale refused for one of these may succeed later: exits retry them
_RETRYABLE = frozenset({NOT_ENOUGH_BALANCE, RATE_LIMITED, ENGINE_RESTART, TRADING_DISABLED, NETWORK,
                        SERVER_ERROR, PENDING})

# venue messages that mean the run cannot trade: fatal, with the usual cause
_FATAL = {
    "invalid signature": "check POLYMARKET_SIGNATURE_TYPE and POLYMARKET_FUNDER (the wallet holding the funds)",
    "invalid order version": "the venue expects another order version than py-clob-client-v2 signed",
    "order_version_mismatch": "the market takes orders for another exchange version than the CTF Exchange V2 "
                              "orders this bot signs",
    "maker address not allowed": "CLOB V2 refuses plain EOA makers; use a proxy or Safe wallet",
    "has to be the owner of the api key": "the API credentials belong to another account; set this key's own or "
                                          "unset POLYMARKET_API_KEY/SECRET/PASSPHRASE to derive them",
    "has to be the address of the api key": "the order's signer is not the address its API key was issued to; set "
                                            "the API credentials of POLYMARKET_PRIVATE_KEY or unset them to derive "
                                            "them",
    "allowance is not enough": "the funder has not approved the exchange contracts to move its pUSD or shares; "
                               "set the approvals once (README, 'Live orders') and start again",
    "address banned": "the venue banned this address",
    "closed only mode": "the venue lets this address only close positions",
}


@dataclass(slots=True)
class LiveSkipCounts(SkipCounts):
    """PaperBroker's counts (not sent: below the minimum, empty book, dust) plus the venue's."""

    exposure_cap: int = 0  # entries not sent: the run's dollar cap (fees included) is spent or reserved
    low_balance: int = 0  # entries not sent: the funder's pUSD cannot pay a minimum order and its fee
    pending_fill: int = 0  # orders not sent: an earlier order of the same market awaits its fill
    unknown_outcome: int = 0  # orders whose fill the venue had not shown when they were released
    unconfirmed_trades: int = 0  # booked trades not yet CONFIRMED (nor FAILED) when the run stopped
    unsold_shares: float = 0.0  # shares close_at_book could not sell: still in the wallet, booked at 0
    rejected: dict[str, int] = field(default_factory=dict)  # sent (or built) and refused, by reason
    still_held: list[dict] = field(default_factory=list)  # shares in the wallet that the run's PnL leaves out

    def to_dict(self) -> dict:
        return {
            **SkipCounts.to_dict(self),
            "exposure_cap": self.exposure_cap,
            "low_balance": self.low_balance,
            "pending_fill": self.pending_fill,
            "unknown_outcome": self.unknown_outcome,
            "unconfirmed_trades": self.unconfirmed_trades,
            "unsold_shares": round(self.unsold_shares, 6),
            "rejected": dict(sorted(self.rejected.items())),
            "still_held": [dict(h) for h in self.still_held],
        }

    def refused(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def hold(self, info: MarketInfo, token: str, shares: float, why: str) -> None:
        side = UP if token == info.token_up else DOWN
        self.still_held.append({"asset": info.asset, "side": side, "token_id": token,
                                "condition_id": info.condition_id, "shares": round(shares, 6), "why": why})


@dataclass(frozen=True, slots=True)
class _Rules:
    """A market's trading rules as the venue states them."""

    tick: str  # e.g. "0.01", a key of the client's rounding table
    min_size: float  # shares
    fee_rate: float
    fee_exponent: float
    neg_risk: bool

    @property
    def tick_value(self) -> float:
        return float(self.tick)


@dataclass(frozen=True, slots=True)
class _VenueFill:
    shares: float  # shares traded (all delivered on a buy)
    cash: float  # dollars paid (buy, fee excluded) or received before the fee (sale)
    fee: float  # USDC taker fee
    avg_price: float
    limit: float
    order_id: str


@dataclass(slots=True)
class _Pending:
    """An order the venue accepted (or may have) whose fill is not known yet."""

    order_id: str
    info: MarketInfo
    token: str
    side: str
    limit: float
    rules: _Rules
    reserved: float  # dollars held against the cap (buys)
    sent_at: float  # unix seconds, the scale of the trades' match_time
    release_at: float  # monotonic: the reservation and the market's block end here
    forget_at: float  # monotonic: the trades are no longer searched after this
    released: bool = False


@dataclass(slots=True)
class _Booked:
    """A booked fill whose trades have not all settled (CONFIRMED or FAILED) yet."""

    order_id: str
    info: MarketInfo
    token: str
    side: str
    rules: _Rules
    sent_at: float
    forget_at: float
    position: Position | None = None  # a buy's position, to take a failed trade's shares out of
    done: set[str] = field(default_factory=set)  # trade ids seen CONFIRMED or FAILED


@dataclass(frozen=True, slots=True)
class _Late:
    """A pending order's fill found after its call returned, for the engine's next call on its market."""

    info: MarketInfo
    side: str
    token: str
    fill: _VenueFill


@dataclass(slots=True)
class _VenueBook:
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    tick_size: float
    updated_at: float = 0.0


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ClobClient(ClobClient):
    """The official client without its post-trade wait for settlement hashes (up to 30 s of polling):
    fills are booked from the order response, and settlement is checked later without stalling a tick."""

    def _resolve_transactions_hashes(self, response):
        return response


def _floor_cents(dollars: float) -> float:
    return math.floor(dollars * 100 + _EPS) / 100


def _message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("error") or error.get("errorMsg") or error)
    return str(error)


def _error_text(exc: PolyException) -> str:
    """The venue's message of a library error; PolyApiException has `error_msg` and no `msg`."""
    if isinstance(exc, PolyApiException):
        return _message(exc.error_msg)
    return str(getattr(exc, "msg", exc))


def _levels(trade: dict) -> list[tuple[float, float]]:
    """(shares, price) a taker trade matched: its maker orders, each at its own price; the trade's own
    size and price when it lists none."""
    makers = trade.get("maker_orders") or []
    if makers:
        return [(float(m["matched_amount"]), float(m["price"])) for m in makers]
    return [(float(trade["size"]), float(trade["price"]))]


def _unanswered(status: int | None) -> bool:
    """No answer, or a 5xx other than 503 (trading disabled): the venue may have matched the order."""
    return status is None or (status >= 500 and status != 503)


def _classify(status: int | None, message: str) -> str:
    text = message.lower()
    if "not enough balance" in text:
        return NOT_ENOUGH_BALANCE
    if "fok orders are" in text or "fak order" in text or "no match" in text:
        return NO_MATCH
    if "minimum tick size" in text or "invalid tick size" in text:
        return TICK_SIZE
    if status == 429:
        return RATE_LIMITED
    if status == 425:
        return ENGINE_RESTART
    if status == 503:
        return TRADING_DISABLED
    if status is None:
        return NETWORK
    if status >= 500:
        return SERVER_ERROR
    if "invalid" in text or "lower than the minimum" in text or "crosses" in text:
        return INVALID_ORDER
    return OTHER


def _exit_retry_seconds(env: Mapping[str, str]) -> float:
    raw = env.get(ENV_EXIT_RETRY, "").strip()
    if not raw:
        return DEFAULT_EXIT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < math.inf:
        raise LiveBrokerError(f"{ENV_EXIT_RETRY} must be a number of seconds (0 or more), not {raw!r}.")
    return value


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
        """Connect to the CLOB at `host`, obtain and check the L2 credentials; raise LiveBrokerError
        (LiveBrokerFatal when the venue refuses the credentials) with a one-sentence reason.

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
        self.max_order_dollars = max_order_dollars
        self.max_total_dollars = max_total_dollars
        self.max_slippage = max_slippage
        self.order_type = order_type
        self.exit_retry_seconds = max(0.0, exit_retry_seconds)
        self.retry_backoff = retry_backoff
        self.release_after = release_after
        self.watch_for = watch_for
        self.settle_wait = settle_wait
        self._sleep = sleep
        self._monotonic = monotonic
        self.skipped = LiveSkipCounts()
        self.spent = 0.0  # dollars committed to entries this run, fees included
        self.balance: float | None = None  # the funder's pUSD as last read, minus what the run paid since
        self.orders_sent = 0
        self.address = credentials.address
        self.funder = credentials.funder
        self._rules: OrderedDict[str, _Rules] = OrderedDict()
        self._book_ticks: dict[str, float] = {}  # token -> the tick its book last reported
        self._pending: dict[str, _Pending] = {}  # by order id
        self._late: dict[str, _Late] = {}  # by condition id
        self._booked: dict[str, _Booked] = {}  # by order id
        self._next_look = 0.0
        self._shares_approved = False
        self._last_buy: str | None = None  # order id of the fill the last buy() returned
        self.client = _ClobClient(
            host=host,
            chain_id=chain_id,
            key=credentials.private_key,
            signature_type=credentials.signature_type,
            funder=credentials.funder,
        )
        contracts = get_contract_config(chain_id)
        self._spender_names = {
            contracts.exchange_v2.lower(): "the CTF Exchange V2",
            contracts.neg_risk_exchange_v2.lower(): "the neg-risk CTF Exchange V2",
            contracts.neg_risk_adapter.lower(): "the neg-risk adapter",
        }
        self._exchange = contracts.exchange_v2.lower()
        try:
            if credentials.api is not None:
                api = credentials.api
                creds = ApiCreds(api.api_key, api.api_secret, api.api_passphrase)
            else:
                creds = self.client.create_or_derive_api_key()
            self.client.set_api_creds(creds)
            self.client.get_api_keys()  # proves the L2 credentials before any order is built
        except PolyApiException as exc:
            if exc.status_code == 401:
                raise LiveBrokerFatal(
                    "the CLOB refused the API credentials (401); check POLYMARKET_API_KEY/SECRET/PASSPHRASE "
                    "or unset them to derive them from the private key."
                ) from None
            if exc.status_code is None:
                raise LiveBrokerError(f"the CLOB at {host} is unreachable (set UPDOWN_CLOB_URL to change it).") from None
            raise LiveBrokerError(
                f"could not set up the CLOB session at {host}: {_error_text(exc)} (status {exc.status_code})."
            ) from None
        except PolyException as exc:
            raise LiveBrokerError(f"could not set up the CLOB session at {host}: {_error_text(exc)}.") from None

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
        the exit retry limit from UPDOWN_EXIT_RETRY_SECONDS (default 120)."""
        env = os.environ if environ is None else environ
        return cls(
            LiveCredentials.from_env(env),
            Endpoints.from_env(env).clob,
            max_order_dollars=max_order_dollars,
            max_total_dollars=max_total_dollars,
            max_slippage=max_slippage,
            order_type=order_type,
            exit_retry_seconds=_exit_retry_seconds(env),
        )

    def __repr__(self) -> str:
        return f"LiveBroker(address={self.address}, funder={self.funder}, host={self.client.host})"

    # ---- start-up check ---------------------------------------------------------------------
    def check_account(self) -> float:
        """Before the first decision: have the venue re-read the funder's pUSD balance and allowances
        from the chain, then check them; the balance in dollars, or LiveBrokerError naming what is
        missing and how to set it."""
        params = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
        try:
            self.client.update_balance_allowance(params)
            balance, allowances = self._balance_allowances(self.client.get_balance_allowance(params))
        except (PolyException, ValueError) as exc:
            detail = _error_text(exc) if isinstance(exc, PolyException) else str(exc)
            raise LiveBrokerError(f"could not read the funder's pUSD balance and allowances from the CLOB: "
                                  f"{detail}.") from None
        missing = self._missing(allowances)
        if missing:
            raise LiveBrokerError(
                f"the funder {self.funder} has not approved {missing} to spend its pUSD; set the approvals once "
                "(README, 'Live orders': polymarket.com sets them when the wallet first trades there) and start again."
            )
        if balance < MIN_MARKET_BUY_DOLLARS * _START_HEADROOM:
            raise LiveBrokerError(
                f"the funder {self.funder} holds ${balance:,.2f} pUSD, less than one ${MIN_MARKET_BUY_DOLLARS:.2f} "
                "order and its fee; deposit to that wallet on polymarket.com (deposits arrive as pUSD) and start again."
            )
        self.balance = balance
        return balance

    def _balance_allowances(self, answer: Any) -> tuple[float, dict[str, float]]:
        if not isinstance(answer, dict) or "balance" not in answer:
            raise ValueError(f"unexpected balance/allowance answer {answer!r}")
        allowances = {str(k).lower(): float(v) for k, v in (answer.get("allowances") or {}).items()}
        return float(answer["balance"]) / 1e6, allowances

    def _missing(self, allowances: dict[str, float]) -> str:
        """The spenders (every one the venue lists, and the V2 exchange) without an allowance, in words."""
        required = sorted(set(allowances) | {self._exchange})
        return ", ".join(f"{self._spender_names.get(s, 'the contract')} ({s})" for s in required
                         if allowances.get(s, 0) <= 0)

    def _check_share_approval(self, token: str) -> None:
        """Once, before the first buy: the CTF approvals a sale needs (shares bought must be sellable)."""
        if self._shares_approved:
            return
        params = BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token)

        def read() -> tuple[float, dict[str, float]]:
            self.client.update_balance_allowance(params)
            return self._balance_allowances(self.client.get_balance_allowance(params))

        _, allowances = self._call(read, "share approvals")
        missing = self._missing(allowances)
        if missing:
            raise LiveBrokerFatal(
                f"the funder {self.funder} has not approved {missing} to move its outcome shares (CTF "
                "setApprovalForAll), so nothing bought could be sold; set the approvals once (README, 'Live "
                "orders') and start again."
            )
        self._shares_approved = True

    # ---- the engine's interface -------------------------------------------------------------
    def begin_tick(self) -> None:
        """Nothing to reset: the venue accounts for the liquidity our orders take."""

    def execute(
        self,
        action: Action,
        info: MarketInfo,
        position: Position | None,
        up_book: Book | None,
        down_book: Book | None,
        dollars: float,
        now: float,
        prob: float,
        underlying_change: float,
    ) -> Execution:
        """PositionRules.execute, after the venue's news: a fill of an earlier pending order of this
        market is handed over first (as the action that books it); while one is pending nothing is sent."""
        self._housekeeping()
        cid = info.condition_id
        late = self._late.get(cid)
        if late is not None:
            if late.side == "BUY" and position is None:
                action = Action.BUY if late.token == info.token_up else Action.SELL
            elif late.side == "SELL" and position is not None and position.token_id == late.token:
                action = Action.SELL if position.side == UP else Action.BUY
            else:
                self._orphan(self._late.pop(cid))
        elif self._blocked(cid):
            self.skipped.pending_fill += 1
            return Execution(position)
        self._last_buy = None
        result = super().execute(action, info, position, up_book, down_book, dollars, now, prob, underlying_change)
        booked = self._booked.get(self._last_buy or "")
        if result.opened and booked is not None:
            booked.position = result.position
        return result

    def buy(self, token_id: str, book: Book | None, dollars: float, info: MarketInfo) -> Fill | None:
        """Spend up to `dollars` (fees included) on `token_id` with one FAK order; None (counted) when
        nothing traded."""
        fill = self._take_late(info, token_id, "BUY") or self._buy(info, token_id, book, dollars)
        if fill is None:
            return None
        self._last_buy = fill.order_id
        # every share is delivered; the fee is paid on top: the position books it as its entry fee (the run
        # cap and the balance count cash + fee where the order is booked)
        return Fill(fill.shares, fill.shares, fill.cash, fill.fee, fill.avg_price, fill.limit)

    def sell(self, token_id: str, book: Book | None, shares: float, info: MarketInfo) -> Fill | None:
        """Sell up to `shares` with one FAK order; None when refused (a position stays open and retries)."""
        fill = self._take_late(info, token_id, "SELL")
        if fill is None:
            try:
                fill = self._sell(info, token_id, book, shares)
            except _Refused:
                return None
        return Fill(fill.shares, fill.shares, fill.cash, fill.fee, fill.avg_price, fill.limit)

    def close_at_book(
        self,
        info: MarketInfo,
        position: Position,
        up_book: Book | None,
        down_book: Book | None,
        now: float,
        prob: float,
        underlying_change: float,
        reason: str,
    ) -> TradeRecord:
        """Sell what the bids take, retrying retryable refusals (engine restart, balance not yet credited,
        a pending sale) with backoff for up to `exit_retry_seconds` against the venue's current book;
        shares still unsold are booked at 0 and reported as still held."""
        self._housekeeping()
        book: Book | None = up_book if position.side == UP else down_book
        held = position.shares
        sold = cash = fee = 0.0
        waited, pause = 0.0, self.retry_backoff
        while True:
            late = self._take_late(info, position.token_id, "SELL")
            if late is not None:
                sold, cash, fee = sold + late.shares, cash + late.cash, fee + late.fee
            if held - sold < SHARE_STEP - _EPS:
                break
            if self._blocked(info.condition_id):
                why = PENDING
            else:
                try:
                    fill = self._sell(info, position.token_id, book, held - sold)
                except _Refused as refused:
                    why = refused.reason
                else:
                    sold, cash, fee = sold + fill.shares, cash + fill.cash, fee + fill.fee
                    continue
            if why not in _RETRYABLE or waited >= self.exit_retry_seconds - _EPS:
                break
            step = min(pause, _MAX_BACKOFF, self.exit_retry_seconds - waited)
            self._sleep(step)
            waited += step
            pause *= 2
            self._reconcile()
            book = self._venue_book(position.token_id) or book  # the engine's book is stale after a wait
        unsold = held - sold
        if unsold >= SHARE_STEP - _EPS:
            self.skipped.unsold_shares += unsold
            self.skipped.hold(info, position.token_id, unsold, f"unsold at {reason}")
            log.warning("%s %s: %.2f shares of %s could not be sold (%s); they stay in the wallet and are booked at 0",
                        info.asset, position.side, unsold, position.token_id, reason)
        elif unsold > 0:
            self.skipped.dust_shares += unsold
        exit_price = cash / held if held > 0 else 0.0
        return realize(position, held, cash, fee, exit_price if sold else 0.0, now, prob, underlying_change, reason)

    def close_all(self) -> int:
        """End of run: cancel every resting order of this account (FAK/FOK should leave none), wait up to
        `settle_wait` for pending orders and the settlement of booked trades, and report what is left;
        the number of orders cancelled."""
        canceled: list = []
        try:
            response = self.client.cancel_all()
            canceled = (response.get("canceled") or []) if isinstance(response, dict) else []
        except PolyException as exc:
            log.warning("cancel-all failed: %s", _error_text(exc))
        if canceled:
            log.warning("cancelled %d resting order(s) on shutdown", len(canceled))
        waited = 0.0
        while True:
            self._reconcile()
            self._check_settlement()
            waiting = any(not p.released for p in self._pending.values()) or self._booked
            if not waiting or waited >= self.settle_wait:
                break
            self._sleep(1.0)
            waited += 1.0
        for p in self._pending.values():
            if not p.released:
                self.skipped.unknown_outcome += 1
                log.error("order %s (%s %s): its fill was still unknown when the run stopped", p.order_id,
                          p.side, p.info.asset)
        self._pending.clear()
        for late in self._late.values():
            self._orphan(late)
        self._late.clear()
        self.skipped.unconfirmed_trades += len(self._booked)
        for b in self._booked.values():
            log.warning("order %s (%s %s): trades not settled yet when the run stopped", b.order_id, b.side,
                        b.info.asset)
        self._booked.clear()
        return len(canceled)

    # ---- orders -----------------------------------------------------------------------------
    def _buy(self, info: MarketInfo, token: str, book: Book | None, dollars: float) -> _VenueFill | None:
        if book is None or not book.asks:
            self.skipped.empty_book += 1
            return None
        try:
            rules = self._market_rules(info, token, book)
            self._check_share_approval(token)
        except _Refused:
            return None
        tick = rules.tick_value
        cap = min(1.0 - tick, ceil_to_tick(book.asks[0][0] + self.max_slippage, tick))
        room = self.max_total_dollars - self.spent - self._reserved()
        wallet = math.inf if self.balance is None else self.balance - self._reserved()
        budget = min(dollars, self.max_order_dollars, room, wallet)
        remaining, shares, worst = budget, 0.0, None
        for price, size in book.asks:
            if price > cap + _EPS or remaining < SHARE_STEP * price:
                break
            qty = min(size, remaining / price)
            remaining -= qty * price
            shares += qty
            worst = price
        if worst is None:
            if budget >= MIN_MARKET_BUY_DOLLARS:
                self.skipped.empty_book += 1
                return None
            worst = book.asks[0][0]
        limit = ceil_to_tick(worst, tick)
        per_dollar = self._max_fee_per_dollar(limit, rules)
        amount = _floor_cents(max(0.0, budget - _FEE_ROUNDING) / (1.0 + per_dollar))
        # the venue checks the order's own size (dollars / limit), the book walk the likely fill
        if amount < MIN_MARKET_BUY_DOLLARS or min(shares, amount / limit) + _EPS < rules.min_size:
            wanted = min(dollars, self.max_order_dollars)
            if room < wanted and room <= wallet:
                self.skipped.exposure_cap += 1  # too small because the run's cap is (nearly) spent
            elif wallet < wanted:
                self.skipped.low_balance += 1
            else:
                self.skipped.below_min_size += 1
            return None
        try:
            return self._submit(info, token, "BUY", amount, limit, rules, amount * (1.0 + per_dollar) + _FEE_ROUNDING)
        except _Refused as refused:
            if refused.reason == NOT_ENOUGH_BALANCE:
                self._reread_balance()
            return None

    def _max_fee_per_dollar(self, limit: float, rules: _Rules) -> float:
        """The largest fee a dollar of a buy limited at `limit` can pay: at the grid price p <= limit where
        fee_per_share(p) / p peaks (the lowest price for exponent 1)."""
        tick = rules.tick_value
        steps = max(1, round(limit / tick))
        return max(fee_per_share(k * tick, rules.fee_rate, rules.fee_exponent) / (k * tick) for k in range(1, steps + 1))

    def _sell(self, info: MarketInfo, token: str, book: Book | None, shares: float) -> _VenueFill:
        """Sell up to `shares` into the bids; raises _Refused (counted) when nothing sold."""
        order = floor_shares(shares)
        rules = self._market_rules(info, token, book)
        if order + _EPS < rules.min_size:
            self.skipped.exit_below_min_size += 1
            raise _Refused("below_min_size")
        if book is None or not book.bids:
            self.skipped.empty_book += 1
            raise _Refused("empty_book")
        tick = rules.tick_value
        floor = max(tick, floor_to_tick(book.bids[0][0] - self.max_slippage, tick))
        remaining, worst = order, None
        for price, size in book.bids:
            if price < floor - _EPS or remaining < SHARE_STEP - _EPS:
                break
            remaining -= min(size, remaining)
            worst = price
        if worst is None:
            self.skipped.empty_book += 1
            raise _Refused("empty_book")
        try:
            return self._submit(info, token, "SELL", order, floor_to_tick(worst, tick), rules, 0.0)
        except _Refused as refused:
            if refused.reason == NOT_ENOUGH_BALANCE:
                # Polymarket's advice for sells refused right after a buy: ask the venue to re-read the balance
                self._update_balance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token))
            raise

    def _submit(self, info: MarketInfo, token: str, side: str, amount: float, limit: float, rules: _Rules,
                reserve: float) -> _VenueFill:
        """Build, sign and post one marketable order; its fill (booked against the cap and balance), or
        _Refused: counted and logged, or PENDING when the venue has not shown the fill yet."""
        size = f"${amount:.2f}" if side == "BUY" else f"{amount:.2f} shares"
        what = f"{side} {size} of {info.asset} {'UP' if token == info.token_up else 'DOWN'} at <= {limit:g}"
        signed = self._sign(info, token, side, amount, limit, rules, what)
        order_id = self._order_hash(signed, rules)
        sent_at = time.time()
        try:
            response = self.client.post_order(signed, self.order_type)
        except PolyApiException as exc:
            message = _error_text(exc)
            self._check_fatal(exc.status_code, message)
            if not _unanswered(exc.status_code):
                self._reject(_classify(exc.status_code, message), what, f"{message} (status {exc.status_code})", info)
            self.orders_sent += 1
            log.warning("order %s (%s): no answer (%s, status %s); looking for its fill in the venue's trades",
                        order_id, what, message, exc.status_code)
            return self._await(self._pending_order(order_id, info, token, side, limit, rules, reserve, sent_at), what)
        except PolyException as exc:
            self._reject(OTHER, what, _error_text(exc), info)
        self.orders_sent += 1
        if not isinstance(response, dict) or not response.get("success", False) or response.get("errorMsg") \
                or response.get("error"):
            message = _message(response.get("errorMsg") or response.get("error") if isinstance(response, dict)
                               else response)
            self._check_fatal(200, message)
            self._reject(_classify(200, message), what, message, info)
        order_id = str(response.get("orderID") or order_id)
        fill = self._fill_from_answer(response, side, rules, limit, order_id)
        status = str(response.get("status", "")).lower()
        if fill is not None:
            log.info("order %s: %s, status %s, making %s, taking %s", order_id, what, status,
                     response.get("makingAmount"), response.get("takingAmount"))
            self._book(fill, info, token, side, rules, sent_at)
            return fill
        if status in ("delayed", "live"):  # accepted, not matched yet
            log.info("order %s (%s): %s; waiting for its fill", order_id, what, status)
            return self._await(self._pending_order(order_id, info, token, side, limit, rules, reserve, sent_at), what)
        self._reject(NO_MATCH, what, f"accepted without a match (status {status or '?'})", info)

    def _sign(self, info: MarketInfo, token: str, side: str, amount: float, limit: float, rules: _Rules,
              what: str) -> object:
        args = MarketOrderArgs(token_id=token, amount=amount, side=side, price=limit, order_type=self.order_type)
        # version 2 pinned: the orders are signed for the CTF Exchange V2 the venue runs since 2026-04-28
        options = PartialCreateOrderOptions(tick_size=rules.tick, neg_risk=rules.neg_risk, version=2)
        try:
            return self._venue_accuracy(self.client.create_market_order(args, options), rules)
        except PolyApiException as exc:  # the client may look market data up first
            message = _error_text(exc)
            self._check_fatal(exc.status_code, message)
            self._reject(_classify(exc.status_code, message), what, f"{message} (status {exc.status_code})", info)
        except PolyException as exc:
            text = _error_text(exc)
            self._reject(TICK_SIZE if "tick size" in text else INVALID_ORDER, what, text, info)
        except ValueError as exc:  # the client's builder validates with ValueError too
            self._reject(INVALID_ORDER, what, exc, info)

    def _venue_accuracy(self, signed: object, rules: _Rules) -> object:
        """The client rounds a market order's taker amount to the tick's amount decimals (5 on a 0.001
        tick), which the venue refuses for FAK/FOK (maker 2 decimals, taker 4); such an order is signed
        again with both amounts floored to the venue's accuracy. Flooring the taker amount moves the
        implied price by under 1e-4 per share, toward the book, never past the next tick."""
        if not isinstance(signed, SignedOrderV2):
            return signed
        maker, taker = int(signed.makerAmount), int(signed.takerAmount)
        if maker % _MAKER_STEP == 0 and taker % _TAKER_STEP == 0:
            return signed
        data = OrderDataV2(
            maker=signed.maker,
            tokenId=signed.tokenId,
            makerAmount=str(maker - maker % _MAKER_STEP),
            takerAmount=str(taker - taker % _TAKER_STEP),
            side=signed.side,
            signer=signed.signer,
            signatureType=signed.signatureType,
            timestamp=signed.timestamp,
            metadata=signed.metadata,
            builder=signed.builder,
        )
        return self._order_builder(rules).build_signed_order(data)

    def _order_builder(self, rules: _Rules) -> ExchangeOrderBuilderV2:
        """The client's V2 signer for this market's exchange contract (neg-risk markets have their own)."""
        contracts = get_contract_config(self.client.chain_id)
        exchange = contracts.neg_risk_exchange_v2 if rules.neg_risk else contracts.exchange_v2
        return ExchangeOrderBuilderV2(exchange, self.client.chain_id, self.client.signer)

    def _order_hash(self, signed: object, rules: _Rules) -> str:
        """The order id the venue gives the order (its EIP-712 hash), known before any answer."""
        builder = self._order_builder(rules)
        return builder.build_order_hash(builder.build_order_typed_data(signed))

    def _fill_from_answer(self, response: dict, side: str, rules: _Rules, limit: float,
                          order_id: str) -> _VenueFill | None:
        """What the venue's answer says traded: making/taking amounts, fee at the fill's average price."""
        try:
            making = float(response.get("makingAmount") or 0.0)
            taking = float(response.get("takingAmount") or 0.0)
        except (TypeError, ValueError):
            making = taking = 0.0
        shares, cash = (taking, making) if side == "BUY" else (making, taking)
        if shares <= 0.0 or cash <= 0.0:
            return None
        avg = cash / shares
        return _VenueFill(shares, cash, taker_fee(shares, avg, rules.fee_rate, rules.fee_exponent), avg, limit,
                          order_id)

    def _fill_from_trades(self, trades: list[dict], p: _Pending) -> _VenueFill | None:
        """What the venue's trades of an order say traded, level by level; the fee at each level's price."""
        levels = [lv for t in trades if str(t.get("status", "")).upper() != "FAILED" for lv in _levels(t)]
        shares = sum(q for q, _ in levels)
        if shares <= 0.0:
            return None
        cash = sum(q * price for q, price in levels)
        fee = sum(taker_fee(q, price, p.rules.fee_rate, p.rules.fee_exponent) for q, price in levels)
        return _VenueFill(shares, cash, round(fee, 5), cash / shares, p.limit, p.order_id)

    def _book(self, fill: _VenueFill, info: MarketInfo, token: str, side: str, rules: _Rules, sent_at: float) -> None:
        """Count a fill against the cap and the balance, and follow its trades until they settle."""
        if side == "BUY":
            self.spent += fill.cash + fill.fee
            if self.balance is not None:
                self.balance -= fill.cash + fill.fee
        elif self.balance is not None:
            self.balance += fill.cash - fill.fee
        self._booked[fill.order_id] = _Booked(fill.order_id, info, token, side, rules, sent_at,
                                              self._monotonic() + self.watch_for)

    # ---- pending orders ---------------------------------------------------------------------
    def _pending_order(self, order_id: str, info: MarketInfo, token: str, side: str, limit: float, rules: _Rules,
                       reserve: float, sent_at: float) -> _Pending:
        now = self._monotonic()
        p = _Pending(order_id, info, token, side, limit, rules, reserve if side == "BUY" else 0.0, sent_at,
                     now + self.release_after, now + self.watch_for)
        self._pending[order_id] = p
        return p

    def _await(self, p: _Pending, what: str) -> _VenueFill:
        """Look for a pending order's fill within the call; PENDING (still reserved) when none shows."""
        for pause in _POLLS:
            self._sleep(pause)
            trades = self._trades_of([p])[p.order_id]
            if trades:
                del self._pending[p.order_id]
                fill = self._fill_from_trades(trades, p)
                if fill is None:
                    self._reject(TRADE_FAILED, what, "its trades failed at settlement", p.info)
                log.info("order %s (%s): filled %.4f shares at %.4f", p.order_id, what, fill.shares, fill.avg_price)
                self._book(fill, p.info, p.token, p.side, p.rules, p.sent_at)
                return fill
        log.warning("order %s (%s): no fill shown yet; its market waits for it (up to %.0f s)", p.order_id, what,
                    self.release_after)
        raise _Refused(PENDING)

    def _trades_of(self, orders: list[_Pending] | list[_Booked]) -> dict[str, list[dict] | None]:
        """The venue's trades of these orders (they are the taker), by order id, one request per token;
        None for an order whose trades could not be read."""
        by_token: dict[str, list[_Pending | _Booked]] = {}
        for o in orders:
            by_token.setdefault(o.token, []).append(o)
        found: dict[str, list[dict] | None] = {}
        for token, group in by_token.items():
            after = int(min(o.sent_at for o in group)) - _LOOKBACK
            try:
                trades = self.client.get_trades(TradeParams(asset_id=token, after=after))
            except (PolyException, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.debug("trades of %s: %s", token, exc)
                found.update(dict.fromkeys((o.order_id for o in group), None))
                continue
            for o in group:
                wanted = o.order_id.lower()
                found[o.order_id] = [t for t in trades
                                     if isinstance(t, dict) and str(t.get("taker_order_id", "")).lower() == wanted]
        return found

    def _reserved(self) -> float:
        return sum(p.reserved for p in self._pending.values() if not p.released)

    def _blocked(self, condition_id: str) -> bool:
        return any(p.info.condition_id == condition_id and not p.released for p in self._pending.values())

    def _housekeeping(self) -> None:
        if self._monotonic() < self._next_look:
            return
        self._next_look = self._monotonic() + _LOOK_EVERY
        self._reconcile()
        self._check_settlement()

    def _reconcile(self) -> None:
        """Look once at every pending order: book a fill that showed up, release or forget the rest."""
        now = self._monotonic()
        found = self._trades_of(list(self._pending.values()))
        for p in list(self._pending.values()):
            trades = found[p.order_id]
            fill = self._fill_from_trades(trades, p) if trades else None
            if trades and fill is None:  # it matched, and its trades failed: nothing happened
                del self._pending[p.order_id]
                self.skipped.refused(TRADE_FAILED)
            elif fill is not None:
                del self._pending[p.order_id]
                self._book(fill, p.info, p.token, p.side, p.rules, p.sent_at)
                if p.released:
                    log.error("order %s (%s %s) filled after it was released: its $%.2f count now", p.order_id,
                              p.side, p.info.asset, fill.cash + fill.fee)
                log.info("order %s (%s %s): filled %.4f shares at %.4f", p.order_id, p.side, p.info.asset,
                         fill.shares, fill.avg_price)
                cid = p.info.condition_id
                if cid in self._late:
                    self._orphan(self._late.pop(cid))
                self._late[cid] = _Late(p.info, p.side, p.token, fill)
            elif now >= p.forget_at:
                del self._pending[p.order_id]
            elif now >= p.release_at and not p.released:
                p.released = True
                self.skipped.unknown_outcome += 1
                log.warning("order %s (%s %s): no fill shown after %.0f s; released, still watched", p.order_id,
                            p.side, p.info.asset, self.release_after)

    def _take_late(self, info: MarketInfo, token: str, side: str) -> _VenueFill | None:
        late = self._late.get(info.condition_id)
        if late is None or late.token != token or late.side != side:
            return None
        del self._late[info.condition_id]
        return late.fill

    def _orphan(self, late: _Late) -> None:
        """A late fill the engine cannot take any more: a buy's shares stay in the wallet."""
        if late.side == "BUY":
            self.skipped.hold(late.info, late.token, late.fill.shares, "bought by a late fill the run never booked")
            log.error("order %s: %.2f shares of %s bought after the run moved on; they stay in the wallet",
                      late.fill.order_id, late.fill.shares, late.token)
        else:
            log.error("order %s: %.2f shares of %s sold after the run moved on; the run's PnL misses $%.2f",
                      late.fill.order_id, late.fill.shares, late.token, late.fill.cash - late.fill.fee)

    # ---- settlement -------------------------------------------------------------------------
    def _check_settlement(self) -> None:
        """Follow booked trades to CONFIRMED; unbook those that end FAILED."""
        now = self._monotonic()
        found = self._trades_of(list(self._booked.values()))
        for b in list(self._booked.values()):
            trades = found[b.order_id]
            if trades is None:
                continue
            for t in trades:
                tid, status = str(t.get("id")), str(t.get("status", "")).upper()
                if tid in b.done or status not in ("CONFIRMED", "FAILED"):
                    continue
                b.done.add(tid)
                if status == "FAILED":
                    self._unbook(b, _levels(t))
            if (trades and len(b.done) == len(trades)) or now >= b.forget_at:
                del self._booked[b.order_id]

    def _unbook(self, b: _Booked, levels: list[tuple[float, float]]) -> None:
        size = sum(q for q, _ in levels)
        value = sum(q * price for q, price in levels)
        fee = sum(taker_fee(q, price, b.rules.fee_rate, b.rules.fee_exponent) for q, price in levels)
        price = value / size if size > 0 else 0.0
        self.skipped.refused(TRADE_FAILED)
        if b.side == "BUY":
            cost = value + fee
            self.spent -= cost
            if self.balance is not None:
                self.balance += cost
            pos = b.position
            if pos is not None and pos.shares > _EPS:
                take = min(size, pos.shares)
                pos.shares -= take
                pos.cost = max(0.0, pos.cost - cost * take / size)
                pos.entry_fee = max(0.0, pos.entry_fee - fee * take / size)
            log.error("order %s: a buy of %.2f shares of %s at %.4f FAILED at settlement; taken out of the "
                      "position and the cap", b.order_id, size, b.info.asset, price)
            return
        if self.balance is not None:
            self.balance -= value - fee
        self.skipped.hold(b.info, b.token, size, "sale FAILED at settlement")
        log.error("order %s: a sale of %.2f shares of %s at %.4f FAILED at settlement; the shares are back in the "
                  "wallet and the run's PnL counts $%.2f that never arrived", b.order_id, size, b.info.asset, price,
                  value - fee)

    # ---- venue reads ------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], what: str, info: MarketInfo | None = None) -> T:
        """A library call whose failure is a counted refusal (or fatal), never a crash."""
        try:
            return fn()
        except PolyApiException as exc:
            message = _error_text(exc)
            self._check_fatal(exc.status_code, message)
            self._reject(_classify(exc.status_code, message), what, f"{message} (status {exc.status_code})", info)
        except PolyException as exc:
            self._reject(OTHER, what, _error_text(exc), info)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # an answer of an unexpected shape
            self._reject(OTHER, what, f"unexpected answer ({type(exc).__name__}: {exc})", info)

    def _market_rules(self, info: MarketInfo, token: str, book: Book | None) -> _Rules:
        cid = info.condition_id
        rules = self._rules.get(cid)
        seen, tick = self._book_ticks.get(token), getattr(book, "tick_size", None)
        if tick:
            self._book_ticks[token] = tick
            if rules is not None and seen is not None and abs(tick - seen) > _EPS:
                log.info("%s tick changed to %g: reading the market's rules again", info.asset, tick)
                rules = None
        if rules is not None:
            return rules
        raw = self._call(lambda: self.client.get_clob_market_info(cid), f"market rules for {info.asset} {cid}", info)
        tick_text = f"{float(raw.get('mts', info.tick_size)):g}" if isinstance(raw, dict) else ""
        if tick_text not in _TICKS:
            self._reject(INVALID_ORDER, f"market rules for {info.asset}", f"unsupported tick size {tick_text!r}", info)
        fees = raw.get("fd") or {}
        rules = _Rules(
            tick=tick_text,
            min_size=float(raw.get("mos") or info.min_size),
            fee_rate=float(fees.get("r", info.fee_rate)),
            fee_exponent=float(fees.get("e") or 1.0),
            neg_risk=bool(raw.get("nr", False)),
        )
        self._rules[cid] = rules
        if len(self._rules) > _MARKET_CACHE:
            self._rules.popitem(last=False)
        return rules

    def _venue_book(self, token: str) -> _VenueBook | None:
        """The venue's current REST book for `token` (best first), or None when it cannot be read."""
        try:
            raw = self.client.get_order_book(token)
            bids = sorted(((float(x["price"]), float(x["size"])) for x in raw.get("bids") or []), reverse=True)
            asks = sorted((float(x["price"]), float(x["size"])) for x in raw.get("asks") or [])
            return _VenueBook(bids, asks, float(raw.get("tick_size") or 0.0))
        except (PolyException, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.debug("book of %s: %s", token, exc)
            return None

    def _update_balance(self, params: BalanceAllowanceParams) -> None:
        try:
            self.client.update_balance_allowance(params)
        except PolyException as exc:
            log.warning("balance refresh failed: %s", _error_text(exc))

    def _reread_balance(self) -> None:
        """A buy refused for balance: have the venue re-read the pUSD and take its figure."""
        params = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
        self._update_balance(params)
        try:
            self.balance, _ = self._balance_allowances(self.client.get_balance_allowance(params))
        except (PolyException, ValueError, TypeError) as exc:
            log.warning("balance read failed: %s", exc)

    def _check_fatal(self, status: int | None, message: str) -> None:
        text = message.lower()
        if status == 401:
            raise LiveBrokerFatal(f"the CLOB refused the API credentials (401: {message}); the run cannot trade.")
        for needle, hint in _FATAL.items():
            if needle in text:
                raise LiveBrokerFatal(f"the CLOB refused the order with '{message}': {hint}.")

    def _reject(self, reason: str, what: str, detail: object, info: MarketInfo | None = None) -> NoReturn:
        self.skipped.refused(reason)
        if reason == TICK_SIZE and info is not None:
            self._rules.pop(info.condition_id, None)  # the tick changed under us: read the rules again
        log.warning("live order refused (%s): %s: %s", reason, what, detail)
        raise _Refused(reason)
