"""Paper broker: fills orders against the real Polymarket book the way the venue would.

`fill="book"` (default): taker orders walk the book level by level at the resting prices, pay the
market's taker fee `C x rate x (p(1-p))^exponent` per level (core.fees, rounded to 5 decimals) as CLOB
V2 charges it: on a buy in USDC on top of the fill, every bought share delivered; on a sale out of the
proceeds. Orders respect the tick grid (a limit price must lie in [tick, 1 - tick]) and the minimum
order size, and cannot reuse liquidity another order took in the same tick.
`fill="mid"`: the reference project's paper assumption (fill at the token's mid, no fee, no depth or
size limits), kept only to compare numbers.

The engine delays paper orders (`--latency-ms`): an order decided at t reaches this broker with the
books as they stand at t + latency. A delayed book order carries the limit the live broker would send,
`max_slippage` past the best price at the decision (`order_limit`), and takes only the levels within
it (`within_limit`); a book that moved wholly past the limit leaves the order unfilled (counted by the
engine). At latency 0 orders fill within the tick, uncapped, as before.

Documented choices:
- A buy whose filled shares fall below the market's minimum size is skipped (counted), never faked.
- A sale orders the held shares rounded down to 0.01; if that is below the minimum size the exit is
  skipped (counted) and the position is held to settlement. A sale that fills partially (thin bids)
  leaves the rest open. Dust below 0.01 share left after a full sale is abandoned (worth < $0.01).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from core.fees import taker_fee
from core.frames import MarketInfo
from engine.positions import DOWN, EXIT_CLOSE, UP, Position, TradeRecord, realize
from strategies.base import Action

FILL_MODES = ("book", "mid")
SHARE_STEP = 0.01
_EPS = 1e-9


class Book(Protocol):
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    tick_size: float
    updated_at: float


@dataclass(slots=True)
class Moment:
    """What an order (or a close) meets: the market's books, the clock time, its UP prob and the index's
    move since the window opened (index / price to beat - 1, 0 while unknown)."""

    up_book: Book | None
    down_book: Book | None
    now: float
    prob: float
    change: float

    def book(self, side: str) -> Book | None:
        """The book of the UP or the DOWN token."""
        return self.up_book if side == UP else self.down_book


@dataclass(slots=True)
class Fill:
    shares: float  # shares traded
    net_shares: float  # shares delivered: all of them where the fee is paid in USDC (paper, CLOB V2)
    cash: float  # USDC paid for the shares (buy, the fee on top) or received before the fee (sale)
    fee: float  # USDC paid in taker fees
    avg_price: float
    limit_price: float  # the order's limit on the tick grid (worst price it may take)


@dataclass(slots=True)
class SkipCounts:
    """Orders that did not trade, by reason (reported, never faked)."""

    below_min_size: int = 0  # entry would fill fewer shares than the market minimum
    exit_below_min_size: int = 0  # exit attempts (one per tick) on holdings below the minimum: held to settlement
    empty_book: int = 0  # no book, or nothing tradable on the side the order needs
    dust_shares: float = 0.0  # shares abandoned below the 0.01 step

    def to_dict(self) -> dict:
        return {
            "below_min_size": self.below_min_size,
            "exit_below_min_size": self.exit_below_min_size,
            "empty_book": self.empty_book,
            "dust_shares": round(self.dust_shares, 6),
        }


@dataclass(slots=True)
class Execution:
    """What one action did: the market's position afterwards, a closed trade, whether it opened one."""

    position: Position | None
    record: TradeRecord | None = None
    opened: bool = False


def floor_shares(shares: float) -> float:
    return math.floor(shares / SHARE_STEP + _EPS) * SHARE_STEP


def ceil_to_tick(price: float, tick: float) -> float:
    return round(math.ceil(price / tick - _EPS) * tick, 6)


def floor_to_tick(price: float, tick: float) -> float:
    return round(math.floor(price / tick + _EPS) * tick, 6)


def _mid(book: Book | None) -> float | None:
    if book is None or not book.bids or not book.asks:
        return None
    return (book.bids[0][0] + book.asks[0][0]) / 2.0


def order_side(action: Action, position: Position | None) -> tuple[str, bool] | None:
    """The order an action sends under the position rules: (the side of the token, True for a buy), or
    None when it sends none. BUY opens UP or closes DOWN, SELL opens DOWN or closes UP; BUY while long
    UP, SELL while long DOWN (no pyramiding) and HOLD send nothing."""
    if action == Action.HOLD:
        return None
    if position is None:
        return (UP if action == Action.BUY else DOWN), True
    if (action == Action.BUY) == (position.side == DOWN):
        return position.side, False
    return None


def order_limit(book: Book | None, buying: bool, tick: float, max_slippage: float) -> float | None:
    """The limit the live broker sends: `max_slippage` past the touch on the tick grid, inside
    [tick, 1 - tick]; None when the side the order needs is empty."""
    levels = (book.asks if buying else book.bids) if book is not None else None
    if not levels:
        return None
    tick = book.tick_size or tick
    if buying:
        return min(1.0 - tick, ceil_to_tick(levels[0][0] + max_slippage, tick))
    return max(tick, floor_to_tick(levels[0][0] - max_slippage, tick))


