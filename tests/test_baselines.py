"""Rule strategies: each fires on the pattern it is named for, exits by its rule, and is seed-deterministic."""

from __future__ import annotations

import math

import pytest

from strategies import STRATEGY_NAMES, create_strategy
from strategies.base import DEFAULT_INDEX_VOL, Action, MarketState
from strategies.baselines import (
    FadeSpikeStrategy,
    FairValueStrategy,
    GatingStrategy,
    MeanRevertStrategy,
    MomentumStrategy,
    RandomStrategy,
    digital_up_probability,
)


def state(history=(), side: float = 0.0, **fields) -> MarketState:
    hist = tuple(history)
    prob = hist[-1] if hist else fields.pop("prob", 0.5)
    return MarketState(market_id=fields.pop("market_id", "m1"), asset="BTC", prob=prob, prob_history=hist,
                       position_side=side, has_position=abs(side), **fields)


def test_digital_probability_is_a_half_at_the_open_and_follows_the_normal_cdf():
    assert digital_up_probability(100.0, 100.0, 1e-4, 600.0) == pytest.approx(0.5)
    s = 100.0 * math.exp(1e-4 * math.sqrt(400.0))  # one standard deviation above the open
    assert digital_up_probability(s, 100.0, 1e-4, 400.0) == pytest.approx(0.841345, abs=1e-6)
    assert digital_up_probability(99.0, 100.0, 1e-4, 0.0) == 0.0
    assert digital_up_probability(100.0, 100.0, 1e-4, 0.0) == 1.0  # ties go to Up


def fair_state(index: float, **fields) -> MarketState:
    base = {"price_to_beat": 100.0, "index_vol": 1e-4, "seconds_left": 400.0, "fee_rate": 0.07,
            "best_bid": 0.49, "best_ask": 0.51, "down_bid": 0.49, "down_ask": 0.51}
    base.update(fields)
    return state(index_price=index, **base)


def test_fair_value_buys_up_when_the_ask_plus_fee_is_below_fair_value():
    high = 100.0 * math.exp(1e-4 * 20.0)  # fair UP value 0.84
    assert FairValueStrategy().decide(fair_state(high)) == Action.BUY
    # 0.801 is below fair value minus the margin (0.8113), but not once its fee (0.0112) is added
    assert FairValueStrategy().decide(fair_state(high, best_ask=0.801)) == Action.HOLD
    assert FairValueStrategy().decide(fair_state(high, best_ask=0.79)) == Action.BUY


def test_fair_value_buys_down_when_the_down_ask_is_cheap():
    low = 100.0 * math.exp(-1e-4 * 20.0)  # fair UP value 0.16, DOWN 0.84
    assert FairValueStrategy().decide(fair_state(low)) == Action.SELL


def test_fair_value_holds_without_index_or_open_price():
    assert FairValueStrategy().decide(fair_state(0.0)) == Action.HOLD
    assert FairValueStrategy().decide(fair_state(101.0, price_to_beat=0.0)) == Action.HOLD


def test_fair_value_closes_when_the_bid_pays_more_than_fair_value():
    at_open = fair_state(100.0, best_bid=0.60, best_ask=0.61)  # fair 0.5, bid 0.60 minus fee 0.0168
    assert FairValueStrategy().decide(state_with_side(at_open, 1.0)) == Action.SELL
    assert FairValueStrategy().decide(state_with_side(fair_state(100.0), 1.0)) == Action.HOLD
    down_rich = fair_state(100.0, down_bid=0.60, down_ask=0.61)
    assert FairValueStrategy().decide(state_with_side(down_rich, -1.0)) == Action.BUY


def state_with_side(s: MarketState, side: float) -> MarketState:
    s.position_side = side
    s.has_position = 1.0
    return s


