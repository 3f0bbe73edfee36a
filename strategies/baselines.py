"""Rule strategies: yardsticks for the RL agent, deterministic given a seed.

Each decides one market at a time from its `MarketState` (the prob history, the futures context and
the position fields); `act_batch` maps that over the batch. Per-market memory (fade_spike, gating) is
dropped at `end_market`, so it stays bounded by the number of active markets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from strategies.base import Action, MarketState, Strategy, default_index_vol

_EXTREME = 0.05  # do not open momentum-style trades when the prob is this close to 0 or 1


def _change(state: MarketState, lookback: int) -> float | None:
    """UP mid change over the last `lookback` ticks, or None while the history is too short."""
    hist = state.prob_history
    if len(hist) <= lookback:
        return None
    return hist[-1] - hist[-1 - lookback]


class _PerMarketStrategy(Strategy):
    def decide(self, state: MarketState) -> Action:
        raise NotImplementedError

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        return [self.decide(s) for s in states]


class RandomStrategy(_PerMarketStrategy):
    """Seeded coin flips: opens or closes with a small probability each tick."""

    name = "random"

    def __init__(self, seed: int | None = None, trade_prob: float = 0.02) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self.trade_prob = trade_prob

    def decide(self, state: MarketState) -> Action:
        u = self._rng.random()
        if u < self.trade_prob:
            return Action.BUY
        if u < 2 * self.trade_prob:
            return Action.SELL
        return Action.HOLD


class MomentumStrategy(_PerMarketStrategy):
    """Follow a prob move confirmed by the futures' 1-minute return; exit when the move turns."""

    name = "momentum"

    def __init__(self, seed: int | None = None, lookback: int = 10, threshold: float = 0.02) -> None:
        super().__init__()
        self.lookback = lookback
        self.threshold = threshold

    def decide(self, state: MarketState) -> Action:
        move = _change(state, self.lookback)
        if move is None:
            return Action.HOLD
        if state.position_side > 0:
            return Action.SELL if move <= -self.threshold / 2 else Action.HOLD
        if state.position_side < 0:
            return Action.BUY if move >= self.threshold / 2 else Action.HOLD
        if not _EXTREME < state.prob < 1.0 - _EXTREME:
            return Action.HOLD
        if move >= self.threshold and state.returns_1m >= 0.0:
            return Action.BUY
        if move <= -self.threshold and state.returns_1m <= 0.0:
            return Action.SELL
        return Action.HOLD


class MeanRevertStrategy(_PerMarketStrategy):
    """Fade the prob when it strays `z_enter` standard deviations from its recent mean; exit near the mean."""

    name = "mean_revert"

    def __init__(
        self, seed: int | None = None, z_enter: float = 2.0, z_exit: float = 0.5, min_std: float = 0.005
    ) -> None:
        super().__init__()
        self.z_enter = z_enter
        self.z_exit = z_exit
        self.min_std = min_std

    def decide(self, state: MarketState) -> Action:
        hist = state.prob_history
        if len(hist) < 10:
            return Action.HOLD
        mean = sum(hist) / len(hist)
        std = math.sqrt(sum((p - mean) ** 2 for p in hist) / len(hist))
        if std < self.min_std:
            return Action.HOLD
        z = (state.prob - mean) / std
        if state.position_side > 0:
            return Action.SELL if z > -self.z_exit else Action.HOLD
        if state.position_side < 0:
            return Action.BUY if z < self.z_exit else Action.HOLD
        if not _EXTREME < state.prob < 1.0 - _EXTREME:
            return Action.HOLD
        if z >= self.z_enter:
            return Action.SELL
        if z <= -self.z_enter:
            return Action.BUY
        return Action.HOLD


@dataclass(slots=True)
class _Spike:
    entry_prob: float
    size: float  # signed prob jump that was faded
    ticks: int = 0