@dataclass(slots=True)
class LimitedBook:
    """The part of a book a limit order may take: one side cut at the limit, the other as it is."""

    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    tick_size: float
    updated_at: float


def within_limit(book: Book, buying: bool, limit: float) -> Book | None:
    """`book` without the levels past `limit` on the side an order takes (asks above a buy's limit,
    bids below a sale's); None when that side has levels and none reaches the limit. An empty side
    comes back as it is, for the broker to count."""
    levels = book.asks if buying else book.bids
    if buying:
        reachable = [lv for lv in levels if lv[0] <= limit + _EPS]
    else:
        reachable = [lv for lv in levels if lv[0] >= limit - _EPS]
    if not levels or len(reachable) == len(levels):
        return book
    if not reachable:
        return None
    if buying:
        return LimitedBook(book.bids, reachable, book.tick_size, book.updated_at)
    return LimitedBook(reachable, book.asks, book.tick_size, book.updated_at)


class Broker(Protocol):
    """What the engine asks of a broker: `PaperBroker` here, `venues.polymarket.broker.LiveBroker` live.

    Both get the action -> order rules from `PositionRules`. A `blocking` broker's calls may wait on the
    network: the engine runs each in a worker thread, one at a time, and does not delay its orders (the
    venue supplies the latency).
    """

    blocking: bool
    skipped: SkipCounts  # orders that did not trade, by reason (the report's skipped_orders)

    def begin_tick(self) -> None:
        """A new tick starts (the paper broker frees the liquidity taken in the last one)."""

    def execute(
        self, action: Action, info: MarketInfo, position: Position | None, dollars: float, at: Moment
    ) -> Execution:
        """Apply one action to the market's position, spending up to `dollars` on a buy; what it did."""

    def close_at_book(self, info: MarketInfo, position: Position, at: Moment, reason: str) -> TradeRecord:
        """Close `position` whatever happens (the bids it finds, the rest written off at 0)."""

    def close_all(self) -> int:
        """End of run: cancel what rests on the venue; the number of orders cancelled."""


@dataclass(slots=True)
class _Consumed:
    stamp: float
    by_price: dict[float, float] = field(default_factory=dict)


class PositionRules:
    """The engine's action -> order rules over a broker's `buy` and `sell` (paper or live).

    A subclass provides `buy(token, book, dollars, info)` and `sell(token, book, shares, info)`, each a
    Fill or None when nothing traded (counted by the subclass), and `skipped` with `dust_shares`; it may
    replace an action before the rules apply it (`route`) and follow each position a buy opens (`opened`).
    """

    skipped: SkipCounts
    blocking = False  # paper fills never wait on the network

    def buy(self, token_id: str, book: Book | None, dollars: float, info: MarketInfo) -> Fill | None:
        raise NotImplementedError

    def sell(self, token_id: str, book: Book | None, shares: float, info: MarketInfo) -> Fill | None:
        raise NotImplementedError

    def route(self, action: Action, info: MarketInfo, position: Position | None) -> Action:
        """The action to apply in place of the strategy's (HOLD sends nothing); paper brokers keep it."""
        return action

    def opened(self, position: Position) -> None:
        """A buy opened `position` (a broker that must correct it later keeps it)."""

    def execute(
        self, action: Action, info: MarketInfo, position: Position | None, dollars: float, at: Moment
    ) -> Execution:
        """Apply one action (as `route` has it) with the position rules (`order_side`) against the books of
        `at`. A sale that trades nothing keeps the position (the next exit decision tries again)."""
        order = order_side(self.route(action, info, position), position)
        if order is None:
            return Execution(position)
        side, buying = order
        if buying:
            token = info.token_up if side == UP else info.token_down
            fill = self.buy(token, at.book(side), dollars, info)
            if fill is None:
                return Execution(None)
            opened = Position(
                market_id=info.condition_id,
                asset=info.asset,
                side=side,
                token_id=token,
                shares=fill.net_shares,
                cost=fill.cash,
                entry_fee=fill.fee,
                entry_price=fill.avg_price,
                entry_time=at.now,
                time_remaining_at_entry=max(0.0, info.end - at.now),
                prob_at_entry=at.prob,
            )
            self.opened(opened)
            return Execution(opened, opened=True)
        assert position is not None  # order_side closes only a held position
        fill = self.sell(position.token_id, at.book(side), position.shares, info)
        if fill is None:
            return Execution(position)
        leftover = position.shares - fill.shares
        full = leftover < SHARE_STEP - _EPS
        if full:
            self.skipped.dust_shares += max(0.0, leftover)
        record = realize(
            position,
            position.shares if full else fill.shares,
            fill.cash,
            fill.fee,
            fill.avg_price,
            at.now,
            at.prob,
            at.change,
            EXIT_CLOSE,
        )
        return Execution(None if full else position, record)

    def close_at_book(self, info: MarketInfo, position: Position, at: Moment, reason: str) -> TradeRecord:
        """Close a position whatever happens (shutdown, unresolved market): sell what the bids take
        (`sell_out`), then write off the rest at 0 — the honest value of shares nobody will buy."""
        sold, cash, fee = self.sell_out(info, position, at.book(position.side), reason)
        held = position.shares
        exit_price = cash / held if held > 0 else 0.0
        price = exit_price if sold else 0.0
        return realize(position, held, cash, fee, price, at.now, at.prob, at.change, reason)

    def sell_out(
        self, info: MarketInfo, position: Position, book: Book | None, reason: str
    ) -> tuple[float, float, float]:
        """Sell `position` into the bids once: (shares sold, USDC before the fee, fee). A broker that
        retries, or first corrects `position` by the venue's news, does it here."""
        fill = self.sell(position.token_id, book, position.shares, info)
        if fill is None:
            return 0.0, 0.0, 0.0
        return fill.shares, fill.cash, fill.fee

    def close_all(self) -> int:
        """End of run: nothing rests on a paper venue (a live broker cancels its resting orders)."""
        return 0


