"""A seeded training run gives the weights it gave when these numbers were recorded.

The numbers were recorded from `strategies/rl_mlx.py` before the agent was split into `strategies/rl/`:
a refactoring that changes the order of minibatches, the random draws, the loss or the optimizer moves
them by far more than the tolerance, which only absorbs rounding that differs between CPUs and BLAS
builds. (On the recording machine the weights were bitwise equal before and after the split.)
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_agent import tick_states
from strategies.rl import PPOConfig, RLStrategy
from tests.test_rl_numpy_update import _batch

WINDOW_TICKS = 24  # decisions per market before it resolves
# recorded on the code before the split (see the module docstring)
RECORDED_RUN = [0.36182786953656, 0.5067340003036807, -0.8718073570469784]
RECORDED_REWARDS = (42, -1.3023193244102582, 6.261126756482333)
RECORDED_RUN_METRICS = [-0.0009863144611396517, 2.5582720832129553, 1.0969187561422586, 7.950079937775929e-05]
RECORDED_BATCH = {
    "numpy": [-2.236640143308426, 1.3151865214050114, -0.5041207888485204],
    "mlx": [-2.2366115594878955, 1.315190217086419, -0.5041174840862653],
}


def _fingerprint(agent: RLStrategy, start: dict[str, np.ndarray]) -> np.ndarray:
    """Three fixed random projections of how far all 36 tensors moved from their initial values."""
    moved = np.concatenate([(agent.weights()[k] - start[k]).ravel() for k in sorted(start)]).astype(
        np.float64
    )
    return moved @ np.random.default_rng(0).standard_normal((moved.size, 3))


def _drive(agent: RLStrategy, updates: int) -> None:
    """Seeded market states and rewards through the Strategy contract until `updates` PPO updates ran."""
    rng = np.random.default_rng(7)
    tick = 0
    while agent.updates_done < updates:
        states = tick_states(rng, tick, WINDOW_TICKS)
        for state, action in zip(states, agent.act_batch(states), strict=True):
            agent.record(state.market_id, float(rng.normal(0, 5)) if action and rng.random() < 0.3 else 0.0)
        if tick % WINDOW_TICKS == WINDOW_TICKS - 1:
            for state in states:
                agent.end_market(state.market_id, float(rng.normal(0, 10)))
        tick += 1


def test_seeded_run_through_the_strategy_contract_repeats_the_recorded_weights_and_statistics() -> None:
    agent = RLStrategy(PPOConfig(buffer_size=64, n_epochs=3), seed=11)
    agent.train()
    start = agent.weights()
    _drive(agent, updates=3)
    metrics = agent.pop_updates()
    assert len(metrics) == 3
    np.testing.assert_allclose(_fingerprint(agent, start), RECORDED_RUN, rtol=1e-4)
    assert (agent.reward_count, agent.reward_mean, agent.reward_std) == pytest.approx(
        RECORDED_REWARDS, rel=1e-9
    )
    last = metrics[-1]
    got = [last[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl")]
    np.testing.assert_allclose(got, RECORDED_RUN_METRICS, rtol=1e-3)  # approx_kl ~1e-4: rounding shows more


@pytest.mark.parametrize("backend", ["numpy", "mlx"])
def test_seeded_updates_on_a_fixed_batch_repeat_the_recorded_weights(backend: str) -> None:
    agent = RLStrategy(PPOConfig(n_epochs=2, target_kl=float("inf"), update_backend=backend), seed=5)
    start = agent.weights()
    for i in range(2):  # the second update starts from the Adam moments of the first
        agent.train_on_batch(_batch(256, seed=20 + i))
    np.testing.assert_allclose(_fingerprint(agent, start), RECORDED_BATCH[backend], rtol=1e-4)
