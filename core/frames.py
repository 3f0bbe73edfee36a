"""The unit every source delivers: one raw venue frame with its receive time on the run's clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

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
    "Episode",
    "EpisodeSource",
    "Frame",
    "MarketInfo",
    "Source",
]

FEED_FUTURES_MARKET = "binance_futures_market"
FEED_FUTURES_PUBLIC = "binance_futures_public"
FEED_SPOT = "binance_spot"
FEED_POLYMARKET = "polymarket_market"
FEED_RTDS = "polymarket_rtds"
FEED_DISCOVERY = "discovery"
FEED_SOURCE = "source"  # a recording's first line: JSON of what produced it (source, seed, sim profile)
FEEDS = (FEED_FUTURES_MARKET, FEED_FUTURES_PUBLIC, FEED_SPOT, FEED_POLYMARKET, FEED_RTDS, FEED_DISCOVERY, FEED_SOURCE)

ASSETS = ("BTC", "ETH", "SOL", "XRP")
WINDOW_SECONDS = 900


@dataclass(slots=True, frozen=True)
class Frame:
    t: float  # receive time on the run's clock, unix seconds
    feed: str  # one of FEEDS
    msg: str  # the raw text frame exactly as received


@dataclass(slots=True)
class MarketInfo:
    """One 15-minute market, with exactly the fields of a recording's `discovery` line."""

    asset: str
    condition_id: str
    token_up: str
    token_down: str
    start: int
    end: int
    price_to_beat: float | None
    tick_size: float
    min_size: float
    fee_rate: float
    fee_exponent: float = 1.0  # the fee schedule's exponent: fee = C x rate x (p(1-p))^exponent

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MarketInfo:
        return cls(
            asset=str(d["asset"]),
            condition_id=str(d["condition_id"]),
            token_up=str(d["token_up"]),
            token_down=str(d["token_down"]),
            start=int(d["start"]),
            end=int(d["end"]),
            price_to_beat=None if d.get("price_to_beat") is None else float(d["price_to_beat"]),
            tick_size=float(d["tick_size"]),
            min_size=float(d["min_size"]),
            fee_rate=float(d["fee_rate"]),
            fee_exponent=float(d.get("fee_exponent", 1.0)),  # recordings made before it was recorded
        )


@dataclass(slots=True)
class Episode:
    """A stretch of frames in time order; between two, the engine forgets markets, data and clock time."""

    frames: AsyncIterator[Frame]
    tradable: Callable[[int, int], bool]  # (window start, window end): may the engine trade that window


class Source(Protocol):
    """Anything that yields frames: live venues, the simulator, a recording.

    `virtual` is True when frame times drive the clock (speed max, replay); False when the clock is
    real (or scaled real) time and frames are stamped on arrival. A virtual source may instead offer
    `episodes()`, an async iterator of `Episode` (a library of recordings, the sim/recording mix).
    """

    virtual: bool

    def frames(self) -> AsyncIterator[Frame]: ...

    async def close(self) -> None: ...


@runtime_checkable
class EpisodeSource(Protocol):
    """A virtual source that comes in episodes (a library of recordings, the sim/recording mix)."""

    virtual: bool

    def episodes(self) -> AsyncIterator[Episode]: ...

    async def close(self) -> None: ...
