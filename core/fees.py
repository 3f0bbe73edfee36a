"""Polymarket's taker fee as CLOB V2 charges it: one function for the paper broker, the live broker
and the strategies.

`fee = C x rate x (p(1-p))^exponent` USDC for C shares at price p, with the market's own rate and
exponent (crypto: rate 0.07, exponent 1). On a buy it is paid on top of the fill and every share is
delivered; on a sale it comes out of the proceeds. Makers pay none.
"""

from __future__ import annotations


def taker_fee(shares: float, price: float, rate: float, exponent: float = 1.0) -> float:
    """Taker fee in USDC for `shares` at `price`, rounded to 5 decimals."""
    return round(shares * rate * (price * (1.0 - price)) ** exponent, 5)


def fee_per_share(price: float, rate: float, exponent: float = 1.0) -> float:
    """Unrounded fee per share at `price` (what a strategy adds to an ask or takes off a bid)."""
    return rate * (price * (1.0 - price)) ** exponent
