"""The fast decision path: vectorised features, the fused numpy network, and what a training step stores."""

from __future__ import annotations

import math
import warnings
from dataclasses import fields

import numpy as np
import pytest

from strategies.base import MarketState, features_matrix
from strategies.rl_mlx import PPOConfig, RLStrategy, config_for_features


def _odd_states(rng: np.random.Generator, n: int) -> list[MarketState]:
    """States with random float fields, some NaN, infinite, huge or tiny, and probs around the 0.01 floor."""
    specials = [math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0, 1e-40, 0.005, -0.2]
    names = [f.name for f in fields(MarketState) if f.type in ("float", float)]
    states = []
    for i in range(n):
        values = {name: float(rng.normal(0, 0.3)) for name in names}
        for name in rng.choice(names, size=4, replace=False):
            values[name] = specials[int(rng.integers(len(specials)))]
        states.append(MarketState(market_id=str(i), **values))
    return states


def test_features_matrix_equals_stacked_to_features_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        states = _odd_states(rng, int(rng.integers(1, 9)))
        expected = np.stack([s.to_features() for s in states])
        got = features_matrix(states)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "config",
    [
        PPOConfig(),
        config_for_features("extended"),
        PPOConfig(hidden_size=32, critic_hidden_size=48, temporal_hidden=16, temporal_dim=8, history_len=3),
    ],
    ids=["published", "extended", "other-widths"],
)
def test_decision_network_matches_the_mlx_networks_for_any_batch_size(config: PPOConfig) -> None:
    agent = RLStrategy(config, seed=1)
    rng = np.random.default_rng(2)
    for n in (1, 4, 7, 4, 64):  # repeated sizes reuse the cached tiled rows
        features = rng.uniform(-1, 1, (n, config.input_dim)).astype(np.float32)
        history = rng.uniform(-1, 1, (n, config.history_len, config.input_dim)).astype(np.float32)
        probs, values = agent.evaluate(features, history)
        fast_probs, fast_values = agent.evaluate_numpy(features, history)
        np.testing.assert_allclose(fast_probs, probs, atol=1e-5)
        np.testing.assert_allclose(fast_values, values, atol=1e-5)


def test_training_decisions_store_the_mlx_log_prob_and_value_of_the_sampled_action() -> None:
    agent = RLStrategy(seed=3)
    agent.train()
    rng = np.random.default_rng(4)
    counts = np.zeros(3)
    for tick in range(50):
        states = [
            MarketState(
                market_id=f"m{i}", returns_1m=float(rng.normal(0, 0.01)), time_remaining=1 - tick / 50
            )
            for i in range(4)
        ]
        actions = agent.act_batch(states)
        steps = [agent.buffer.pending[s.market_id] for s in states]
        probs, values = agent.evaluate(
            np.stack([s.features for s in steps]), np.stack([s.history for s in steps])
        )
        for i, (step, action) in enumerate(zip(steps, actions, strict=True)):
            assert step.action == int(action)
            assert step.log_prob == pytest.approx(math.log(probs[i, step.action]), abs=1e-5)
            assert step.value == pytest.approx(float(values[i]), abs=1e-5)
            counts[step.action] += 1
        for s in states:
            agent.record(s.market_id, 0.0)
    assert (counts > 0).all()  # a near-uniform fresh policy samples every action


def test_features_of_values_beyond_float32_clamp_without_overflow_warnings() -> None:
    state = MarketState(market_id="m", returns_1m=1e300, position_pnl=-1e300, spread=1e300, vol_expansion=math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in the float32 cast would raise here
        single = state.to_features()
        batch = features_matrix([state])
        extended = state.to_extended_features()
    np.testing.assert_array_equal(batch[0], single)
    assert single[0] == 1.0 and single[14] == -1.0 and single[7] == 1.0 and single[11] == 0.0
    assert extended.dtype == np.float32 and np.isfinite(extended).all()
