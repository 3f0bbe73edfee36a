"""Paper orders in flight.

An order decided at tick time t fills against the book as it stands at t + latency (the venue holds API
taker orders on crypto markets ~250 ms, plus network). A book order carries the live broker's limit,
`max_slippage` past the best price at the decision (`order_limit`), and takes only the levels within it
(`within_limit`); an order whose side of the book is empty at the decision is not sent (counted, like the
live broker). Orders that do not fill are counted in `DelaySkips`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.broker import Book, Moment, SkipCounts, order_limit, order_side, within_limit
from engine.markets import Market
from engine.positions import UP
from strategies.base import Action


@dataclass(slots=True)
class DelaySkips:
    """Delayed paper orders that did not fill, by reason (reported beside the broker's counts)."""

    past_limit: int = 0  # the book moved past the order's limit before the order reached it
    window_closed: int = 0  # due at or after its market's window end: the venue no longer matches it
    cancelled_at_stop: int = 0  # still in flight when the run stopped

    def to_dict(self) -> dict:
        return {
            "past_limit": self.past_limit,
            "window_closed": self.window_closed,
            "cancelled_at_stop": self.cancelled_at_stop,
        }


@dataclass(slots=True, eq=False)
class Order:
    """A paper order decided at one tick and due to fill `latency` later."""

    market: Market
    action: Action
    due: float  # clock time it reaches the book
    side: str  # UP or DOWN: the token it trades
    buying: bool
    limit: float | None  # worst price it may take (book fills); None: no limit (mid fills)


class InFlight:
    """The orders in flight, in due order (every order has the same latency); one per market at most."""

    def __init__(self, latency: float, fill: str, max_slippage: float, broker_skips: SkipCounts) -> None:
        self.latency = latency  # seconds
        self.queue: deque[Order] = deque()
        self.skips = DelaySkips()
        self._limited = fill == "book"  # mid fills take no depth, so they need no limit
        self._max_slippage = max_slippage
        self._broker_skips = broker_skips  # an order not sent for an empty book is the broker's count

    def send(self, m: Market, action: Action, at: Moment) -> bool:
        """Put the action's order in flight; False when it sends none (its reward, 0, is recorded now)."""
        order = order_side(action, m.position)
        if order is None:
            return False
        side, buying = order
        limit = None
        if self._limited:
            limit = order_limit(at.book(side), buying, m.info.tick_size, self._max_slippage)
            if limit is None:
                self._broker_skips.empty_book += 1
                return False
        m.order = Order(m, action, at.now + self.latency, side, buying, limit)
        self.queue.append(m.order)
        return True

    def pop_due(self, due: float) -> Order | None:
        """The next order due at or before `due`, out of flight; None when there is none."""
        if not self.queue or self.queue[0].due > due:
            return None
        order = self.queue.popleft()
        order.market.order = None
        return order

    def reachable(
        self, order: Order, up_book: Book | None, down_book: Book | None
    ) -> tuple[Book | None, Book | None] | None:
        """The books as the order may take them: its side cut at its limit; None (counted) when that side
        moved wholly past the limit."""
        if order.limit is None:
            return up_book, down_book
        book = up_book if order.side == UP else down_book
        if book is None:
            return up_book, down_book
        book = within_limit(book, order.buying, order.limit)
        if book is None:
            self.skips.past_limit += 1
            return None
        return (book, down_book) if order.side == UP else (up_book, book)

    def cancel(self, m: Market, stopping: bool) -> bool:
        """A market finishing with an order in flight: the order never fills; False when it had none."""
        order = m.order
        if order is None:
            return False
        m.order = None
        self.queue.remove(order)
        if stopping:
            self.skips.cancelled_at_stop += 1
        else:
            self.skips.window_closed += 1
        return True
