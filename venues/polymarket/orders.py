"""Building, signing and posting one marketable order, and reading its fill from the venue's answer.

A BUY spends a dollar amount (floored to cents, the venue's accuracy for a market buy's maker amount)
and a SELL offers the held shares floored to 0.01; the limit is the worst book level the order reaches
on the tick grid, capped `max_slippage` from the touch. A buy is sent only if its largest possible cost
(maker amount plus the fee at the lowest grid price it could fill at) fits `max_order_dollars`, what is
left of `max_total_dollars` after the dollars spent and reserved, and the pUSD balance.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from py_clob_client_v2 import AssetType, BalanceAllowanceParams, MarketOrderArgs, PartialCreateOrderOptions
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, SignedOrderV2

from core.fees import fee_per_share, taker_fee
from core.frames import MarketInfo
from engine.broker import SHARE_STEP, Book, ceil_to_tick, floor_shares, floor_to_tick
from venues.polymarket.account import Account
from venues.polymarket.reconcile import Reconciler
from venues.polymarket.venue import (
    EPS,
    INVALID_ORDER,
    MIN_MARKET_BUY_DOLLARS,
    NO_MATCH,
    NOT_ENOUGH_BALANCE,
    OTHER,
    TICK_SIZE,
    Refused,
    Rules,
    Venue,
    VenueFill,
    check_fatal,
    classify,
    error_text,
    message,
    unanswered,
)

log = logging.getLogger(__name__)

_FEE_ROUNDING = 1e-4  # dollars kept aside for the venue rounding each fill's fee to 5 decimals
# the venue's accuracy for FAK/FOK orders, in 6-decimal units: maker amount 2 decimals, taker amount 4
_MAKER_STEP = 10_000
_TAKER_STEP = 100


def floor_cents(dollars: float) -> float:
    return math.floor(dollars * 100 + EPS) / 100


def max_fee_per_dollar(limit: float, rules: Rules) -> float:
    """The largest fee a dollar of a buy limited at `limit` can pay: at the grid price p <= limit where
    fee_per_share(p) / p peaks (the lowest price for exponent 1)."""
    tick = rules.tick_value
    steps = max(1, round(limit / tick))
    return max(fee_per_share(k * tick, rules.fee_rate, rules.fee_exponent) / (k * tick) for k in range(1, steps + 1))


@dataclass(frozen=True, slots=True)
class OrderCaps:
    """What a live run's orders may do."""

    max_order_dollars: float  # one order's largest cost, fees included
    max_total_dollars: float  # the dollars committed to entries over the run, fees included
    max_slippage: float  # how far past the touch an order's limit may go
    order_type: str  # FAK (a partial fill at the limit beats none) or FOK


