"""Fills the venue has not shown yet, and booked fills until their trades settle.

An order the venue answered `delayed` (or did not answer) is pending: its dollars stay reserved and no
other order goes to its market while the venue's trades (`taker_order_id`) are searched for its fill,
first within the call, then at each later call. A fill found later waits for the engine's next call on
its market; after `release_after` seconds without one the order is released (counted `unknown_outcome`)
but still watched for `watch_for` seconds. Booked trades are followed until CONFIRMED; a FAILED buy is
taken out of its position and the cap, a FAILED sale's shares are reported as still held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from py_clob_client_v2 import TradeParams
from py_clob_client_v2.exceptions import PolyException

from core.fees import taker_fee
from core.frames import MarketInfo
from engine.positions import Position
from venues.polymarket.account import Account
from venues.polymarket.venue import EPS, PENDING, TRADE_FAILED, Refused, Rules, Venue, VenueFill, trade_levels

log = logging.getLogger(__name__)

_POLLS = (0.1, 0.2, 0.4, 0.8)  # seconds between looks at a pending order's trades within the call
_LOOK_EVERY = 1.0  # seconds between looks at pending orders and booked trades in later calls
_LOOKBACK = 60  # seconds before an order was sent that its trades are searched from (clock skew)


@dataclass(slots=True)
class Pending:
    """An order the venue accepted (or may have) whose fill is not known yet."""

    order_id: str
    info: MarketInfo
    token: str
    side: str
    limit: float
    rules: Rules
    reserved: float  # dollars held against the cap (buys)
    sent_at: float  # unix seconds, the scale of the trades' match_time
    release_at: float  # monotonic: the reservation and the market's block end here
    forget_at: float  # monotonic: the trades are no longer searched after this
    released: bool = False


@dataclass(slots=True)
class Booked:
    """A booked fill whose trades have not all settled (CONFIRMED or FAILED) yet."""

    order_id: str
    info: MarketInfo
    token: str
    side: str
    rules: Rules
    sent_at: float
    forget_at: float
    position: Position | None = None  # a buy's position, to take a failed trade's shares out of
    done: set[str] = field(default_factory=set)  # trade ids seen CONFIRMED or FAILED


@dataclass(frozen=True, slots=True)
class Late:
    """A pending order's fill found after its call returned, for the engine's next call on its market."""

    info: MarketInfo
    side: str
    token: str
    fill: VenueFill


def level_totals(levels: list[tuple[float, float]], rules: Rules) -> tuple[float, float, float]:
    """(shares, cash, fee) of trade levels (shares, price); the fee at each level's price."""
    shares = sum(q for q, _ in levels)
    cash = sum(q * price for q, price in levels)
    fee = sum(taker_fee(q, price, rules.fee_rate, rules.fee_exponent) for q, price in levels)
    return shares, cash, fee


def fill_from_trades(trades: list[dict], p: Pending) -> VenueFill | None:
    """What the venue's trades of an order say traded, level by level; the fee at each level's price."""
    levels = [lv for t in trades if str(t.get("status", "")).upper() != "FAILED" for lv in trade_levels(t)]
    shares, cash, fee = level_totals(levels, p.rules)
    if shares <= 0.0:
        return None
    return VenueFill(shares, cash, round(fee, 5), cash / shares, p.limit, p.order_id)


