"""Actions, the 18-feature market state, and the strategy interface every strategy implements."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from core.fees import fee_per_share

FEATURE_NAMES: tuple[str, ...] = (
    # momentum (Binance futures)
    "returns_1m",
    "returns_5m",
    "returns_10m",
    # order flow
    "order_book_imbalance_l1",
    "order_book_imbalance_l5",
    "trade_flow_imbalance",
    "cvd_acceleration",
    # microstructure
    "spread_pct",
    "trade_intensity",
    "large_trade_flag",
    # volatility
    "vol_5m",
    "vol_expansion",
    # position
    "has_position",
    "position_side",
    "position_pnl",
    "time_remaining",
    # regime
    "vol_regime",
    "trend_regime",
)
NUM_FEATURES = len(FEATURE_NAMES)
# opt-in: the 18 standard features, then where the UP/DOWN quotes stand against the index (the sim's edge)
EXTENDED_FEATURE_NAMES: tuple[str, ...] = (
    *FEATURE_NAMES,
    "up_mid",  # (UP mid - 0.5) x 2
    "index_distance",  # ln(index / price_to_beat) / (index vol x sqrt(seconds left)), / 3
    "fair_up",  # (digital-option value of UP - 0.5) x 2
    "up_ask_edge",  # (fair UP - UP ask - fee) x 10: value of buying UP now
    "up_bid_edge",  # (UP bid - fee - fair UP) x 10: value of selling UP now
    "down_ask_edge",  # (fair DOWN - DOWN ask - fee) x 10
    "down_bid_edge",  # (DOWN bid - fee - fair DOWN) x 10
)
FEATURE_SETS: dict[str, tuple[str, ...]] = {"standard": FEATURE_NAMES, "extended": EXTENDED_FEATURE_NAMES}
FEATURE_SET_IDS: dict[str, int] = {"standard": 1, "extended": 2}  # the id checkpoint stats record


# 15-minute log-return std per asset (the calibration table: TRAINING_JOURNAL.md, H1) over sqrt(900 s): per sqrt(second)
DEFAULT_INDEX_VOL = {
    "BTC": 0.0022 / 30.0,
    "ETH": 0.0029 / 30.0,
    "SOL": 0.0033 / 30.0,
    "XRP": 0.0028 / 30.0,
}


def default_index_vol(asset: str) -> float:
    """Index volatility per sqrt(second) to assume while too few prices were seen to measure it."""
    return DEFAULT_INDEX_VOL.get(asset, 0.003 / 30.0)


class Action(IntEnum):
    """HOLD does nothing; BUY goes long UP (or closes a DOWN); SELL goes long DOWN (or closes an UP)."""

    HOLD = 0
    BUY = 1
    SELL = 2


@dataclass(slots=True)
class MarketState:
    """Raw (unscaled) inputs of one market at one tick; `to_features` scales and clamps them.

    Scales follow the published Phase 5 model so its checkpoint keeps meaning the same thing:
    returns x50, spread_pct x20 (spread over max(0.01, prob)), cvd_acceleration x10,
    trade_intensity /10, vol_5m x20, position_pnl /50 dollars; everything clamped to [-1, 1].
    """

    market_id: str = ""
    asset: str = ""
    prob: float = 0.5  # UP mid price
    best_bid: float = 0.0  # UP best bid
    best_ask: float = 0.0  # UP best ask
    # momentum: fractional returns of the futures price (0.001 = 0.1 %)
    returns_1m: float = 0.0
    returns_5m: float = 0.0
    returns_10m: float = 0.0
    # order flow: Polymarket UP book imbalances in [-1, 1]; futures taker-flow imbalance in [-1, 1]
    order_book_imbalance_l1: float = 0.0
    order_book_imbalance_l5: float = 0.0
    trade_flow_imbalance: float = 0.0
    cvd_acceleration: float = 0.0  # change of CVD momentum relative to recent traded volume, ~[-0.1, 0.1]
    # microstructure
    spread: float = 0.0  # UP ask - bid, in price units
    trade_intensity: float = 0.0  # futures trades per second over the last 10 s
    large_trade_flag: float = 0.0  # 1.0 when a trade above the rolling large-size threshold just printed
    # volatility
    vol_5m: float = 0.0  # std of the UP mid over its last 30 ticks
    vol_expansion: float = 0.0  # short realized vol over long realized vol, minus 1
    # position
    has_position: float = 0.0
    position_side: float = 0.0  # +1 long UP, -1 long DOWN, 0 flat
    position_pnl: float = 0.0  # unrealized PnL in dollars at the current mid
    time_remaining: float = 1.0  # fraction of the 15-minute window left
    # regime flags
    vol_regime: float = 0.0
    trend_regime: float = 0.0
    # context for rule strategies (not part of the 18 features)
    down_bid: float = 0.0
    down_ask: float = 0.0
    index_price: float = 0.0  # latest resolution-source (Chainlink) price
    price_to_beat: float = 0.0  # resolution-source price at the window open (0 while unknown)
    index_vol: float = 0.0  # realized volatility of the index per sqrt(second)
    seconds_left: float = 900.0
    fee_rate: float = 0.0
    fee_exponent: float = 1.0
    prob_history: tuple[float, ...] = ()  # recent UP mids, oldest first (bounded by the engine)

    def fee_per_share(self, price: float) -> float:
        """The market's taker fee per share at `price` (what a taker adds to an ask or takes off a bid)."""
        return fee_per_share(price, self.fee_rate, self.fee_exponent)

    @property
    def spread_pct(self) -> float:
        return self.spread / max(0.01, self.prob)

    def index_z(self) -> float | None:
        """Time-left-scaled log distance of the index from price_to_beat; None while either is unknown."""
        if self.index_price <= 0.0 or self.price_to_beat <= 0.0:
            return None
        vol = self.index_vol or default_index_vol(self.asset)
        spread = vol * math.sqrt(max(self.seconds_left, 0.5))  # half a tick left still has some spread
        return math.log(self.index_price / self.price_to_beat) / spread

    def fair_up(self) -> float:
        """Digital-option value of UP from the index (driftless log-normal); the UP mid while unknown."""
        z = self.index_z()
        return self.prob if z is None else 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    def to_extended_features(self) -> np.ndarray:
        """The 18 standard features followed by the 7 quote-vs-index features, scaled and clamped."""
        fair = self.fair_up()
        z = self.index_z() or 0.0
        fee = self.fee_per_share
        up_bid, up_ask, down_bid, down_ask = self.best_bid, self.best_ask, self.down_bid, self.down_ask
        extra = np.array(
            [
                (self.prob - 0.5) * 2.0,
                z / 3.0,
                (fair - 0.5) * 2.0,
                (fair - up_ask - fee(up_ask)) * 10.0 if 0.0 < up_ask < 1.0 else -1.0,
                (up_bid - fee(up_bid) - fair) * 10.0 if up_bid > 0.0 else -1.0,
                ((1.0 - fair) - down_ask - fee(down_ask)) * 10.0 if 0.0 < down_ask < 1.0 else -1.0,
                (down_bid - fee(down_bid) - (1.0 - fair)) * 10.0 if down_bid > 0.0 else -1.0,
            ],
        )
        np.nan_to_num(extra, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(extra, -1.0, 1.0, out=extra)  # in float64: a huge value cast to float32 first would overflow
        return np.concatenate([self.to_features(), extra.astype(np.float32)])

    def to_features(self) -> np.ndarray:
        """The 18 standard features, scaled and clamped to [-1, 1] (the factors live in `_MULTIPLY`/`_DIVIDE`)."""
        return features_matrix((self,))[0]


# The standard features as one row of raw fields (spread then prob last), and the factors each is
# multiplied and divided by (the one place the scales are written).
_RAW_FIELDS = operator.attrgetter(
    "returns_1m", "returns_5m", "returns_10m", "order_book_imbalance_l1", "order_book_imbalance_l5",
    "trade_flow_imbalance", "cvd_acceleration", "spread", "trade_intensity", "large_trade_flag", "vol_5m",
    "vol_expansion", "has_position", "position_side", "position_pnl", "time_remaining", "vol_regime",
    "trend_regime", "prob",
)  # fmt: skip
_MULTIPLY = np.array([50.0, 50.0, 50.0, 1, 1, 1, 10.0, 20.0, 1, 1, 20.0, 1, 1, 1, 1, 1, 1, 1])
_DIVIDE = np.array([1, 1, 1, 1, 1, 1, 1, 1, 10.0, 1, 1, 1, 1, 1, 50.0, 1, 1, 1], dtype=np.float64)


def features_matrix(states: Sequence[MarketState], feature_set: str = "standard") -> np.ndarray:
    """Stack the scaled features of several markets into a float32 (N, 18) array, (N, 25) if extended.

    The standard set is computed for all markets at once, equal bit for bit to stacking `to_features()`
    (a decision tick spent ~40 µs in the per-market version).
    """
    if not states:
        return np.zeros((0, len(FEATURE_SETS[feature_set])), dtype=np.float32)
    if feature_set == "extended":
        return np.stack([s.to_extended_features() for s in states])
    raw = np.array([_RAW_FIELDS(s) for s in states], dtype=np.float64)
    prob = raw[:, 18]
    raw[:, 7] /= np.where(prob > 0.01, prob, 0.01)  # spread_pct: spread / max(0.01, prob)
    out = raw[:, :18] * _MULTIPLY / _DIVIDE
    np.clip(out, -1.0, 1.0, out=out)  # before the float32 cast, which would overflow; infinities become +-1
    out[np.isnan(out)] = 0.0
    return out.astype(np.float32)


class Strategy:
    """A strategy decides for all active markets at once.

    The engine calls, every tick: `act_batch(states)`; then `record(market_id, reward)` for each market
    that acted (reward = PnL realized by that action, 0 if none); and `end_market(market_id, reward)`
    when a window resolves (reward = settlement PnL; the market's last step becomes terminal).
    A paper order fills `--latency-ms` after its tick: its `record` comes after that fill (or after it
    failed, with 0), and its market is left out of `act_batch` until then, so every decision gets
    exactly one `record`, before the market's next decision and before its `end_market`.
    Only learning strategies do anything with rewards; `pop_updates()` returns the metrics of the
    learning updates run since the last call.
    """

    name: str = "base"

    def __init__(self) -> None:
        self.training = False

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        raise NotImplementedError

    def record(self, market_id: str, reward: float) -> None:
        """Reward realized by the last action taken in this market."""

    def end_market(self, market_id: str, reward: float) -> None:
        """The market resolved; `reward` is the settlement PnL of a position still held (0 if flat)."""

    def pop_updates(self) -> list[dict]:
        return []

    def train(self) -> None:
        self.training = True

    def eval(self) -> None:
        self.training = False

    def save(self, path: str) -> None:
        """Persist learned state to `path` (no extension). Rule-based strategies have none."""

    def load(self, path: str) -> None:
        """Restore learned state from `path` (no extension)."""