class FadeSpikeStrategy(_PerMarketStrategy):
    """Fade a sharp prob jump; exit once half of it has reverted or after `max_hold` ticks."""

    name = "fade_spike"

    def __init__(
        self, seed: int | None = None, lookback: int = 4, spike: float = 0.04, max_hold: int = 20
    ) -> None:
        super().__init__()
        self.lookback = lookback
        self.spike = spike
        self.max_hold = max_hold
        self._open: dict[str, _Spike] = {}

    def decide(self, state: MarketState) -> Action:
        held = self._open.get(state.market_id)
        if state.position_side == 0.0:
            if held is not None:
                del self._open[state.market_id]  # the entry did not fill, or the position is gone
            return self._enter(state)
        if held is None:  # a position this strategy did not open (e.g. under gating): treat as fresh
            held = self._open[state.market_id] = _Spike(state.prob, -state.position_side * self.spike)
        held.ticks += 1
        reverted = (held.entry_prob - state.prob) / held.size if held.size else 0.0
        if reverted >= 0.5 or held.ticks >= self.max_hold:
            return Action.SELL if state.position_side > 0 else Action.BUY
        return Action.HOLD

    def _enter(self, state: MarketState) -> Action:
        jump = _change(state, self.lookback)
        if jump is None or not _EXTREME < state.prob < 1.0 - _EXTREME or abs(jump) < self.spike:
            return Action.HOLD
        self._open[state.market_id] = _Spike(state.prob, jump)
        return Action.SELL if jump > 0 else Action.BUY

    def end_market(self, market_id: str, reward: float) -> None:
        self._open.pop(market_id, None)


class GatingStrategy(_PerMarketStrategy):
    """Pick an expert by regime: trending -> momentum, high volatility -> fade_spike, else mean_revert.

    The expert that opened a position keeps managing it until it is closed.
    """

    name = "gating"

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.experts: dict[str, _PerMarketStrategy] = {
            "momentum": MomentumStrategy(seed),
            "mean_revert": MeanRevertStrategy(seed),
            "fade_spike": FadeSpikeStrategy(seed),
        }
        self._owner: dict[str, str] = {}

    def regime_expert(self, state: MarketState) -> str:
        if state.trend_regime > 0.0:
            return "momentum"
        if state.vol_regime > 0.0:
            return "fade_spike"
        return "mean_revert"

    def decide(self, state: MarketState) -> Action:
        owner = self._owner.get(state.market_id) if state.position_side != 0.0 else None
        name = owner or self.regime_expert(state)
        action = self.experts[name].decide(state)
        if state.position_side == 0.0:
            if action != Action.HOLD:
                self._owner[state.market_id] = name
            else:
                self._owner.pop(state.market_id, None)
        return action

    def end_market(self, market_id: str, reward: float) -> None:
        self._owner.pop(market_id, None)
        for expert in self.experts.values():
            expert.end_market(market_id, reward)


def digital_up_probability(index: float, open_price: float, vol_per_sqrt_s: float, seconds_left: float) -> float:
    """P(index at window end >= open) for a driftless log-normal index: Φ(ln(S/K) / (σ √τ))."""
    if seconds_left <= 0.0 or vol_per_sqrt_s <= 0.0:
        return 1.0 if index >= open_price else 0.0
    d = math.log(index / open_price) / (vol_per_sqrt_s * math.sqrt(seconds_left))
    return 0.5 * (1.0 + math.erf(d / math.sqrt(2.0)))


class FairValueStrategy(_PerMarketStrategy):
    """Trade the Polymarket price against the window's digital-option value from the index.

    BUY when the UP ask plus its taker fee is below fair value by `margin`, SELL (buy DOWN) likewise;
    close when the bid, net of fee, pays more than the position's fair value.
    """

    name = "fair_value"

    def __init__(self, seed: int | None = None, margin: float = 0.03) -> None:
        super().__init__()
        self.margin = margin

    def fair_up(self, state: MarketState) -> float | None:
        if state.index_price <= 0.0 or state.price_to_beat <= 0.0:
            return None
        vol = state.index_vol or default_index_vol(state.asset)
        return digital_up_probability(state.index_price, state.price_to_beat, vol, state.seconds_left)

    def decide(self, state: MarketState) -> Action:
        p = self.fair_up(state)
        if p is None:
            return Action.HOLD
        fee = state.fee_per_share
        if state.position_side > 0:
            bid = state.best_bid
            return Action.SELL if bid > 0.0 and bid - fee(bid) > p else Action.HOLD
        if state.position_side < 0:
            bid = state.down_bid
            return Action.BUY if bid > 0.0 and bid - fee(bid) > 1.0 - p else Action.HOLD
        up_ask, down_ask = state.best_ask, state.down_ask
        if 0.0 < up_ask < 1.0 and up_ask + fee(up_ask) < p - self.margin:
            return Action.BUY
        if 0.0 < down_ask < 1.0 and down_ask + fee(down_ask) < (1.0 - p) - self.margin:
            return Action.SELL
        return Action.HOLD
