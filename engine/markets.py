"""One market as the engine trades it, and what the market data says about it: its books when they can be
trusted, its price to beat, the index's move since the window opened, its outcome; the windows in play and
the markets already finished."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.frames import MarketInfo
from engine.positions import Position
from engine.state_builder import PROB_HISTORY
from strategies.base import MarketState
from streamers.market_data import MarketData
from streamers.polymarket import PolymarketBook

if TYPE_CHECKING:
    from engine.orders import Order


def trusted(book: PolymarketBook | None) -> PolymarketBook | None:
    """The book, unless it has no snapshot yet or disagreed with the venue (then it awaits a resync)."""
    if book is None or book.needs_resync:
        return None
    return book


@dataclass(slots=True)
class Market:
    info: MarketInfo
    probs: deque[float] = field(default_factory=lambda: deque(maxlen=PROB_HISTORY))
    prob: float = 0.5
    position: Position | None = None
    ptb: float | None = None  # the Chainlink price at the window open, once known (when discovery has none)
    acted: bool = False  # passed to act_batch at least once, so the strategy knows it
    state: MarketState | None = None  # the last state decided on (the dashboard's fair value)
    order: Order | None = None  # a delayed paper order in flight
    trades: int = 0
    pnl: float = 0.0
    fees: float = 0.0
    exposure: float = 0.0

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.info.start, self.info.asset, self.info.condition_id)

    def price_to_beat(self, md: MarketData) -> float | None:
        """Discovery's price to beat, else the Chainlink price at the window open once it is final."""
        if self.info.price_to_beat is not None:
            return self.info.price_to_beat
        if self.ptb is None:
            latest = md.chainlink_latest_ts(self.info.asset)
            if latest is not None and latest >= self.info.start:  # prices arrive in order: this is final
                self.ptb = md.chainlink_price_at(self.info.asset, self.info.start)
        return self.ptb

    def underlying_change(self, md: MarketData, index_price: float | None) -> float:
        """index / price to beat - 1; 0 while either is unknown."""
        ptb = self.price_to_beat(md)
        if not ptb or not index_price:
            return 0.0
        return index_price / ptb - 1.0

    def outcome(self, md: MarketData) -> str | None:
        """Up/Down from the venue's resolution, else from the Chainlink price at the window end."""
        info = self.info
        outcome = md.resolved_outcome(info.condition_id)
        if outcome is not None:
            return outcome
        ptb = self.price_to_beat(md)
        latest = md.chainlink_latest_ts(info.asset)
        if ptb is None or latest is None or latest < info.end:
            return None
        final = md.chainlink_price_at(info.asset, info.end)
        if final is None:
            return None
        return "Up" if final >= ptb else "Down"  # ties go to Up

    def row(self, md: MarketData, now: float) -> dict:
        """What the dashboard shows of this market: quotes, fair value and index move from the last state
        decided on, the position."""
        book = md.book(self.info.token_up)
        pos, state, prob = self.position, self.state, self.prob
        known = state is not None and state.index_z() is not None  # index and its open price both seen
        return {
            "asset": self.info.asset,
            "start": self.info.start,
            "seconds_left": max(0.0, self.info.end - now),
            "window_seconds": self.info.end - self.info.start,
            "fair": state.fair_up() if known else None,
            "index_change": state.index_price / state.price_to_beat - 1.0 if known else None,
            "mid": prob,
            "bid": book.best_bid if book is not None else None,
            "ask": book.best_ask if book is not None else None,
            "side": pos.side if pos else None,
            "entry": pos.entry_price if pos else None,
            "unrealized": pos.value_at(prob if pos.side == "UP" else 1.0 - prob) if pos else 0.0,
        }


class Windows:
    """The windows in play: how many of each one's markets are still open, and its PnL so far by asset."""

    def __init__(self) -> None:
        self._open: dict[int, int] = {}  # window start -> markets not finished
        self._pnl: dict[int, dict[str, float]] = {}  # window start -> PnL by asset

    def add(self, m: Market) -> None:
        self._open[m.info.start] = self._open.get(m.info.start, 0) + 1

    def finish(self, m: Market) -> dict[str, float] | None:
        """`m` is done: its window's PnL by asset once every market of the window is, else None."""
        start = m.info.start
        pnl = self._pnl.setdefault(start, {})
        pnl[m.info.asset] = pnl.get(m.info.asset, 0.0) + m.pnl
        left = self._open.get(start, 0) - 1
        if left > 0:
            self._open[start] = left
            return None
        self._open.pop(start, None)
        return self._pnl.pop(start)

    def clear(self) -> None:
        self._open.clear()
        self._pnl.clear()


class Recent:
    """The last `size` condition ids added (finished markets, so rediscovery does not revive them)."""

    def __init__(self, size: int) -> None:
        self._ids: set[str] = set()
        self._fifo: deque[str] = deque()
        self._size = size

    def __contains__(self, cid: str) -> bool:
        return cid in self._ids

    def add(self, cid: str) -> None:
        self._ids.add(cid)
        self._fifo.append(cid)
        if len(self._fifo) > self._size:
            self._ids.discard(self._fifo.popleft())

    def clear(self) -> None:
        self._ids.clear()
        self._fifo.clear()
