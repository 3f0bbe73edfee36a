"""Live broker: sends the engine's orders to Polymarket's CLOB V2 through py-clob-client-v2.

Same interface as PaperBroker (`execute`, `close_at_book`, `begin_tick`, `skipped`); every method is
synchronous and may block on HTTP, so the engine runs it in a worker thread (`asyncio.to_thread`).

Documented choices:
- Orders are marketable FAK "market" orders: a BUY spends `dollars` (floored to cents, the venue's
  accuracy for a market buy's maker amount) and a SELL offers the held shares floored to 0.01. The limit
  is the worst book level the order reaches on the tick grid, capped `max_slippage` from the touch. FAK
  rather than FOK: the book moves between our snapshot and the match, and a partial fill at our limit
  is better than none; FOK can be chosen with `order_type="FOK"`.
- Fills are booked from the venue's answer (`makingAmount` / `takingAmount`), never from the book we
  priced from. The fee is the market's (`fd` of the market info the client fetches) applied at the
  fill's average price: exact for a one-level fill; across levels the USDC value overstates the
  venue's per-fill fees by `shares * rate * variance(p)` (p(1-p) is concave), a fraction of a cent.
  Taken in shares on buys: the shares we book, `taking - fee / price`, equal the venue's per-level
  deductions exactly when the exponent is 1 (sum of q_i * rate * (1 - p_i) = S * rate * (1 - avg p)).
  Taken in USDC on sells. That `takingAmount` of a buy is gross of the share fee is an inference.
- Shares bought are not sellable until the venue credits them: a SELL refused with `not enough balance /
  allowance` asks the venue to refresh the balance and leaves the position open, so the next exit
  decision retries; `close_at_book` retries a bounded number of times with backoff.
- Every refusal is counted by reason and logged once; 401 and signature/identity refusals raise
  LiveBrokerFatal because no retry can fix them. Tick, minimum size and fee rate come from the market
  info the client fetches (`GET /clob-markets/{condition_id}`), cached per market.
- Safety: a per-order dollar cap and a per-run cap on dollars committed to entries.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

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

from engine.broker import (
    SHARE_STEP,
    Book,
    Fill,
    PositionRules,
    SkipCounts,
    ceil_to_tick,
    floor_shares,
    floor_to_tick,
    taker_fee,
)
from engine.live_credentials import LiveBrokerError, LiveBrokerFatal, LiveCredentials
from engine.positions import UP, Position, TradeRecord, realize
from streamers.endpoints import Endpoints
from streamers.frames import MarketInfo

__all__ = ["LiveBroker", "LiveBrokerError", "LiveBrokerFatal", "LiveSkipCounts"]

log = logging.getLogger(__name__)

POLYGON = 137
MIN_MARKET_BUY_DOLLARS = 1.0  # the venue's minimum notional for a market buy
_EPS = 1e-9
_MARKET_CACHE = 64  # markets whose rules are kept (8 live at a time: 4 assets x current/next window)
_TICKS = ("0.1", "0.01", "0.005", "0.0025", "0.001", "0.0001")  # the client's rounding table keys
# the venue's accuracy for FAK/FOK orders, in 6-decimal units: maker amount 2 decimals, taker amount 4
_MAKER_STEP = 10_000
_TAKER_STEP = 100

# refusal reasons (the keys of LiveSkipCounts.rejected)
NOT_ENOUGH_BALANCE = "not_enough_balance"
NO_MATCH = "no_match"
INVALID_ORDER = "invalid_order"
RATE_LIMITED = "rate_limited"
ENGINE_RESTART = "engine_restart"
TRADING_DISABLED = "trading_disabled"
NETWORK = "network"
SERVER_ERROR = "server_error"
OTHER = "other"

# venue messages that mean the run's identity is wrong: fatal, with the usual cause
_FATAL = {
    "invalid signature": "check POLYMARKET_SIGNATURE_TYPE and POLYMARKET_FUNDER (the wallet holding the funds)",
    "invalid order version": "the venue expects another order version than py-clob-client-v2 signed",
    "maker address not allowed": "CLOB V2 refuses plain EOA makers; use a proxy, Safe or deposit wallet",
    "has to be the owner of the api key": "the API credentials belong to another key",
    "has to be the address of the api key": "the API credentials belong to another key",
    "address banned": "the venue banned this address",
}


@dataclass(slots=True)
class LiveSkipCounts(SkipCounts):
    """PaperBroker's counts (not sent: below the minimum, empty book, dust) plus the venue's."""

    exposure_cap: int = 0  # entries refused because the run's dollar cap is spent (not sent)
    unknown_outcome: int = 0  # orders whose answer was lost in transit: filled or not is unknown
    unsold_shares: float = 0.0  # shares close_at_book could not sell: still in the wallet, booked at 0
    rejected: dict[str, int] = field(default_factory=dict)  # sent (or built) and refused, by reason

    def to_dict(self) -> dict:
        return {
            **SkipCounts.to_dict(self),
            "exposure_cap": self.exposure_cap,
            "unknown_outcome": self.unknown_outcome,
            "unsold_shares": round(self.unsold_shares, 6),
            "rejected": dict(sorted(self.rejected.items())),
        }

    def refused(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


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
    shares: float  # gross shares traded
    cash: float  # dollars paid (buy) or received before the fee (sale)
    fee: float  # USDC value of the taker fee
    avg_price: float


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ClobClient(ClobClient):
    """The official client without its post-trade wait for settlement hashes (up to 30 s of polling):
    fills are booked from the order response, and a tick must not stall on chain settlement."""

    def _resolve_transactions_hashes(self, response):
        return response


def _floor_cents(dollars: float) -> float:
    return math.floor(dollars * 100 + _EPS) / 100


def _message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("error") or error.get("errorMsg") or error)
    return str(error)


def _classify(status: int | None, message: str) -> str:
    text = message.lower()
    if "not enough balance" in text:
        return NOT_ENOUGH_BALANCE
    if "fok orders are" in text or "fak order" in text or "no match" in text:
        return NO_MATCH
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
    if "invalid" in text or "tick size" in text or "lower than the minimum" in text or "crosses" in text:
        return INVALID_ORDER
    return OTHER


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
        sell_attempts: int = 3,
        retry_backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Connect to the CLOB at `host`, obtain and check the L2 credentials; raise LiveBrokerError
        (LiveBrokerFatal when the venue refuses the credentials) with a one-sentence reason.

        `max_order_dollars` caps each order; `max_total_dollars` caps the dollars committed to entries
        over the run; `max_slippage` bounds how far past the touch an order's limit may go.
        """
        if order_type not in (OrderType.FAK, OrderType.FOK):
            raise LiveBrokerError(f"order type must be FAK or FOK, not {order_type!r}.")
        if max_order_dollars <= 0 or max_total_dollars <= 0:
            raise LiveBrokerError("the live order caps must be positive dollar amounts.")
        self.max_order_dollars = max_order_dollars
        self.max_total_dollars = max_total_dollars
        self.max_slippage = max_slippage
        self.order_type = order_type
        self.sell_attempts = max(1, sell_attempts)
        self.retry_backoff = retry_backoff
        self._sleep = sleep
        self.skipped = LiveSkipCounts()
        self.spent = 0.0  # dollars committed to entries this run
        self.orders_sent = 0
        self.address = credentials.address
        self.funder = credentials.funder
        self._rules: OrderedDict[str, _Rules] = OrderedDict()
        self.client = _ClobClient(
            host=host,
            chain_id=chain_id,
            key=credentials.private_key,
            signature_type=credentials.signature_type,
            funder=credentials.funder,
        )
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
                f"could not set up the CLOB session at {host}: {_message(exc.error_msg)} (status {exc.status_code})."
            ) from None
        except PolyException as exc:
            raise LiveBrokerError(f"could not set up the CLOB session at {host}: {exc.msg}.") from None

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
        """Credentials from the POLYMARKET_* variables, the host from UPDOWN_CLOB_URL (default the venue)."""
        return cls(
            LiveCredentials.from_env(environ),
            Endpoints.from_env(environ).clob,
            max_order_dollars=max_order_dollars,
            max_total_dollars=max_total_dollars,
            max_slippage=max_slippage,
            order_type=order_type,
        )

    def __repr__(self) -> str:
        return f"LiveBroker(address={self.address}, funder={self.funder}, host={self.client.host})"

    def begin_tick(self) -> None:
        """Nothing to reset: the venue accounts for the liquidity our orders take."""

    # ---- the engine's interface -------------------------------------------------------------
    def buy(self, token_id: str, book: Book | None, dollars: float, info: MarketInfo) -> Fill | None:
        """Spend up to `dollars` on `token_id` with one FAK order; None (counted) when nothing traded."""
        fill = self._buy(info, token_id, book, dollars)
        if fill is None:
            return None
        # the buy fee is taken in shares
        return Fill(fill.shares, fill.shares - fill.fee / fill.avg_price, fill.cash, fill.fee, fill.avg_price,
                    fill.avg_price)

    def sell(self, token_id: str, book: Book | None, shares: float, info: MarketInfo) -> Fill | None:
        """Sell up to `shares` with one FAK order; None when refused (a position stays open and retries)."""
        try:
            fill = self._sell(info, token_id, book, shares)
        except _Refused:
            return None
        return Fill(fill.shares, fill.shares, fill.cash, fill.fee, fill.avg_price, fill.avg_price)

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
        """Sell what the bids take, retrying a refused sale (balance not yet credited) with backoff;
        shares still unsold are booked at 0 and counted: they stay in the wallet until settlement."""
        book = up_book if position.side == UP else down_book
        held = position.shares
        sold = cash = fee = 0.0
        for attempt in range(self.sell_attempts):
            remaining = held - sold
            if remaining < SHARE_STEP - _EPS:
                break
            try:
                fill = self._sell(info, position.token_id, book, remaining)
            except _Refused as refused:
                if refused.reason not in (NOT_ENOUGH_BALANCE, RATE_LIMITED, ENGINE_RESTART, NETWORK, SERVER_ERROR):
                    break
                if attempt + 1 < self.sell_attempts:
                    self._sleep(self.retry_backoff * 2**attempt)
                continue
            sold += fill.shares
            cash += fill.cash
            fee += fill.fee
        unsold = held - sold
        if unsold >= SHARE_STEP - _EPS:
            self.skipped.unsold_shares += unsold
            log.warning("%s %s: %.2f shares of %s could not be sold (%s); they stay in the wallet and are booked at 0",
                        info.asset, position.side, unsold, position.token_id, reason)
        exit_price = cash / held if held > 0 else 0.0
        return realize(position, held, cash, fee, exit_price if sold else 0.0, now, prob, underlying_change, reason)

    def close_all(self) -> int:
        """Cancel every resting order of this account (FAK/FOK should leave none); the number cancelled."""
        try:
            response = self.client.cancel_all()
        except PolyException as exc:
            log.warning("cancel-all failed: %s", _message(getattr(exc, "error_msg", None) or exc.msg))
            return 0
        canceled = (response.get("canceled") or []) if isinstance(response, dict) else []
        if canceled:
            log.warning("cancelled %d resting order(s) on shutdown", len(canceled))
        return len(canceled)

    # ---- orders -----------------------------------------------------------------------------
    def _market_rules(self, info: MarketInfo) -> _Rules:
        rules = self._rules.get(info.condition_id)
        if rules is not None:
            return rules
        try:
            raw = self.client.get_clob_market_info(info.condition_id)
        except PolyException as exc:
            self._reject(_classify(getattr(exc, "status_code", None), _message(getattr(exc, "error_msg", exc.msg))),
                         f"market info for {info.asset} {info.condition_id}", exc)
        tick = str(raw.get("mts", info.tick_size))
        if tick not in _TICKS:
            self._reject(INVALID_ORDER, f"market info for {info.asset}", f"unsupported tick size {tick}")
        fees = raw.get("fd") or {}
        rules = _Rules(
            tick=tick,
            min_size=float(raw.get("mos") or info.min_size),
            fee_rate=float(fees.get("r", info.fee_rate)),
            fee_exponent=float(fees.get("e") or 1.0),
            neg_risk=bool(raw.get("nr", False)),
        )
        self._rules[info.condition_id] = rules
        if len(self._rules) > _MARKET_CACHE:
            self._rules.popitem(last=False)
        return rules

    def _buy(self, info: MarketInfo, token: str, book: Book | None, dollars: float) -> _VenueFill | None:
        if book is None or not book.asks:
            self.skipped.empty_book += 1
            return None
        room = self.max_total_dollars - self.spent
        amount = _floor_cents(min(dollars, self.max_order_dollars, room))
        if amount < MIN_MARKET_BUY_DOLLARS:
            if room < min(dollars, self.max_order_dollars):
                self.skipped.exposure_cap += 1
            else:
                self.skipped.below_min_size += 1
            return None
        try:
            rules = self._market_rules(info)
        except _Refused:
            return None
        tick = rules.tick_value
        cap = min(1.0 - tick, ceil_to_tick(book.asks[0][0] + self.max_slippage, tick))
        remaining, shares, worst = amount, 0.0, None
        for price, size in book.asks:
            if price > cap + _EPS or remaining < SHARE_STEP * price:
                break
            qty = min(size, remaining / price)
            remaining -= qty * price
            shares += qty
            worst = price
        if worst is None:
            self.skipped.empty_book += 1
            return None
        limit = ceil_to_tick(worst, tick)
        # the venue checks the order's own size (dollars / limit), the book walk the likely fill
        if min(shares, amount / limit) + _EPS < rules.min_size:
            self.skipped.below_min_size += 1
            return None
        try:
            response = self._send(info, token, "BUY", amount, limit, rules)
        except _Refused:
            return None
        fill = self._fill(response, "BUY", rules)
        if fill is not None:
            self.spent += fill.cash
        return fill

    def _sell(self, info: MarketInfo, token: str, book: Book | None, shares: float) -> _VenueFill:
        """Sell up to `shares` into the bids; raises _Refused (counted) when nothing sold."""
        order = floor_shares(shares)
        rules = self._market_rules(info)
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
            response = self._send(info, token, "SELL", order, floor_to_tick(worst, tick), rules)
        except _Refused as refused:
            if refused.reason == NOT_ENOUGH_BALANCE:
                self._refresh_balance(token)
            raise
        fill = self._fill(response, "SELL", rules)
        if fill is None:
            raise _Refused(NO_MATCH)
        return fill

    def _send(self, info: MarketInfo, token: str, side: str, amount: float, limit: float, rules: _Rules) -> dict:
        """Build, sign and post one marketable order; the venue's answer, or _Refused (counted, logged)."""
        size = f"${amount:.2f}" if side == "BUY" else f"{amount:.2f} shares"
        what = f"{side} {size} of {info.asset} {'UP' if token == info.token_up else 'DOWN'} at <= {limit:g}"
        args = MarketOrderArgs(token_id=token, amount=amount, side=side, price=limit, order_type=self.order_type)
        # version 2 pinned: the orders are signed for the V2 exchange the venue runs since 2026-04-28
        options = PartialCreateOrderOptions(tick_size=rules.tick, neg_risk=rules.neg_risk, version=2)
        try:
            signed = self._venue_accuracy(self.client.create_market_order(args, options), rules)
        except PolyException as exc:
            self._reject(INVALID_ORDER, what, exc.msg)
        except ValueError as exc:  # the client's builder validates with ValueError too
            self._reject(INVALID_ORDER, what, exc)
        try:
            response = self.client.post_order(signed, self.order_type)
        except PolyApiException as exc:
            message = _message(exc.error_msg)
            self._check_fatal(exc.status_code, message)
            response = self._recover(signed, rules, what) if exc.status_code is None else None
            if response is None:
                self._reject(_classify(exc.status_code, message), what, f"{message} (status {exc.status_code})")
        self.orders_sent += 1
        if not isinstance(response, dict) or not response.get("success", False) or response.get("errorMsg"):
            message = _message(response.get("errorMsg") if isinstance(response, dict) else response)
            self._check_fatal(200, message)
            self._reject(_classify(200, message), what, message)
        log.info("order %s: %s, status %s, making %s, taking %s", response.get("orderID", "?"), what,
                 response.get("status"), response.get("makingAmount"), response.get("takingAmount"))
        return response

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

    def _recover(self, signed: object, rules: _Rules, what: str) -> dict | None:
        """The answer to an order whose response was lost in transit, rebuilt from the venue's records
        (the order by its hash, then its trades); None when the venue never saw it. When the venue
        cannot be asked either, the order counts as `unknown_outcome` and a buy's dollars count against
        the run cap as if spent (the safe side)."""
        if not isinstance(signed, SignedOrderV2):
            return None
        builder = self._order_builder(rules)
        order_id = builder.build_order_hash(builder.build_order_typed_data(signed))
        buy = int(signed.side) == 0
        try:
            order = self.client.get_order(order_id)
            trades = [t for tid in order.get("associate_trades") or []
                      for t in self.client.get_trades(TradeParams(id=tid), only_first_page=True)]
        except PolyApiException as exc:
            if exc.status_code == 404:
                return None  # never reached the book: nothing traded
            self.skipped.unknown_outcome += 1
            if buy:
                self.spent += int(signed.makerAmount) / 1e6
            log.error("order %s (%s): answer lost and the venue cannot be asked (%s); it may have traded",
                      order_id, what, _message(exc.error_msg))
            return None
        shares = sum(float(t["size"]) for t in trades)
        cash = sum(float(t["size"]) * float(t["price"]) for t in trades)
        log.warning("order %s (%s): answer lost; the venue's records show %.4f shares traded", order_id, what, shares)
        making, taking = (cash, shares) if buy else (shares, cash)
        return {"success": True, "errorMsg": "", "orderID": order_id, "status": str(order.get("status", "")).lower(),
                "makingAmount": f"{making:.6f}", "takingAmount": f"{taking:.6f}"}

    def _fill(self, response: dict, side: str, rules: _Rules) -> _VenueFill | None:
        """What the venue says traded: making/taking amounts (gross), fee at the market's rate."""
        try:
            making = float(response.get("makingAmount") or 0.0)
            taking = float(response.get("takingAmount") or 0.0)
        except (TypeError, ValueError):
            making = taking = 0.0
        shares, cash = (taking, making) if side == "BUY" else (making, taking)
        if shares <= 0.0 or cash <= 0.0:
            # accepted without a match (e.g. status "delayed"): nothing is booked
            self.skipped.refused(NO_MATCH)
            log.warning("order %s matched nothing (status %s)", response.get("orderID", "?"), response.get("status"))
            return None
        avg = cash / shares
        return _VenueFill(shares, cash, taker_fee(shares, avg, rules.fee_rate, rules.fee_exponent), avg)

    def _refresh_balance(self, token: str) -> None:
        # Polymarket's advice for sells refused right after a buy: ask the venue to re-read the balance
        try:
            self.client.update_balance_allowance(
                BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token)
            )
        except PolyException as exc:
            log.warning("balance refresh failed: %s", _message(getattr(exc, "error_msg", None) or exc.msg))

    def _check_fatal(self, status: int | None, message: str) -> None:
        text = message.lower()
        if status == 401:
            raise LiveBrokerFatal(f"the CLOB refused the API credentials (401: {message}); the run cannot trade.")
        for needle, hint in _FATAL.items():
            if needle in text:
                raise LiveBrokerFatal(f"the CLOB refused the order with '{message}': {hint}.")

    def _reject(self, reason: str, what: str, detail: object) -> NoReturn:
        self.skipped.refused(reason)
        log.warning("live order refused (%s): %s: %s", reason, what, detail)
        raise _Refused(reason)
