"""Decision interval (`PPOConfig.decision_every`): the agent decides every k ticks per market and holds between."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from benchmarks.learning import seed_summary
from strategies.base import Action, MarketState
from strategies.rl_mlx import MAX_TRACKED_MARKETS, PPOConfig, RLStrategy, gae


def _buying_agent(every: int, training: bool = True) -> RLStrategy:
    """An agent whose policy is almost surely BUY, so any HOLD it returns comes from the interval."""
    agent = RLStrategy(PPOConfig(decision_every=every, buffer_size=10_000), seed=0)
    agent.actor.fc3.bias = mx.array([0.0, 20.0, 0.0])
    mx.eval(agent.actor.parameters())
    agent._refresh_numpy()
    agent.train() if training else agent.eval()
    return agent


def test_agent_decides_on_every_kth_tick_of_each_market_and_holds_between() -> None:
    agent = _buying_agent(3)
    seen: dict[str, list[Action]] = {"A": [], "B": []}
    steps: dict[str, int] = {"A": 0, "B": 0}
    for tick in range(8):
        markets = ["A"] if tick == 0 else ["A", "B"]  # B appears one tick later: its own phase
        actions = agent.act_batch([MarketState(market_id=m) for m in markets])
        for market, action in zip(markets, actions, strict=True):
            seen[market].append(action)
            steps[market] += market in agent.buffer.pending
            agent.record(market, 0.0)
    buy, hold = Action.BUY, Action.HOLD
    assert seen["A"] == [buy, hold, hold, buy, hold, hold, buy, hold]
    assert seen["B"] == [buy, hold, hold, buy, hold, hold, buy]
    assert steps == {"A": 3, "B": 3}  # only decisions become transitions


def test_greedy_agent_keeps_its_interval() -> None:
    agent = _buying_agent(2, training=False)
    actions = [agent.act_batch([MarketState(market_id="m")])[0] for _ in range(5)]
    assert actions == [Action.BUY, Action.HOLD, Action.BUY, Action.HOLD, Action.BUY]


def test_one_transition_per_decision_with_settlement_on_the_last_decision_and_gae_over_decisions() -> None:
    config = PPOConfig(decision_every=4, buffer_size=10_000)
    agent = RLStrategy(config, seed=1)
    agent.train()
    values = []
    for tick in range(10):  # decisions on ticks 0, 4 and 8
        agent.act_batch([MarketState(market_id="m", returns_1m=0.001 * tick)])
        if "m" in agent.buffer.pending:
            values.append(agent.buffer.pending["m"].value)
        agent.record("m", 3.0 if tick == 4 else 0.0)  # the tick-4 decision closed a position
    assert agent.buffer.ready == 2  # the third decision waits for a successor or the end
    agent.end_market("m", -2.0)
    assert agent.buffer.ready == 3
    scale = 1.0 / (agent.reward_std + 1e-8)
    batch = agent.buffer.take(config.gamma, config.gae_lambda, scale)
    np.testing.assert_allclose(batch.rewards, [0.0, 3.0, -2.0])
    expected, _ = gae(np.array([0.0, 3.0, -2.0]) * scale, np.array(values), True, 0.0, config.gamma, config.gae_lambda)
    np.testing.assert_allclose(batch.advantages, expected, rtol=1e-5)
    assert agent.reward_count == 2


def test_pnl_realized_on_a_held_tick_is_credited_to_the_last_decision() -> None:
    agent = RLStrategy(PPOConfig(decision_every=3, buffer_size=10_000), seed=2)
    agent.train()
    rewards = [0.0, 5.0, 0.0, 1.0]  # tick 1 is held yet realizes 5 (say, a close the engine forced)
    for reward in rewards:
        agent.act_batch([MarketState(market_id="m")])
        agent.record("m", reward)
    agent.end_market("m", 0.0)
    batch = agent.buffer.take(0.95, 0.95, 1.0)
    np.testing.assert_allclose(batch.rewards, [5.0, 1.0])
    assert agent.reward_count == 2


def test_interval_phase_restarts_with_each_market_and_stays_bounded() -> None:
    agent = _buying_agent(3)
    agent.act_batch([MarketState(market_id="m")])
    agent.record("m", 0.0)
    agent.end_market("m", 0.0)
    assert agent.act_batch([MarketState(market_id="m")]) == [Action.BUY]  # a new window decides at once
    for i in range(MAX_TRACKED_MARKETS + 10):  # markets that are never ended
        agent.act_batch([MarketState(market_id=f"x{i}")])
    assert len(agent._phase) <= MAX_TRACKED_MARKETS


def test_a_decision_interval_below_one_tick_is_refused() -> None:
    with pytest.raises(ValueError, match="decision_every"):
        RLStrategy(PPOConfig(decision_every=0))


def test_seed_summary_reports_mean_spread_and_each_seed() -> None:
    runs = [{"pnl_book": 100.0, "ratio_book": 0.2}, {"pnl_book": 300.0, "ratio_book": 0.6}]
    text = seed_summary(runs, "book")
    assert "over 2 agent seeds" in text
    assert "RL / fair_value: mean 0.40, sd 0.28, range 0.20 .. 0.60 (per seed: 0.20, 0.60)" in text
    assert "net PnL $: mean 200, sd 141" in text
