"""The frame vocabulary lives in `core.frames`; this path stays for scripts and code that import it here."""

from core.frames import (
    ASSETS,
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_FUTURES_PUBLIC,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SOURCE,
    FEED_SPOT,
    FEEDS,
    WINDOW_SECONDS,
    Frame,
    MarketInfo,
    Source,
)

__all__ = [
    "ASSETS",
    "FEEDS",
    "FEED_DISCOVERY",
    "FEED_FUTURES_MARKET",
    "FEED_FUTURES_PUBLIC",
    "FEED_POLYMARKET",
    "FEED_RTDS",
    "FEED_SOURCE",
    "FEED_SPOT",
    "WINDOW_SECONDS",
    "Frame",
    "MarketInfo",
    "Source",
]