class OrderDesk:
    """One order at a time: checks it against the caps and the balance, signs it for the CTF Exchange V2,
    posts it and books its fill (or hands it to the reconciler while the venue has not shown it)."""

    def __init__(self, venue: Venue, account: Account, fills: Reconciler, caps: OrderCaps) -> None:
        self.venue = venue
        self.account = account
        self.fills = fills
        self.caps = caps

    def buy(self, info: MarketInfo, token: str, book: Book | None, dollars: float) -> VenueFill | None:
        """Spend up to `dollars` (fees included) on `token`; None (counted) when nothing traded."""
        skipped = self.venue.skipped
        if book is None or not book.asks:
            skipped.empty_book += 1
            return None
        try:
            rules = self.venue.market_rules(info, token, book)
            self.account.check_share_approval(token)
        except Refused:
            return None
        tick = rules.tick_value
        caps = self.caps
        cap = min(1.0 - tick, ceil_to_tick(book.asks[0][0] + caps.max_slippage, tick))
        reserved = self.fills.reserved()
        room = caps.max_total_dollars - self.account.spent - reserved
        balance = self.account.balance
        wallet = math.inf if balance is None else balance - reserved
        budget = min(dollars, caps.max_order_dollars, room, wallet)
        remaining, shares, worst = budget, 0.0, None
        for price, size in book.asks:
            if price > cap + EPS or remaining < SHARE_STEP * price:
                break
            qty = min(size, remaining / price)
            remaining -= qty * price
            shares += qty
            worst = price
        if worst is None:
            if budget >= MIN_MARKET_BUY_DOLLARS:
                skipped.empty_book += 1
                return None
            worst = book.asks[0][0]
        limit = ceil_to_tick(worst, tick)
        per_dollar = max_fee_per_dollar(limit, rules)
        amount = floor_cents(max(0.0, budget - _FEE_ROUNDING) / (1.0 + per_dollar))
        # the venue checks the order's own size (dollars / limit), the book walk the likely fill
        if amount < MIN_MARKET_BUY_DOLLARS or min(shares, amount / limit) + EPS < rules.min_size:
            wanted = min(dollars, caps.max_order_dollars)
            if room < wanted and room <= wallet:
                skipped.exposure_cap += 1  # too small because the run's cap is (nearly) spent
            elif wallet < wanted:
                skipped.low_balance += 1
            else:
                skipped.below_min_size += 1
            return None
        try:
            return self._submit(info, token, "BUY", amount, limit, rules, amount * (1.0 + per_dollar) + _FEE_ROUNDING)
        except Refused as refused:
            if refused.reason == NOT_ENOUGH_BALANCE:
                self.account.reread_balance()
            return None

    def sell(self, info: MarketInfo, token: str, book: Book | None, shares: float) -> VenueFill:
        """Sell up to `shares` into the bids; raises Refused (counted) when nothing sold."""
        skipped = self.venue.skipped
        order = floor_shares(shares)
        rules = self.venue.market_rules(info, token, book)
        if order + EPS < rules.min_size:
            skipped.exit_below_min_size += 1
            raise Refused("below_min_size")
        if book is None or not book.bids:
            skipped.empty_book += 1
            raise Refused("empty_book")
        tick = rules.tick_value
        floor = max(tick, floor_to_tick(book.bids[0][0] - self.caps.max_slippage, tick))
        remaining, worst = order, None
        for price, size in book.bids:
            if price < floor - EPS or remaining < SHARE_STEP - EPS:
                break
            remaining -= min(size, remaining)
            worst = price
        if worst is None:
            skipped.empty_book += 1
            raise Refused("empty_book")
        try:
            return self._submit(info, token, "SELL", order, floor_to_tick(worst, tick), rules, 0.0)
        except Refused as refused:
            if refused.reason == NOT_ENOUGH_BALANCE:
                # Polymarket's advice for sells refused right after a buy: ask the venue to re-read the balance
                self.account.update_balance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token))
            raise

    def _submit(self, info: MarketInfo, token: str, side: str, amount: float, limit: float, rules: Rules,
                reserve: float) -> VenueFill:
        """Build, sign and post one marketable order; its fill (booked against the cap and balance), or
        Refused: counted and logged, or PENDING when the venue has not shown the fill yet."""
        venue, client = self.venue, self.venue.client
        size = f"${amount:.2f}" if side == "BUY" else f"{amount:.2f} shares"
        what = f"{side} {size} of {info.asset} {'UP' if token == info.token_up else 'DOWN'} at <= {limit:g}"
        signed = self._sign(info, token, side, amount, limit, rules, what)
        order_id = self._order_hash(signed, rules)
        sent_at = time.time()
        try:
            response = client.post_order(signed, self.caps.order_type)
        except PolyApiException as exc:
            text = error_text(exc)
            if not unanswered(exc.status_code):
                venue.refuse_api(exc, what, info)
            check_fatal(exc.status_code, text)
            log.warning("order %s (%s): no answer (%s, status %s); looking for its fill in the venue's trades",
                        order_id, what, text, exc.status_code)
            pending = self.fills.add_pending(order_id, info, token, side, limit, rules, reserve, sent_at)
            return self.fills.await_fill(pending, what)
        except PolyException as exc:
            venue.reject(OTHER, what, error_text(exc), info)
        if not isinstance(response, dict) or not response.get("success", False) or response.get("errorMsg") \
                or response.get("error"):
            text = message(response.get("errorMsg") or response.get("error") if isinstance(response, dict)
                           else response)
            check_fatal(200, text)
            venue.reject(classify(200, text), what, text, info)
        order_id = str(response.get("orderID") or order_id)
        fill = self._fill_from_answer(response, side, rules, limit, order_id)
        status = str(response.get("status", "")).lower()
        if fill is not None:
            log.info("order %s: %s, status %s, making %s, taking %s", order_id, what, status,
                     response.get("makingAmount"), response.get("takingAmount"))
            self.fills.book(fill, info, token, side, rules, sent_at)
            return fill
        if status in ("delayed", "live"):  # accepted, not matched yet
            log.info("order %s (%s): %s; waiting for its fill", order_id, what, status)
            pending = self.fills.add_pending(order_id, info, token, side, limit, rules, reserve, sent_at)
            return self.fills.await_fill(pending, what)
        venue.reject(NO_MATCH, what, f"accepted without a match (status {status or '?'})", info)

    def _sign(self, info: MarketInfo, token: str, side: str, amount: float, limit: float, rules: Rules,
              what: str) -> object:
        args = MarketOrderArgs(token_id=token, amount=amount, side=side, price=limit, order_type=self.caps.order_type)
        # version 2 pinned: the orders are signed for the CTF Exchange V2 the venue runs since 2026-04-28
        options = PartialCreateOrderOptions(tick_size=rules.tick, neg_risk=rules.neg_risk, version=2)
        try:
            return self._venue_accuracy(self.venue.client.create_market_order(args, options), rules)
        except PolyApiException as exc:  # the client may look market data up first
            self.venue.refuse_api(exc, what, info)
        except PolyException as exc:
            text = error_text(exc)
            self.venue.reject(TICK_SIZE if "tick size" in text else INVALID_ORDER, what, text, info)
        except ValueError as exc:  # the client's builder validates with ValueError too
            self.venue.reject(INVALID_ORDER, what, exc, info)

    def _venue_accuracy(self, signed: object, rules: Rules) -> object:
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

    def _order_builder(self, rules: Rules) -> ExchangeOrderBuilderV2:
        """The client's V2 signer for this market's exchange contract (neg-risk markets have their own)."""
        client = self.venue.client
        contracts = get_contract_config(client.chain_id)
        exchange = contracts.neg_risk_exchange_v2 if rules.neg_risk else contracts.exchange_v2
        return ExchangeOrderBuilderV2(exchange, client.chain_id, client.signer)

    def _order_hash(self, signed: object, rules: Rules) -> str:
        """The order id the venue gives the order (its EIP-712 hash), known before any answer."""
        builder = self._order_builder(rules)
        return builder.build_order_hash(builder.build_order_typed_data(signed))

    @staticmethod
    def _fill_from_answer(response: dict, side: str, rules: Rules, limit: float, order_id: str) -> VenueFill | None:
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
        return VenueFill(shares, cash, taker_fee(shares, avg, rules.fee_rate, rules.fee_exponent), avg, limit,
                         order_id)
