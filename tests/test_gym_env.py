"""engine.gym_env.UpDownEnv: gymnasium's own checks, seeding, vector envs, and the engine's fills and rewards."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from engine.gym_env import ENV_ID, UpDownEnv
from sim.source import SimSource
from strategies.base import NUM_FEATURES, Action, MarketState, Strategy, features_matrix
from streamers.market_data import MarketData
from streamers.recording import Recorder

HISTORY = 5


def scripted(features: np.ndarray) -> int:
    """A deterministic rule on the scaled features: open on a lopsided UP book, close when it flips."""
    imbalance, has_position, side = features[3], features[12], features[13]
    if not has_position:
        return Action.BUY if imbalance > 0.3 else Action.SELL if imbalance < -0.3 else Action.HOLD
    if side > 0 and imbalance < -0.3:
        return Action.SELL
    if side < 0 and imbalance > 0.3:
        return Action.BUY
    return Action.HOLD


class ScriptedStrategy(Strategy):
    """The same rule as an engine strategy, keeping the feature rows it decided on."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[np.ndarray] = []

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        features = features_matrix(states)
        self.rows += list(features)
        return [Action(scripted(f)) for f in features]


def engine_first_window(seed: int, log_dir: Path) -> tuple[ScriptedStrategy, dict]:
    """The scripted rule traded by the engine itself on the simulator's first BTC window; its episode row."""
    strategy = ScriptedStrategy()
    cfg = EngineConfig(size=100.0, max_windows=1, assets=("BTC",), log_dir=log_dir, run_id="engine", seed=seed)

    async def run() -> dict:
        source = SimSource(seed, assets=("BTC",))
        try:
            return await Engine(strategy, source, VirtualClock(), MarketData(assets=("BTC",)), cfg).run()
        finally:
            await source.close()

    report = asyncio.run(run())
    with open(report["logs"]["episodes"], newline="") as fh:
        first = next(csv.DictReader(fh))
    return strategy, first


def test_env_passes_gymnasium_check_env() -> None:
    env = UpDownEnv(asset="BTC")
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_episode_is_the_engines_own_window_same_fills_fees_reward_and_features(tmp_path: Path) -> None:
    seed = 1001
    strategy, episode = engine_first_window(seed, tmp_path)
    env = UpDownEnv(asset="BTC")
    try:
        obs, info = env.reset(seed=seed)
        assert info["market_id"] == episode["market_id"]
        observations, total, done, steps = [obs], 0.0, False, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(scripted(obs[:NUM_FEATURES]))
            total += reward
            steps += 1
            done = terminated or truncated
            if not done:
                observations.append(obs)
    finally:
        env.close()
    assert terminated and not truncated
    assert float(episode["trades"]) > 2  # the rule traded: fills, fees and closes are being compared
    assert total == pytest.approx(float(episode["pnl"]), abs=1e-6)
    assert info["episode_pnl"] == pytest.approx(total)
    # every observation: the features the engine built, then the last five rows oldest first, zero-padded
    rows = np.array(strategy.rows[: len(observations)])
    assert len(strategy.rows) >= len(observations) == steps
    got = np.array(observations)
    np.testing.assert_array_equal(got[:, :NUM_FEATURES], rows)
    history = got[:, NUM_FEATURES:].reshape(len(got), HISTORY, NUM_FEATURES)
    padded = np.concatenate([np.zeros((HISTORY - 1, NUM_FEATURES), np.float32), rows])
    for t in (0, 1, 4, 5, len(rows) - 1):
        np.testing.assert_array_equal(history[t], padded[t : t + HISTORY])


def test_reset_seed_is_the_simulator_seed_and_replays_the_same_episode() -> None:
    env = UpDownEnv(asset="BTC")
    try:
        runs = []
        for _ in range(2):
            obs, info = env.reset(seed=7)
            trace = [obs]
            for a in [1, 0, 0, 0, 2, 0, 0, 1] * 5:
                obs, reward, *_ = env.step(a)
                trace += [obs, np.float32(reward)]
            runs.append((info["market_id"], trace))
        assert runs[0][0] == runs[1][0]
        for a, b in zip(runs[0][1], runs[1][1], strict=True):
            np.testing.assert_array_equal(a, b)
        _, other = env.reset(seed=8)
        assert other["sim_seed"] == 8 and other["market_id"] != runs[0][0]
    finally:
        env.close()


def test_reset_mid_episode_moves_on_to_the_next_window_of_the_same_run() -> None:
    env = UpDownEnv(asset="BTC", latency_ms=0.0)
    try:
        _, first = env.reset(seed=3)
        for _ in range(10):
            env.step(0)
        _, second = env.reset()
        assert second["sim_seed"] == 3 and second["market_id"] != first["market_id"]
        assert second["seconds_left"] > 890  # the next window from (nearly) its start
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env_steps_independent_simulators(mode: str) -> None:
    envs = gym.make_vec(f"engine.gym_env:{ENV_ID}", num_envs=2, vectorization_mode=mode, asset="BTC")
    try:
        obs, infos = envs.reset(seed=11)
        assert obs.shape == (2, envs.single_observation_space.shape[0]) and obs.dtype == np.float32
        assert list(infos["sim_seed"]) == [11, 12]
        assert infos["market_id"][0] != infos["market_id"][1]
        for _ in range(20):
            obs, rewards, terminated, truncated, _ = envs.step(np.array([1, 2]))
        assert rewards.shape == (2,) and not terminated.any() and not truncated.any()
        assert not np.array_equal(obs[0], obs[1])
    finally:
        envs.close()


def test_recording_plays_its_complete_window_and_never_half_trades_the_cut_one(tmp_path: Path) -> None:
    path = str(tmp_path / "rec.jsonl")
    source = SimSource(5, assets=("BTC",), background=False)
    recorder = Recorder(path)
    stop = source.start_time + 900 + 120  # the first window, its settlement, two minutes of the next
    for frame in source.iter_frames():
        if frame.t > stop:
            break
        recorder.write(frame)
    recorder.close()
    env = UpDownEnv(asset="BTC", source="replay", recording=path)
    try:
        _, first = env.reset()
        steps, done = 0, False
        while not done:
            *_, terminated, truncated, info = env.step(1 if steps == 0 else 0)
            steps += 1
            done = terminated or truncated
        assert terminated and not truncated and steps > 1000  # the whole window, to its settlement
        assert info["episode_pnl"] != 0.0  # the position opened at once was settled
        _, again = env.reset()  # the window cut two minutes in is skipped: the recording starts again
        assert again["market_id"] == first["market_id"] and again["seconds_left"] == first["seconds_left"]
    finally:
        env.close()


def test_bad_arguments_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown asset"):
        UpDownEnv(asset="DOGE")
    with pytest.raises(ValueError, match="needs a recording"):
        UpDownEnv(source="replay")
    with pytest.raises(ValueError, match="unknown feature set"):
        UpDownEnv(feature_set="wide")