def test_fair_value_falls_back_to_the_asset_default_volatility():
    strategy = FairValueStrategy()
    s = fair_state(100.1, index_vol=0.0)
    expected = digital_up_probability(100.1, 100.0, DEFAULT_INDEX_VOL["BTC"], 400.0)
    assert strategy.fair_up(s) == pytest.approx(expected)
    assert 0.5 < expected < 1.0


def test_random_is_reproducible_from_its_seed():
    states = [state(market_id=f"m{i}") for i in range(500)]
    a, b, c = RandomStrategy(seed=5), RandomStrategy(seed=5), RandomStrategy(seed=6)
    first = a.act_batch(states)
    assert first == b.act_batch(states)
    assert first != c.act_batch(states)
    assert Action.BUY in first and Action.SELL in first and first.count(Action.HOLD) > 400


def test_momentum_follows_a_confirmed_rise_and_exits_on_reversal():
    rising = [0.50 + 0.003 * i for i in range(12)]
    m = MomentumStrategy()
    assert m.decide(state(rising, returns_1m=0.001)) == Action.BUY
    assert m.decide(state(rising, returns_1m=-0.001)) == Action.HOLD  # futures disagree
    falling = [0.60 - 0.003 * i for i in range(12)]
    assert m.decide(state(falling, returns_1m=-0.001)) == Action.SELL
    assert m.decide(state(falling, side=1.0)) == Action.SELL  # long UP, move turned: close
    assert m.decide(state(rising, side=1.0)) == Action.HOLD


def test_mean_revert_fades_a_move_away_from_the_recent_mean_and_exits_near_it():
    calm = [0.50 + (0.01 if i % 2 else -0.01) for i in range(29)]
    mr = MeanRevertStrategy()
    assert mr.decide(state([*calm, 0.56])) == Action.SELL
    assert mr.decide(state([*calm, 0.44])) == Action.BUY
    assert mr.decide(state([*calm, 0.50], side=-1.0)) == Action.BUY  # back at the mean: close DOWN
    assert mr.decide(state([*calm, 0.56], side=-1.0)) == Action.HOLD


def test_fade_spike_fades_a_jump_and_exits_after_half_reverts():
    fade = FadeSpikeStrategy()
    spike = [0.50] * 6 + [0.56]
    assert fade.decide(state(spike)) == Action.SELL
    assert fade.decide(state([*spike, 0.55], side=-1.0)) == Action.HOLD
    assert fade.decide(state([*spike, 0.55, 0.52], side=-1.0)) == Action.BUY  # 0.04 of 0.06 reverted
    fade.end_market("m1", 0.0)
    assert fade._open == {}


def test_gating_routes_by_regime_and_keeps_the_opening_expert():
    gating = GatingStrategy()
    assert gating.regime_expert(state(trend_regime=1.0)) == "momentum"
    assert gating.regime_expert(state(vol_regime=1.0)) == "fade_spike"
    assert gating.regime_expert(state()) == "mean_revert"
    rising = [0.50 + 0.003 * i for i in range(12)]
    assert gating.decide(state(rising, returns_1m=0.001, trend_regime=1.0)) == Action.BUY
    # regime flips to calm while long: momentum still manages (and closes on its own rule)
    falling = [0.60 - 0.003 * i for i in range(12)]
    assert gating.decide(state(falling, side=1.0)) == Action.SELL
    gating.end_market("m1", 0.0)
    assert gating._owner == {}


def test_registry_builds_every_rule_strategy_and_refuses_unknown_names():
    for name in STRATEGY_NAMES:
        if name == "rl":
            continue
        strategy = create_strategy(name, seed=1)
        assert strategy.name == name
        assert strategy.act_batch([state([0.5] * 30)]) in ([Action.HOLD], [Action.BUY], [Action.SELL])
    with pytest.raises(ValueError, match="unknown strategy"):
        create_strategy("martingale")


def test_registry_builds_the_rl_agent_lazily():
    assert create_strategy("rl", seed=1).name == "rl"