class PaperBroker(PositionRules):
    def __init__(self, fill: str = "book") -> None:
        if fill not in FILL_MODES:
            raise ValueError(f"unknown fill mode {fill!r}; use one of {', '.join(FILL_MODES)}")
        self.fill = fill
        self.skipped = SkipCounts()
        self._consumed: dict[str, _Consumed] = {}

    def begin_tick(self) -> None:
        """Liquidity taken in the previous tick is available again."""
        self._consumed.clear()

    def _taken(self, token_id: str, book: Book) -> dict[float, float]:
        used = self._consumed.get(token_id)
        if used is None or used.stamp != book.updated_at:
            used = _Consumed(book.updated_at)
            self._consumed[token_id] = used
        return used.by_price

    def buy(self, token_id: str, book: Book | None, dollars: float, info: MarketInfo) -> Fill | None:
        """Spend up to `dollars` on shares of `token_id` taking asks, the fee on top; None (counted) when
        nothing may trade."""
        if self.fill == "mid":
            mid = _mid(book)
            if mid is None or mid <= 0.0:
                self.skipped.empty_book += 1
                return None
            shares = dollars / mid
            return Fill(shares, shares, dollars, 0.0, mid, mid)
        if book is None or not book.asks:
            self.skipped.empty_book += 1
            return None
        tick = book.tick_size or info.tick_size
        taken = self._taken(token_id, book)
        plan: list[tuple[float, float]] = []
        remaining = dollars
        limit = 0.0
        for price, size in book.asks:
            if remaining < SHARE_STEP * price:
                break
            level_limit = ceil_to_tick(price, tick)
            if level_limit > 1.0 - tick + _EPS or price <= 0.0:
                break  # no valid limit price reaches this level (asks are sorted, so none further)
            available = size - taken.get(price, 0.0)
            qty = floor_shares(min(available, remaining / price))
            if qty <= 0.0:
                continue
            plan.append((price, qty))
            remaining -= qty * price
            limit = level_limit
        gross = sum(q for _, q in plan)
        if not plan:
            self.skipped.empty_book += 1
            return None
        if gross + _EPS < info.min_size:
            self.skipped.below_min_size += 1
            return None
        cash = fee = 0.0
        for price, qty in plan:
            taken[price] = taken.get(price, 0.0) + qty
            cash += qty * price
            fee += taker_fee(qty, price, info.fee_rate, info.fee_exponent)
        return Fill(gross, gross, cash, round(fee, 5), cash / gross, limit)

    def sell(self, token_id: str, book: Book | None, shares: float, info: MarketInfo) -> Fill | None:
        """Sell `shares` of `token_id` into its bids; may fill partially; None (counted) when it cannot trade."""
        if self.fill == "mid":
            mid = _mid(book)
            if mid is None:
                self.skipped.empty_book += 1
                return None
            return Fill(shares, shares, shares * mid, 0.0, mid, mid)
        order = floor_shares(shares)
        if order + _EPS < info.min_size:
            self.skipped.exit_below_min_size += 1
            return None
        if book is None or not book.bids:
            self.skipped.empty_book += 1
            return None
        tick = book.tick_size or info.tick_size
        taken = self._taken(token_id, book)
        remaining = order
        cash = fee = 0.0
        limit = 0.0
        for price, size in book.bids:
            if remaining < SHARE_STEP - _EPS:
                break
            level_limit = floor_to_tick(price, tick)
            if level_limit < tick - _EPS:
                break
            available = size - taken.get(price, 0.0)
            qty = floor_shares(min(available, remaining))
            if qty <= 0.0:
                continue
            taken[price] = taken.get(price, 0.0) + qty
            cash += qty * price
            fee += taker_fee(qty, price, info.fee_rate, info.fee_exponent)
            remaining = round(remaining - qty, 6)
            limit = level_limit
        sold = round(order - remaining, 6)
        if sold <= 0.0:
            self.skipped.empty_book += 1
            return None
        return Fill(sold, sold, cash, round(fee, 5), cash / sold, limit)
