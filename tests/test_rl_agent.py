"""The PPO agent: GAE, the per-market buffer, the update, decisions, and learning through the Strategy contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from strategies.base import Action, MarketState
from strategies.rl import MAX_TRACKED_MARKETS, PPOConfig, RLStrategy, RolloutBuffer, Step, gae

METRIC_KEYS = {
    "update_num",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "buffer_avg_reward",
    "buffer_win_rate",
}


def _step(tag: float, value: float) -> Step:
    """A step whose first feature is `tag`, so it can be found again in a batch."""
    features = np.zeros(18, dtype=np.float32)
    features[0] = tag
    return Step(features, np.zeros((5, 18), dtype=np.float32), action=1, log_prob=-1.0, value=value)


def test_gae_matches_hand_computed_values_for_running_and_terminal_segments() -> None:
    rewards, values = np.array([1.0, 0.0, 2.0]), np.array([0.5, 1.0, 0.0])
    # gamma = lambda = 0.5; running segment bootstraps from V(next) = 4
    adv, ret = gae(rewards, values, done_last=False, next_value=4.0, gamma=0.5, lam=0.5)
    np.testing.assert_allclose(adv, [1.0, 0.0, 4.0])
    np.testing.assert_allclose(ret, [1.5, 1.0, 4.0])
    # terminal segment ignores next_value
    adv, _ = gae(rewards, values, done_last=True, next_value=4.0, gamma=0.5, lam=0.5)
    np.testing.assert_allclose(adv, [0.875, -0.5, 2.0])


def test_buffer_keeps_interleaved_markets_apart_and_bootstraps_terminal_steps_with_zero() -> None:
    buf = RolloutBuffer()
    buf.start("A", _step(1, value=1.0))
    buf.start("B", _step(11, value=2.0))
    buf.complete("A", 0.0)
    buf.complete("B", 0.0)
    buf.start("A", _step(2, value=0.5))
    buf.start("B", _step(12, value=3.0))
    buf.complete("A", 1.0)
    buf.complete("B", 0.0)
    buf.end("A", 2.0)  # settlement adds to A's last step and makes it terminal
    buf.start("B", _step(13, value=4.0))
    buf.complete("B", 0.0)
    assert buf.ready == 4  # a1, a2 (done), b1, b2; b3 waits for its successor

    batch = buf.take(gamma=0.5, lam=0.5, reward_scale=1.0)
    by_tag = {int(f[0]): (a, r, rew) for f, a, r, rew in zip(batch.features, batch.advantages, batch.returns, batch.rewards, strict=True)}
    assert sorted(by_tag) == [1, 2, 11, 12]
    # A: a2 = 3 - 0.5 = 2.5; a1 = (0 + 0.5*0.5 - 1) + 0.25*2.5 = -0.125
    assert by_tag[2][0] == pytest.approx(2.5)
    assert by_tag[2][2] == pytest.approx(3.0)
    assert by_tag[1][0] == pytest.approx(-0.125)
    # B bootstraps from its own next value (b3 = 4), never from A's: b2 = 2 - 3 = -1; b1 = (1.5 - 2) + 0.25*-1
    assert by_tag[12][0] == pytest.approx(-1.0)
    assert by_tag[11][0] == pytest.approx(-0.75)
    assert by_tag[11][1] == pytest.approx(-0.75 + 2.0)

    assert buf.ready == 0 and [int(s.features[0]) for s in buf.open["B"]] == [13]
    buf.start("B", _step(14, value=0.0))
    buf.complete("B", 0.0)
    assert buf.ready == 1  # the carried-over step became ready once its successor arrived


def test_reward_scale_multiplies_rewards_and_keeps_hold_rewards_zero() -> None:
    buf = RolloutBuffer()
    buf.start("A", _step(1, value=0.0))
    buf.complete("A", 0.0)
    buf.start("A", _step(2, value=0.0))
    buf.complete("A", 0.0)
    buf.end("A", 4.0)
    batch = buf.take(gamma=1.0, lam=1.0, reward_scale=0.5)
    # the HOLD step gets only the discounted scaled settlement (2.0), no constant offset from a mean
    np.testing.assert_allclose(sorted(batch.advantages), [2.0, 2.0])


def test_reward_statistics_count_only_realized_rewards() -> None:
    agent = RLStrategy(seed=0)
    agent.train()
    realized = [2.0, -2.0, 4.0]
    rewards = [0.0, 2.0, 0.0, -2.0, 4.0]
    for reward in rewards:
        agent.act_batch([MarketState(market_id="m")])
        agent.record("m", reward)
    assert agent.reward_count == 3
    assert agent.reward_mean == pytest.approx(np.mean(realized))
    assert agent.reward_std == pytest.approx(np.std(realized))


def _paying_game_batch(agent: RLStrategy, ticks: int, markets: int = 4, window: int = 8) -> None:
    """A synthetic game: BUY pays +1 when returns_1m > 0, SELL pays +1 when < 0, the wrong side -1, HOLD 0."""
    rng = np.random.default_rng(1)
    for tick in range(ticks):
        states = [
            MarketState(market_id=f"w{tick // window}-{m}", returns_1m=float(rng.choice([-0.01, 0.01])))
            for m in range(markets)
        ]
        actions = agent.act_batch(states)
        for state, action in zip(states, actions, strict=True):
            sign = 1.0 if state.returns_1m > 0 else -1.0
            reward = {Action.HOLD: 0.0, Action.BUY: sign, Action.SELL: -sign}[action]
            agent.record(state.market_id, reward)
        if tick % window == window - 1:
            for state in states:
                agent.end_market(state.market_id, 0.0)


def test_one_update_on_a_fixed_batch_lowers_the_clipped_loss() -> None:
    config = PPOConfig(buffer_size=10_000, batch_size=64, n_epochs=4)
    agent = RLStrategy(config, seed=3)
    agent.train()
    _paying_game_batch(agent, ticks=64)
    batch = agent.buffer.take(config.gamma, config.gae_lambda, 1.0 / (agent.reward_std + 1e-8))
    before = agent.batch_loss(batch)
    assert before["approx_kl"] == pytest.approx(0.0, abs=1e-5)  # log-probs stored at decision time match
    agent.train_on_batch(batch)
    after = agent.batch_loss(batch)
    assert after["policy_loss"] < before["policy_loss"] - 1e-3
    assert after["loss"] < before["loss"]


def test_agent_learns_the_paying_action_through_the_strategy_contract() -> None:
    config = PPOConfig(buffer_size=128, batch_size=32, actor_lr=1e-3, critic_lr=1e-3)
    agent = RLStrategy(config, seed=5)
    agent.train()
    _paying_game_batch(agent, ticks=800)
    updates = agent.pop_updates()
    assert len(updates) >= 20
    assert set(updates[0]) == METRIC_KEYS
    assert [u["update_num"] for u in updates] == list(range(1, len(updates) + 1))
    assert updates[-1]["buffer_avg_reward"] > updates[0]["buffer_avg_reward"]
    agent.eval()
    up = agent.act_batch([MarketState(market_id=f"u{i}", returns_1m=0.01) for i in range(3)])
    down = agent.act_batch([MarketState(market_id=f"d{i}", returns_1m=-0.01) for i in range(3)])
    assert up == [Action.BUY] * 3
    assert down == [Action.SELL] * 3


def test_update_runs_when_buffer_holds_buffer_size_ready_transitions() -> None:
    agent = RLStrategy(PPOConfig(buffer_size=8, batch_size=4, n_epochs=1), seed=0)
    agent.train()
    for _ in range(8):  # the 8th completed step makes the 7th ready: 7 ready
        agent.act_batch([MarketState(market_id="m")])
        agent.record("m", 0.0)
    assert agent.pop_updates() == []
    agent.end_market("m", 1.0)  # the terminal step makes 8
    assert [u["update_num"] for u in agent.pop_updates()] == [1]
    assert agent.buffer.ready == 0


def test_history_is_kept_per_market_padded_with_zeros_and_dropped_at_end_market() -> None:
    agent = RLStrategy(seed=0)
    agent.train()
    a1, a2, b1 = (MarketState(market_id=m, returns_1m=r) for m, r in (("A", 0.001), ("A", 0.002), ("B", -0.003)))
    agent.act_batch([a1, b1])
    agent.record("A", 0.0)
    agent.record("B", 0.0)
    agent.act_batch([a2])  # B is not in this tick's batch: it has no step this tick
    history_a = agent.buffer.pending["A"].history
    np.testing.assert_array_equal(history_a[:3], 0.0)
    np.testing.assert_array_equal(history_a[3], a1.to_features())
    np.testing.assert_array_equal(history_a[4], a2.to_features())
    assert "B" not in agent.buffer.pending
    agent.end_market("A", 0.0)
    agent.act_batch([a1])
    np.testing.assert_array_equal(agent.buffer.pending["A"].history[:4], 0.0)


def test_eval_mode_acts_greedily_and_stores_no_steps() -> None:
    agent = RLStrategy(seed=2)
    agent.eval()
    states = [MarketState(market_id=str(i), returns_1m=0.002 * (i - 2), time_remaining=0.3) for i in range(4)]
    features = np.stack([s.to_features() for s in states])
    history = np.zeros((4, 5, 18), dtype=np.float32)
    history[:, -1] = features
    probs, _ = agent.evaluate(features, history)
    assert agent.act_batch(states) == [Action(int(a)) for a in probs.argmax(axis=1)]
    assert not agent.buffer.pending and agent.buffer.ready == 0


def test_same_seed_gives_same_weights_and_same_sampled_actions() -> None:
    def run(seed: int) -> tuple[list[Action], np.ndarray]:
        agent = RLStrategy(seed=seed)
        agent.train()
        actions = []
        for t in range(20):
            actions += agent.act_batch([MarketState(market_id=str(i), returns_1m=0.001 * t) for i in range(4)])
        return actions, agent.weights()["actor.fc1.weight"]

    first, second, other = run(7), run(7), run(8)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert first[0] != other[0]


def test_numpy_decisions_match_the_mlx_networks_of_the_phase5_model(phase5_model: Path) -> None:
    agent = RLStrategy.from_checkpoint(phase5_model)
    rng = np.random.default_rng(0)
    features = rng.uniform(-1, 1, (64, 18)).astype(np.float32)
    history = rng.uniform(-1, 1, (64, 5, 18)).astype(np.float32)
    probs, values = agent.evaluate(features, history)
    fast_probs, fast_values = agent.evaluate_numpy(features, history)
    np.testing.assert_allclose(fast_probs, probs, atol=1e-5)
    np.testing.assert_allclose(fast_values, values, atol=1e-5)


def test_markets_that_never_end_are_forgotten_without_losing_their_ready_steps() -> None:
    agent = RLStrategy(PPOConfig(buffer_size=10_000), seed=0)
    agent.train()
    for _ in range(2):
        agent.act_batch([MarketState(market_id="stale")])
        agent.record("stale", 0.0)
    assert agent.buffer.ready == 1
    for i in range(MAX_TRACKED_MARKETS):  # new markets push the stale one out
        agent.act_batch([MarketState(market_id=f"m{i}")])
        agent.record(f"m{i}", 0.0)
    assert len(agent.tracked_markets) == MAX_TRACKED_MARKETS and "stale" not in agent.tracked_markets
    assert "stale" not in agent.buffer.open
    batch = agent.buffer.take(0.9, 0.9, 1.0)
    assert len(batch.actions) == 1  # the stale market's first step, bootstrapped from its second
    assert agent.buffer.open.keys() == {f"m{i}" for i in range(MAX_TRACKED_MARKETS)}


def test_former_module_rl_mlx_still_gives_the_agent_and_what_tests_and_benchmarks_imported() -> None:
    import strategies.rl_mlx as former
    from strategies.rl.blas import one_blas_thread, openblas_threads
    from strategies.rl.numpy_update import NumpyPPO

    assert (former.RLStrategy, former.PPOConfig, former.RolloutBuffer, former.gae) == (
        RLStrategy,
        PPOConfig,
        RolloutBuffer,
        gae,
    )
    assert (former._NumpyPPO, former._one_blas_thread, former._openblas_threads) == (
        NumpyPPO,
        one_blas_thread,
        openblas_threads,
    )
    assert former.config_for_features("extended").input_dim == 25