class Reconciler:
    """The orders whose fill is not known yet (`pending`), the fills found for them later (`late`, by
    market) and the booked fills whose trades have not settled (`booked`); see the module docstring."""

    def __init__(self, venue: Venue, account: Account, *, release_after: float, watch_for: float,
                 sleep: Callable[[float], None], monotonic: Callable[[], float]) -> None:
        self.venue = venue
        self.account = account
        self.release_after = release_after
        self.watch_for = watch_for
        self._sleep = sleep
        self._monotonic = monotonic
        self.pending: dict[str, Pending] = {}  # by order id
        self.late: dict[str, Late] = {}  # by condition id
        self.booked: dict[str, Booked] = {}  # by order id
        self._next_look = 0.0

    def book(self, fill: VenueFill, info: MarketInfo, token: str, side: str, rules: Rules, sent_at: float) -> None:
        """Count a fill against the cap and the balance, and follow its trades until they settle."""
        if side == "BUY":
            self.account.commit(fill.cash + fill.fee)
        else:
            self.account.credit(fill.cash - fill.fee)
        self.booked[fill.order_id] = Booked(fill.order_id, info, token, side, rules, sent_at,
                                            self._monotonic() + self.watch_for)

    def add_pending(self, order_id: str, info: MarketInfo, token: str, side: str, limit: float, rules: Rules,
                    reserve: float, sent_at: float) -> Pending:
        now = self._monotonic()
        p = Pending(order_id, info, token, side, limit, rules, reserve if side == "BUY" else 0.0, sent_at,
                    now + self.release_after, now + self.watch_for)
        self.pending[order_id] = p
        return p

    def await_fill(self, p: Pending, what: str) -> VenueFill:
        """Look for a pending order's fill within the call; Refused(PENDING) (still reserved) when none shows."""
        for pause in _POLLS:
            self._sleep(pause)
            trades = self.trades_of([p])[p.order_id]
            if trades:
                del self.pending[p.order_id]
                fill = fill_from_trades(trades, p)
                if fill is None:
                    self.venue.reject(TRADE_FAILED, what, "its trades failed at settlement", p.info)
                log.info("order %s (%s): filled %.4f shares at %.4f", p.order_id, what, fill.shares, fill.avg_price)
                self.book(fill, p.info, p.token, p.side, p.rules, p.sent_at)
                return fill
        log.warning("order %s (%s): no fill shown yet; its market waits for it (up to %.0f s)", p.order_id, what,
                    self.release_after)
        raise Refused(PENDING)

    def trades_of(self, orders: list[Pending] | list[Booked]) -> dict[str, list[dict] | None]:
        """The venue's trades of these orders (they are the taker), by order id, one request per token;
        None for an order whose trades could not be read."""
        by_token: dict[str, list[Pending | Booked]] = {}
        for o in orders:
            by_token.setdefault(o.token, []).append(o)
        found: dict[str, list[dict] | None] = {}
        for token, group in by_token.items():
            after = int(min(o.sent_at for o in group)) - _LOOKBACK
            try:
                trades = self.venue.client.get_trades(TradeParams(asset_id=token, after=after))
            except (PolyException, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.debug("trades of %s: %s", token, exc)
                found.update(dict.fromkeys((o.order_id for o in group), None))
                continue
            for o in group:
                wanted = o.order_id.lower()
                found[o.order_id] = [t for t in trades
                                     if isinstance(t, dict) and str(t.get("taker_order_id", "")).lower() == wanted]
        return found

    def reserved(self) -> float:
        """Dollars held against the cap by buys still pending."""
        return sum(p.reserved for p in self.pending.values() if not p.released)

    def blocked(self, condition_id: str) -> bool:
        """Whether an order of this market still awaits its fill (no other goes to the market meanwhile)."""
        return any(p.info.condition_id == condition_id and not p.released for p in self.pending.values())

    def housekeeping(self) -> None:
        """At most once a second: look at the pending orders and at the settlement of booked trades."""
        if self._monotonic() < self._next_look:
            return
        self._next_look = self._monotonic() + _LOOK_EVERY
        self.look()

    def look(self) -> None:
        """One read of the venue's trades (a request per token) serves both the pending orders and the
        settlement of the booked ones (a fill booked from it is then followed from the same read)."""
        found = self.trades_of([*self.pending.values(), *self.booked.values()])
        self.reconcile(found)
        self.check_settlement(found)

    def reconcile(self, found: dict[str, list[dict] | None] | None = None) -> None:
        """Look once at every pending order (in `found`, else read now): book a fill that showed up, release
        or forget the rest."""
        now = self._monotonic()
        if found is None:
            found = self.trades_of(list(self.pending.values()))
        for p in list(self.pending.values()):
            trades = found[p.order_id]
            fill = fill_from_trades(trades, p) if trades else None
            if trades and fill is None:  # it matched, and its trades failed: nothing happened
                del self.pending[p.order_id]
                self.venue.skipped.refused(TRADE_FAILED)
            elif fill is not None:
                del self.pending[p.order_id]
                self.book(fill, p.info, p.token, p.side, p.rules, p.sent_at)
                if p.released:
                    log.error("order %s (%s %s) filled after it was released: its $%.2f count now", p.order_id,
                              p.side, p.info.asset, fill.cash + fill.fee)
                log.info("order %s (%s %s): filled %.4f shares at %.4f", p.order_id, p.side, p.info.asset,
                         fill.shares, fill.avg_price)
                cid = p.info.condition_id
                if cid in self.late:
                    self.orphan(self.late.pop(cid))
                self.late[cid] = Late(p.info, p.side, p.token, fill)
            elif now >= p.forget_at:
                del self.pending[p.order_id]
            elif now >= p.release_at and not p.released:
                p.released = True
                self.venue.skipped.unknown_outcome += 1
                log.warning("order %s (%s %s): no fill shown after %.0f s; released, still watched", p.order_id,
                            p.side, p.info.asset, self.release_after)

    def take_late(self, info: MarketInfo, token: str, side: str) -> VenueFill | None:
        """The late fill of this market if it is of this token and side (then handed over once)."""
        late = self.late.get(info.condition_id)
        if late is None or late.token != token or late.side != side:
            return None
        del self.late[info.condition_id]
        return late.fill

    def orphan(self, late: Late) -> None:
        """A late fill the engine cannot take any more: a buy's shares stay in the wallet."""
        if late.side == "BUY":
            self.venue.skipped.hold(late.info, late.token, late.fill.shares,
                                    "bought by a late fill the run never booked")
            log.error("order %s: %.2f shares of %s bought after the run moved on; they stay in the wallet",
                      late.fill.order_id, late.fill.shares, late.token)
        else:
            log.error("order %s: %.2f shares of %s sold after the run moved on; the run's PnL misses $%.2f",
                      late.fill.order_id, late.fill.shares, late.token, late.fill.cash - late.fill.fee)

    def check_settlement(self, found: dict[str, list[dict] | None]) -> None:
        """Follow booked trades (their trades in `found`) to CONFIRMED; unbook those that end FAILED."""
        now = self._monotonic()
        for b in list(self.booked.values()):
            trades = found.get(b.order_id)
            if trades is None:
                continue
            for t in trades:
                tid, status = str(t.get("id")), str(t.get("status", "")).upper()
                if tid in b.done or status not in ("CONFIRMED", "FAILED"):
                    continue
                b.done.add(tid)
                if status == "FAILED":
                    self._unbook(b, trade_levels(t))
            if (trades and len(b.done) == len(trades)) or now >= b.forget_at:
                del self.booked[b.order_id]

    def _unbook(self, b: Booked, levels: list[tuple[float, float]]) -> None:
        size, value, fee = level_totals(levels, b.rules)
        price = value / size if size > 0 else 0.0
        self.venue.skipped.refused(TRADE_FAILED)
        if b.side == "BUY":
            cost = value + fee
            self.account.commit(-cost)
            pos = b.position
            if pos is not None and pos.shares > EPS:
                take = min(size, pos.shares)
                pos.shares -= take
                pos.cost = max(0.0, pos.cost - cost * take / size)
                pos.entry_fee = max(0.0, pos.entry_fee - fee * take / size)
            log.error("order %s: a buy of %.2f shares of %s at %.4f FAILED at settlement; taken out of the "
                      "position and the cap", b.order_id, size, b.info.asset, price)
            return
        self.account.credit(-(value - fee))
        self.venue.skipped.hold(b.info, b.token, size, "sale FAILED at settlement")
        log.error("order %s: a sale of %.2f shares of %s at %.4f FAILED at settlement; the shares are back in the "
                  "wallet and the run's PnL counts $%.2f that never arrived", b.order_id, size, b.info.asset, price,
                  value - fee)

    def finish(self, settle_wait: float) -> None:
        """End of run: wait up to `settle_wait` seconds for pending orders and the settlement of booked
        trades, then count and log what is still unknown."""
        waited = 0.0
        while True:
            self.look()
            waiting = any(not p.released for p in self.pending.values()) or self.booked
            if not waiting or waited >= settle_wait:
                break
            self._sleep(1.0)
            waited += 1.0
        skipped = self.venue.skipped
        for p in self.pending.values():
            if not p.released:
                skipped.unknown_outcome += 1
                log.error("order %s (%s %s): its fill was still unknown when the run stopped", p.order_id,
                          p.side, p.info.asset)
        self.pending.clear()
        for late in self.late.values():
            self.orphan(late)
        self.late.clear()
        skipped.unconfirmed_trades += len(self.booked)
        for b in self.booked.values():
            log.warning("order %s (%s %s): trades not settled yet when the run stopped", b.order_id, b.side,
                        b.info.asset)
        self.booked.clear()
