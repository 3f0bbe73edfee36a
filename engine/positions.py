"""Open positions and the closed-trade records the trades CSV is written from.

Money is cash-flow based, with fees as CLOB V2 charges them: a buy debits the dollars walked for the
shares (`cost`) plus its taker fee in USDC (`entry_fee`) and delivers every share bought; a sale
credits proceeds minus its USDC fee; settlement pays 1 or 0 per share. Realized PnL = proceeds - sell
fee - cost - entry fee, so a record's `fee` (entry fee share + sell fee) is already in its `pnl`.
"""

from __future__ import annotations

from dataclasses import dataclass

UP = "UP"
DOWN = "DOWN"

EXIT_CLOSE = "close"
EXIT_SETTLE = "settle"
EXIT_SHUTDOWN = "shutdown"
EXIT_UNRESOLVED = "unresolved"  # outcome still unknown after the grace period: closed at the book


@dataclass(slots=True)
class Position:
    """One market's holding of a single token (no pyramiding, so at most one per market)."""

    market_id: str
    asset: str
    side: str  # UP or DOWN
    token_id: str
    shares: float  # shares held: every share bought (the buy fee was paid in USDC)
    cost: float  # USDC paid for the shares still held, without the fee
    entry_fee: float  # USDC buy fee of the shares still held
    entry_price: float  # average price paid per share (cost / shares)
    entry_time: float
    time_remaining_at_entry: float  # seconds left in the window at entry
    prob_at_entry: float  # UP mid at entry

    @property
    def sign(self) -> float:
        return 1.0 if self.side == UP else -1.0

    def value_at(self, price: float) -> float:
        """Unrealized PnL in dollars if the held token were worth `price` (the buy fee is spent)."""
        return self.shares * price - self.cost - self.entry_fee


@dataclass(slots=True)
class TradeRecord:
    """A (partial) exit of a position: one row of the trades CSV."""

    timestamp: float
    market_id: str
    asset: str
    action: str  # the opening action: BUY (long UP) or SELL (long DOWN)
    side: str
    entry_price: float
    exit_price: float
    size: float  # USDC paid for the shares this record closes, without the fee (= shares x entry_price)
    shares: float
    fee: float  # USDC paid in fees: the closed shares' part of the buy fee + the sell fee
    pnl: float
    duration: float  # seconds held
    time_remaining_at_entry: float
    prob_at_entry: float
    prob_at_exit: float
    underlying_change: float  # fractional index change since the window open, at exit
    exit_reason: str


def realize(
    position: Position,
    shares_out: float,
    proceeds: float,
    sell_fee: float,
    exit_price: float,
    now: float,
    prob_at_exit: float,
    underlying_change: float,
    exit_reason: str,
) -> TradeRecord:
    """Take `shares_out` shares out of `position` for `proceeds` dollars and return the trade record.

    The position keeps its remaining shares with a proportional share of cost and entry fee; a caller
    that treats the rest as gone (dust) passes `shares_out = position.shares`.
    """
    frac = 1.0 if position.shares <= 0 else min(1.0, shares_out / position.shares)
    cost = position.cost * frac
    entry_fee = position.entry_fee * frac
    pnl = proceeds - sell_fee - cost - entry_fee
    position.cost -= cost
    position.entry_fee -= entry_fee
    position.shares = max(0.0, position.shares - shares_out)
    return TradeRecord(
        timestamp=now,
        market_id=position.market_id,
        asset=position.asset,
        action="BUY" if position.side == UP else "SELL",
        side=position.side,
        entry_price=position.entry_price,
        exit_price=exit_price,
        size=cost,
        shares=shares_out,
        fee=round(entry_fee + sell_fee, 5),
        pnl=pnl,
        duration=now - position.entry_time,
        time_remaining_at_entry=position.time_remaining_at_entry,
        prob_at_entry=position.prob_at_entry,
        prob_at_exit=prob_at_exit,
        underlying_change=underlying_change,
        exit_reason=exit_reason,
    )


def settle(
    position: Position, up_won: bool, now: float, prob_at_exit: float, underlying_change: float
) -> TradeRecord:
    """Resolution pays 1 per share of the winning token and 0 otherwise; no fee."""
    payout = 1.0 if (position.side == UP) == up_won else 0.0
    shares = position.shares
    return realize(
        position, shares, shares * payout, 0.0, payout, now, prob_at_exit, underlying_change, EXIT_SETTLE
    )
